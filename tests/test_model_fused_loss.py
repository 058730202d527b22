"""The fused unembedding + cross-entropy (``model/fused_loss.py``) against the unfused loss: the same value and
the same gradients (float64 to 1e-10, float32 to ~1e-6), blocks of any size; and the rule for when training takes
it (``ICLTransformer.query_loss``, ``Intervened.loss``)."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from coopetition.model import fused_loss
from coopetition.model.fused_loss import unembed_cross_entropy


def _problem(dtype, n=37, d=8, classes=50, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=dtype).requires_grad_()
    W = (torch.randn(d, classes, generator=gen, dtype=dtype) * 2).requires_grad_()
    b = torch.randn(classes, generator=gen, dtype=dtype).requires_grad_()
    target = torch.randint(0, classes, (n,), generator=gen)
    return x, W, b, target


def _loss_and_grads(fn, x, W, b, target, scale=1.0):
    for t in (x, W, b):
        t.grad = None
    loss = fn(x, W, b, target)
    (loss * scale).backward()
    return loss.detach(), x.grad.clone(), W.grad.clone(), b.grad.clone()


def _unfused(x, W, b, target):
    return F.cross_entropy(torch.addmm(b, x, W), target)


@pytest.mark.parametrize("rows", [1, 5, 37, 256])
def test_float64_matches_the_unfused_loss_and_gradients(rows):
    x, W, b, target = _problem(torch.float64)
    want = _loss_and_grads(_unfused, x, W, b, target, scale=3.0)
    got = _loss_and_grads(lambda *a: unembed_cross_entropy(*a, rows=rows), x, W, b, target, scale=3.0)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-10, rtol=0)


def test_known_answer_uniform_logits():
    """Zero weights and bias: every class has logit 0, so the loss is log(C); d loss / d b_U is (1/C - onehot)
    averaged over the batch, and d loss / d x is 0 (W_U = 0)."""
    n, d, classes = 4, 3, 10
    x = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    W = torch.zeros(d, classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 3, 3, 9])
    loss = unembed_cross_entropy(x, W, b, target, rows=3)
    loss.backward()
    assert loss.item() == pytest.approx(torch.log(torch.tensor(10.0, dtype=torch.float64)).item(), abs=1e-14)
    expected_db = torch.full((classes,), 1 / classes, dtype=torch.float64)
    expected_db[0] -= 1 / 4
    expected_db[3] -= 2 / 4
    expected_db[9] -= 1 / 4
    torch.testing.assert_close(b.grad, expected_db, atol=1e-15, rtol=0)
    assert torch.equal(x.grad, torch.zeros_like(x))
    torch.testing.assert_close(W.grad, x.detach().T @ (torch.full((n, classes), 0.1, dtype=torch.float64)
                                                       - F.one_hot(target, classes)) / n, atol=1e-15, rtol=0)


def test_float32_within_rounding_and_stable_for_large_logits():
    x, W, b, target = _problem(torch.float32, n=300, d=64, classes=2000)
    with torch.no_grad():
        W.mul_(20.0)  # logits in the hundreds: a naive exp would overflow
    want = _loss_and_grads(_unfused, x, W, b, target)
    got = _loss_and_grads(unembed_cross_entropy, x, W, b, target)  # 300 rows: two blocks of the default 256
    assert torch.isfinite(got[0])
    torch.testing.assert_close(got[0], want[0], atol=1e-4, rtol=1e-6)
    for g, w in zip(got[1:], want[1:]):
        torch.testing.assert_close(g, w, atol=2e-6, rtol=1e-5)


def test_only_requested_gradients_and_no_grad_mode():
    x, W, b, target = _problem(torch.float64)
    W.requires_grad_(False)
    b.requires_grad_(False)
    unembed_cross_entropy(x, W, b, target).backward()
    assert x.grad is not None and W.grad is None and b.grad is None
    with torch.no_grad():
        loss = unembed_cross_entropy(x, W, b, target)
    torch.testing.assert_close(loss, _unfused(x, W, b, target).detach(), atol=1e-12, rtol=0)
    assert not loss.requires_grad


def _tiny_model(dtype=torch.float64):
    from coopetition.model import build_model
    from coopetition.model.config import ModelConfig

    model = build_model(ModelConfig(n_layers=2, d_model=16, n_heads=2, mlp_ratio=2), input_dim=8, n_labels=40,
                        n_outputs=40, init_seed=3).to(dtype)
    gen = torch.Generator().manual_seed(1)
    exemplars = torch.randn(11, 3, 8, generator=gen, dtype=dtype)
    labels = torch.randint(0, 40, (11, 2), generator=gen)
    target = torch.randint(0, 40, (11,), generator=gen)
    return model, exemplars, labels, target


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture
def calls(monkeypatch):
    """Every call of the fused kernel from the model, counted (the kernel still runs)."""
    found = []
    real = fused_loss.unembed_cross_entropy
    monkeypatch.setattr("coopetition.model.hooked.unembed_cross_entropy",
                        lambda *a, **k: found.append(1) or real(*a, **k))
    return found


def test_query_loss_takes_the_fused_kernel_only_in_fused_training(calls):
    model, exemplars, labels, target = _tiny_model()
    model.train()
    want = _grads(model, F.cross_entropy(model(exemplars, labels), target))
    plain = model.query_loss(exemplars, labels, target)  # kernels not switched on: the plain path
    assert calls == []
    model.fuse_training_kernels()
    got = model.query_loss(exemplars, labels, target)
    assert calls == [1]
    torch.testing.assert_close(got, plain, atol=1e-12, rtol=0)
    # float64: the fused LayerNorm/attention are float32-only, so the whole pass is the hooked one but the loss
    for name, grad in _grads(model, got).items():
        torch.testing.assert_close(grad, want[name], atol=1e-10, rtol=0, msg=name)
    model.eval()
    model.query_loss(exemplars, labels, target)
    assert calls == [1]  # eval mode: plain


def test_intervened_loss_falls_back_to_logits_with_hook_interventions(calls):
    """A hook intervention may read or edit the logits, so the loss is taken from the engine's logits; with none
    (or grafts only) the network's fused loss runs. Both equal cross-entropy of the intervened logits."""
    from coopetition.interventions import intervene

    model, exemplars, labels, target = _tiny_model()
    model.fuse_training_kernels()
    bare = intervene([], model)
    torch.testing.assert_close(bare.loss(exemplars, labels, target),
                               F.cross_entropy(bare(exemplars, labels, target), target), atol=1e-12, rtol=0)
    assert calls == [1]
    ablated = intervene(["ablate:0:1"], model)
    loss = ablated.loss(exemplars, labels, target)
    assert calls == [1]
    torch.testing.assert_close(loss, F.cross_entropy(ablated(exemplars, labels, target), target), atol=0, rtol=0)
    assert not torch.allclose(loss, bare.loss(exemplars, labels, target))  # the ablation changed the loss


