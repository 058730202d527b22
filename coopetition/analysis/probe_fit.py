"""Linear probes: multinomial logistic regression, many at once.

All probes that read the same features (one residual-stream site) and all targets share one LBFGS problem: the
weights are ``[probe, d+1, targets x classes]`` and each target owns a block of columns with its own softmax,
so the objective is a sum of independent convex problems and a few dozen full-batch LBFGS iterations fit every
(layer, position, target) probe of a checkpoint together. Features are standardised on the training rows.
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


def fit_probes(features: Float[Tensor, "probe n d"], targets: list[Target], train: Bool[Tensor, " n"],
               steps: int = 30, l2: float = 1e-3) -> dict[str, Float[Tensor, "probe 2"]]:
    """Held-out accuracy of every probe: ``{target: [probe, (accuracy, majority-class baseline)]}``.

    Each target gets a block of ``max classes`` columns (unused ones masked to -inf), so all targets share one
    matmul and one log-softmax; the loss is the sum over probes and targets of the mean cross-entropy on the
    training rows where the target is defined, plus ``l2`` times the squared weights (not biases).
    """
    device = features.device
    train = train.to(device)
    x = features.detach().float()
    mu = x[:, train].mean(dim=1, keepdim=True)
    sd = x[:, train].std(dim=1, keepdim=True).clamp(min=1e-6)
    x = torch.cat([(x - mu) / sd, torch.ones_like(x[..., :1])], dim=-1)
    n_probe, n, width = x.shape
    n_target, n_class = len(targets), max(t.n_classes for t in targets)
    labels = torch.stack([t.labels.to(device) for t in targets], dim=1)  # [n, target]
    valid = torch.stack([t.valid.to(device) for t in targets], dim=1)
    unused = torch.arange(n_class, device=device)[None, :] >= torch.tensor([t.n_classes for t in targets],
                                                                            device=device)[:, None]
    fit_rows = (valid & train[:, None]).float()
    fit_rows = fit_rows / fit_rows.sum(dim=0).clamp(min=1)  # mean over each target's training rows
    weights = torch.zeros(n_probe, width, n_target * n_class, device=device, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], lr=1.0, max_iter=steps, history_size=20,
                                  line_search_fn="strong_wolfe")

    def logits() -> Tensor:
        out = (x @ weights).view(n_probe, n, n_target, n_class)
        return out.masked_fill(unused, float("-inf"))

    def closure() -> Tensor:
        optimizer.zero_grad()
        log_p = torch.log_softmax(logits(), dim=-1).gather(-1, labels[None, :, :, None].expand(n_probe, -1, -1, 1))
        loss = -(log_p[..., 0] * fit_rows).sum() + l2 * weights[:, :-1].pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    out = {}
    with torch.no_grad():
        correct = logits().argmax(dim=-1) == labels  # [probe, n, target]
        for index, t in enumerate(targets):
            test = valid[:, index] & ~train
            fit = valid[:, index] & train
            if not test.any() or not fit.any():
                continue
            acc = correct[:, test, index].float().mean(dim=1)
            majority = torch.bincount(labels[fit, index], minlength=t.n_classes).argmax()
            baseline = (labels[test, index] == majority).float().mean().expand_as(acc)
            out[t.name] = torch.stack([acc, baseline], dim=1).cpu()
    return out
