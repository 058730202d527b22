"""The closed-form losses and gradients of coopetition.toy.model against the reference's dense definitions."""

import dataclasses

import pytest
import torch

from coopetition.toy import C25, IH24, ToyConfig
from coopetition.toy.model import evaluate, loss_1_off, vector_measures
from coopetition.toy.solve import build_problem

F64 = torch.float64


def dense_losses(x, problem, dims):
    """The reference's definitions written out on full outer-product tensors (means over all entries)."""
    totals, l1s = [], []
    for r, (d_a, d_b, d_c, *rest) in enumerate(dims):
        a, b, c = x[r, 0, :d_a], x[r, 1, :d_b], x[r, 2, :d_c]
        ta, tb, tc = (problem.targets[r, i, :d] for i, d in enumerate((d_a, d_b, d_c)))
        l1 = 0.5 * (torch.einsum("i,j,k->ijk", ta, tb, tc) - torch.einsum("i,j,k->ijk", a, b, c)).square().mean()
        l1s.append(l1)
        if not rest:
            totals.append(l1)
            continue
        d, td = x[r, 3, : rest[0]], problem.targets[r, 3, : rest[0]]
        l2 = 0.5 * (torch.einsum("l,j,k->ljk", td, tb, tc) - torch.einsum("l,j,k->ljk", d, b, c)).square().mean()
        comp = 0.5 * torch.outer(a, d).square().mean()
        mu1, mu2 = problem.mu[r]
        totals.append((l1 + mu1) * (l2 + mu2) + problem.alpha[r] * comp)
    return torch.stack(totals), torch.stack(l1s)


def mixed_c25_batch():
    """Rows with different sizes (so padding is exercised), loss weights and a clamp."""
    cfgs = [ToyConfig(dims=(3, 4, 5, 7), alpha=0.3, mu1=0.2, mu2=0.05, seeds=(0, 1)),
            ToyConfig(dims=(6, 2, 3, 4), alpha=0.0, mu1=0.0, mu2=0.4, seeds=(5,), clamp=(("b", 1),))]
    return cfgs, [c.dims for c in cfgs for _ in c.seeds]


def test_c25_gradient_matches_autograd_of_dense_loss():
    cfgs, dims = mixed_c25_batch()
    problem, x, _ = build_problem(cfgs)
    x = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=F64) * problem.free
    ev = evaluate(problem, x)
    xr = x.clone().requires_grad_(True)
    total, l1 = dense_losses(xr, problem, dims)
    torch.testing.assert_close(ev.loss_total, total.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ev.loss_1, l1.detach(), rtol=1e-10, atol=1e-12)
    (grad,) = torch.autograd.grad(total.sum(), xr)
    torch.testing.assert_close(ev.grad, grad, rtol=1e-9, atol=1e-12)
    # Padding coordinates (beyond each row's size) get exactly zero gradient, so they never move.
    assert ev.grad[0, 0, 3:].abs().max() == 0 and ev.grad[2, 1, 2:].abs().max() == 0


def test_ih24_gradient_matches_autograd_of_dense_loss():
    cfg = dataclasses.replace(IH24, dims=(4, 6, 3), seeds=(1, 2, 3))
    problem, x, _ = build_problem([cfg])
    ev = evaluate(problem, x)
    xr = x.clone().requires_grad_(True)
    total, _ = dense_losses(xr, problem, [cfg.dims] * 3)
    (grad,) = torch.autograd.grad(total.sum(), xr)
    torch.testing.assert_close(ev.loss_total, total.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ev.grad, grad, rtol=1e-9, atol=1e-12)
    assert torch.all(ev.loss_2 == 0) and torch.all(ev.competition == 0)


def test_gradient_matches_central_finite_differences():
    cfgs, _ = mixed_c25_batch()
    problem, x, _ = build_problem(cfgs)
    grad = evaluate(problem, x).grad
    h = 1e-6
    for r, v, i in [(0, 0, 1), (0, 3, 6), (1, 1, 2), (2, 0, 5), (2, 2, 0), (2, 3, 3)]:
        step = torch.zeros_like(x)
        step[r, v, i] = h
        fd = (evaluate(problem, x + step).loss_total[r] - evaluate(problem, x - step).loss_total[r]) / (2 * h)
        assert fd.item() == pytest.approx(grad[r, v, i].item(), rel=1e-6, abs=1e-9)


def test_at_the_targets_losses_and_gradient_vanish():
    """x = x*: L1 = L2 = 0, so the total is mu1 mu2 + alpha C; with alpha = 0 the gradient is exactly zero."""
    problem, _, _ = build_problem([dataclasses.replace(C25, alpha=0.0, mu1=0.1, mu2=0.2, seeds=(0, 1))])
    ev = evaluate(problem, problem.targets.clone())
    assert torch.all(ev.loss == 0)
    torch.testing.assert_close(ev.loss_total, torch.full((2,), 0.1 * 0.2, dtype=F64))
    assert ev.grad.abs().max() < 1e-15
    problem3, _, _ = build_problem([IH24])
    ev3 = evaluate(problem3, problem3.targets.clone())
    assert ev3.loss_total.item() == 0 and ev3.grad.abs().max() == 0


def test_sign_flips_that_keep_the_product_are_also_zero_loss():
    """(a, b, c) -> (-a, -b, c) leaves a_i b_j c_k unchanged: a symmetry of L1 the measures must respect."""
    problem, _, _ = build_problem([IH24])
    x = problem.targets.clone()
    x[:, :2] *= -1
    ev = evaluate(problem, x)
    assert ev.loss_total.item() == 0
    m = vector_measures(problem, x, ev.grad, ("a", "b", "c"))
    assert m["one_minus_cos2_a"].item() == 0 and m["loss_1_bc_at_target"].item() == pytest.approx(0, abs=1e-15)
    assert m["dist_a"].item() == pytest.approx(2 * problem.targets[0, 0].norm().item())


def test_vector_measures_known_values():
    problem, _, _ = build_problem([dataclasses.replace(C25, dims=(2, 2, 2, 2), seeds=(0,))])
    t = problem.targets
    x = torch.stack([3 * t[:, 0], torch.stack([-t[:, 1, 1], t[:, 1, 0]], -1), t[:, 2], torch.zeros_like(t[:, 3])], 1)
    m = vector_measures(problem, x, evaluate(problem, x).grad, ("a", "b", "c", "d"))
    assert m["one_minus_cos2_a"].item() == pytest.approx(0, abs=1e-15)  # parallel
    assert m["one_minus_cos2_b"].item() == pytest.approx(1)  # orthogonal
    assert m["norm_a"].item() == pytest.approx(3 * t[0, 0].norm().item())
    assert m["one_minus_cos2_d"].item() == 1 and m["norm_d"].item() == 0


def test_loss_1_off_is_l1_with_a_at_zero():
    problem, x, _ = build_problem([dataclasses.replace(C25, seeds=(0, 1, 2))])
    x[:, 0] = 0
    torch.testing.assert_close(loss_1_off(problem), evaluate(problem, x).loss_1)
