"""Linear probes: multinomial logistic regression, many at once.

All probes that read the same features (one residual-stream site) and all targets share one LBFGS problem: the
objective is the sum over (probe, target) of the mean cross-entropy on the target's training rows plus ``l2`` times
the squared weights (not biases), a sum of independent convex problems, and a few dozen full-batch LBFGS iterations
(``torch.optim.LBFGS``, strong-Wolfe line search) fit every (layer, position, target) probe of a checkpoint together.
Features are standardised on the training rows.

How the objective is evaluated (the fit's whole cost: ~25 evaluations per fit). Weights are stored transposed,
``[probe, target x classes, d+1]``, one block per class count (a 2-way target owns 2 columns, an 8-way one 8), and
the loss and its gradient are written out by hand: ``z = W x`` on the training rows only, a log-softmax per target
over its own classes (reduced over a middle axis, so the row axis stays contiguous), and the gradient
``(softmax - onehot) x`` weighted by each target's training rows, plus ``2 l2 W``. This is the same function, and
its exact gradient, as the padded formulation it replaced (every target padded to the largest class count with
-inf logits, held-out rows in every matmul, ``log_softmax`` over the last axis and autograd): padded columns and
held-out rows only ever contribute exact zeros to the loss, the gradient and LBFGS's dot products. In float64 the
two give identical held-out accuracies on every probe of the benchmark run; in float32 they differ by rounding only,
which 20 unconverged LBFGS iterations amplify where a probe is undetermined (docs/analyze.md, "Probes"). About 5x
faster.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


@dataclass(frozen=True)
class Target:
    """What a probe decodes: ``labels[i]`` in ``[0, n_classes)``, defined where ``valid[i]``."""

    name: str
    labels: Int[Tensor, " n"]
    n_classes: int
    valid: Bool[Tensor, " n"]


def split(n: int, held_out: float, seed: int) -> Bool[Tensor, " n"]:
    """True for training rows (a seeded random ``1 - held_out`` share)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    train = torch.zeros(n, dtype=torch.bool)
    train[order[: n - max(1, round(n * held_out))]] = True
    return train


@dataclass(frozen=True)
class _Block:
    """The targets with ``k`` classes: their indices, per-training-row loss weights ``[target, m]`` (1 / the
    target's training rows where defined, else 0), one-hot labels ``[target, k, m]``, and their weights' slice of the
    flat parameter vector (viewed ``[probe, target * k, d+1]``)."""

    k: int
    members: tuple[int, ...]
    weight: Tensor
    onehot: Tensor
    where: slice


def _blocks(targets: list[Target], train: Tensor, n_probe: int, width: int, dtype: torch.dtype) -> list[_Block]:
    by_k: dict[int, list[int]] = {}
    for index, t in enumerate(targets):
        by_k.setdefault(t.n_classes, []).append(index)
    blocks, size = [], 0
    for k, members in by_k.items():
        labels = torch.stack([targets[i].labels.to(train.device)[train] for i in members])  # [target, m]
        valid = torch.stack([targets[i].valid.to(train.device)[train] for i in members]).to(dtype)
        weight = valid / valid.sum(dim=1, keepdim=True).clamp(min=1)  # mean over each target's training rows
        onehot = torch.zeros(len(members), k, labels.shape[1], dtype=dtype, device=train.device)
        onehot.scatter_(1, labels[:, None], 1.0)
        count = n_probe * len(members) * k * width
        blocks.append(_Block(k, tuple(members), weight, onehot, slice(size, size + count)))
        size += count
    return blocks


def fit_probes(features: Float[Tensor, "probe n d"], targets: list[Target], train: Bool[Tensor, " n"],
               steps: int = 30, l2: float = 1e-3,
               dtype: torch.dtype = torch.float32) -> dict[str, Float[Tensor, "probe 2"]]:
    """Held-out accuracy of every probe: ``{target: [probe, (accuracy, majority-class baseline)]}``, in ``targets``'
    order (see the module docstring for the objective). ``dtype``: of the fit (float64 for checks)."""
    if not targets:
        return {}
    device = features.device
    train = train.to(device)
    x = features.detach().to(dtype)
    mu = x[:, train].mean(dim=1, keepdim=True)
    sd = x[:, train].std(dim=1, keepdim=True).clamp(min=1e-6)
    x = torch.cat([(x - mu) / sd, torch.ones_like(x[..., :1])], dim=-1)  # [probe, n, d+1]
    n_probe, _, width = x.shape
    rows = x[:, train]  # [probe, m, d+1]: the loss reads the training rows only
    columns = rows.transpose(1, 2).contiguous()  # [probe, d+1, m]
    m = rows.shape[1]
    blocks = _blocks(targets, train, n_probe, width, dtype)
    theta = torch.zeros(blocks[-1].where.stop, dtype=dtype, device=device)

    def closure() -> Tensor:
        grad = torch.empty_like(theta)
        loss = theta.new_zeros(())
        for b in blocks:
            t = len(b.members)
            w = theta[b.where].view(n_probe, t * b.k, width)
            z = torch.bmm(w, columns).view(n_probe, t, b.k, m)
            top = z.amax(dim=2, keepdim=True)
            e = (z - top).exp_()
            total = e.sum(dim=2, keepdim=True)
            log_p = (z * b.onehot).sum(dim=2) - (top + total.log())[:, :, 0]  # [probe, target, m]
            bare = w[..., :-1]  # the bias column is not penalised
            loss = loss - (log_p * b.weight).sum() + l2 * bare.pow(2).sum()
            d_z = e.div_(total).sub_(b.onehot).mul_(b.weight[:, None])
            g = torch.bmm(d_z.view(n_probe, t * b.k, m), rows)
            g[..., :-1].add_(bare, alpha=2 * l2)
            grad[b.where] = g.view(-1)
        theta.grad = grad  # a new tensor per call: LBFGS keeps views of earlier gradients
        return loss

    optimizer = torch.optim.LBFGS([theta], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")
    with torch.no_grad():
        optimizer.step(closure)
        found = {}
        held = ~train
        held_x = x[:, held].transpose(1, 2)  # [probe, d+1, held-out rows]
        for b in blocks:
            t = len(b.members)
            z = torch.bmm(theta[b.where].view(n_probe, t * b.k, width), held_x).view(n_probe, t, b.k, -1)
            predicted = z.argmax(dim=2)  # [probe, target, held-out rows]
            for j, index in enumerate(b.members):
                target = targets[index]
                labels, valid = target.labels.to(device), target.valid.to(device)
                test, fit = valid & held, valid & train
                if not test.any() or not fit.any():
                    continue
                acc = (predicted[:, j, valid[held]] == labels[test]).float().mean(dim=1)
                majority = torch.bincount(labels[fit], minlength=target.n_classes).argmax()
                baseline = (labels[test] == majority).float().mean().expand_as(acc)
                found[target.name] = torch.stack([acc, baseline], dim=1).cpu()
    return {t.name: found[t.name] for t in targets if t.name in found}