def test_training_with_and_without_the_fused_loss_follow_each_other(tmp_path):
    """40 steps of the tiny run, fused loss on and off, from the same weights and batches: losses within 1e-5
    (float32 rounding compounding through Adam), and the off switch and recorded-before runs read as off."""
    from coopetition.store.reader import recorded_defaults
    from coopetition.train.loop import build_training
    from tests.conftest import tiny_run_config

    config = tiny_run_config()
    assert config.train.fused_loss
    losses = {}
    for on in (True, False):
        run = build_training(replace(config, train=replace(config.train, fused_loss=on)), None)
        assert (run.step.loss_forward is not None) is on
        losses[on] = torch.stack([run.step() for _ in range(40)])
    torch.testing.assert_close(losses[True], losses[False], atol=1e-5, rtol=0)
    old = config.to_dict()
    del old["train"]["fused_loss"]
    assert recorded_defaults(old)["train"]["fused_loss"] is False
    assert recorded_defaults(config.to_dict())["train"]["fused_loss"] is True


def test_backward_twice_accumulates_like_autograd():
    """The usual incoming gradient 1.0 hands the stored gradients over unscaled; autograd must still copy them,
    so a second backward through the same graph adds the same amount again."""
    x, W, b, target = _problem(torch.float64)
    loss = unembed_cross_entropy(x, W, b, target, rows=10)
    loss.backward(retain_graph=True)
    once = [t.grad.clone() for t in (x, W, b)]
    loss.backward(retain_graph=True)
    loss.backward()
    for t, g in zip((x, W, b), once):
        torch.testing.assert_close(t.grad, 3 * g, atol=1e-12, rtol=0)
