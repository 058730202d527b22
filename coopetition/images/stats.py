"""``coopetition bank inspect``: the geometry of a bank that decides the ICL/IWL race, comparable across banks.

ICL needs a query to match its in-context exemplar better than the other classes' exemplars (within-class spread
small against between-class distance); IWL needs each class to be read out by the network's linear paths, which
start with a 64-d embedding. So, on the first ``classes`` classes:

- ``within_var`` / ``between_var``: mean squared distance of an exemplar to its class mean, and of a class mean to
  the grand mean (traces, per dimension); ``between_share`` = between / (between + within).
- ``cos_within`` / ``cos_between``: mean cosine of two raw exemplars of one class / of two classes (sampled pairs).
- ``nearest_class_cos``: per class, the largest cosine between its centred mean and another class's centred mean
  (its nearest sibling), averaged over sampled classes.
- ``readout_2way`` / ``readout_all``: accuracy on held-out exemplars of a ridge-regression linear read-out from a
  seeded random 64-d projection (the width of C25's exemplar embedding), over random class pairs and over all
  ``classes`` at once. Train on the first 3/4 of each class's exemplars, test on the rest.
"""

from __future__ import annotations

import torch
from torch import Tensor

READOUT_DIM = 64
RIDGE = 1e-3
PAIRS = 200
SAMPLED = 2000


def load_for_inspect(source: str, h5_dataset: str, preset: str) -> tuple[Tensor, str]:
    """A bank's features through the one bank loader (the same checks as training), and a label for the table."""
    from coopetition.bank import SYNTHETIC, BankConfig, load_bank

    if source == SYNTHETIC:
        from coopetition.presets import get_preset

        return load_bank(get_preset(preset).bank).features, f"synthetic ({preset})"
    return load_bank(BankConfig(source=source, h5_dataset=h5_dataset)).features, source


def bank_statistics(features: Tensor, classes: int | None = None, seed: int = 0) -> dict[str, float]:
    feats = features[:classes].double() if classes else features.double()
    n_classes, n_exemplars, dim = feats.shape
    gen = torch.Generator().manual_seed(seed)
    means = feats.mean(1)
    within = ((feats - means[:, None]) ** 2).sum(-1).mean().item() / dim
    between = ((means - means.mean(0)) ** 2).sum(-1).mean().item() / dim
    unit = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    stats = {"classes": n_classes, "exemplars": n_exemplars, "dim": dim,
             "within_var": within, "between_var": between, "between_share": between / (between + within + 1e-300),
             "cos_within": _pair_cos(unit, gen, same=True), "cos_between": _pair_cos(unit, gen, same=False),
             "nearest_class_cos": _nearest_class_cos(means, gen)}
    if n_exemplars >= 2:
        stats.update(_readouts(feats, gen))
    return stats


def _pair_cos(unit: Tensor, gen: Tensor, same: bool, n: int = 100_000) -> float:
    n_classes, n_exemplars, _ = unit.shape
    a = torch.randint(n_classes, (n,), generator=gen)
    b = a if same else (a + torch.randint(1, n_classes, (n,), generator=gen)) % n_classes
    i = torch.randint(n_exemplars, (n,), generator=gen)
    j = (i + torch.randint(1, max(n_exemplars, 2), (n,), generator=gen)) % n_exemplars if same else \
        torch.randint(n_exemplars, (n,), generator=gen)
    if same and n_exemplars < 2:
        return float("nan")
    return (unit[a, i] * unit[b, j]).sum(-1).mean().item()


def _nearest_class_cos(means: Tensor, gen: Tensor) -> float:
    centred = means - means.mean(0)
    unit = centred / centred.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    queries = torch.randperm(len(unit), generator=gen)[:SAMPLED]
    best = []
    for chunk in queries.split(256):
        cos = unit[chunk] @ unit.T
        cos[torch.arange(len(chunk)), chunk] = -2.0
        best.append(cos.max(1).values)
    return torch.cat(best).mean().item()


def _readouts(feats: Tensor, gen: Tensor) -> dict[str, float]:
    n_classes, n_exemplars, dim = feats.shape
    projection = torch.randn(dim, READOUT_DIM, generator=gen, dtype=torch.float64) / dim**0.5
    z = feats @ projection
    z = (z - z.mean((0, 1))) / z.std()
    n_train = n_exemplars - max(1, n_exemplars // 4)
    train, test = z[:, :n_train], z[:, n_train:]
    correct = []
    for _ in range(PAIRS):
        pair = torch.randperm(n_classes, generator=gen)[:2]
        correct.append(_ridge_accuracy(train[pair], test[pair]))
    return {"readout_2way": sum(correct) / len(correct), "readout_all": _ridge_accuracy(train, test)}


def _ridge_accuracy(train: Tensor, test: Tensor) -> float:
    """Ridge regression onto one-hot labels (with a bias), argmax on held-out exemplars."""
    k, n_train, d = train.shape
    x = torch.cat([train.reshape(-1, d), torch.ones(k * n_train, 1, dtype=train.dtype)], 1)
    labels = torch.arange(k).repeat_interleave(n_train)
    xty = torch.zeros(d + 1, k, dtype=train.dtype).index_add_(1, labels, x.T)
    weights = torch.linalg.solve(x.T @ x + RIDGE * len(x) * torch.eye(d + 1, dtype=train.dtype), xty)
    xt = test.reshape(-1, d)
    truth = torch.arange(k).repeat_interleave(test.shape[1])
    hits = 0
    for rows, labels_ in zip(xt.split(4096), truth.split(4096)):
        scores = rows @ weights[:-1] + weights[-1]
        hits += (scores.argmax(1) == labels_).sum().item()
    return hits / len(xt)


ROWS = (("classes", "classes", "{:.0f}"), ("exemplars", "exemplars", "{:.0f}"), ("dim", "dim", "{:.0f}"),
        ("within_var", "within-class variance", "{:.4g}"), ("between_var", "between-class variance", "{:.4g}"),
        ("between_share", "between / (between + within)", "{:.3f}"),
        ("cos_within", "mean cosine, same class", "{:.3f}"), ("cos_between", "mean cosine, two classes", "{:.3f}"),
        ("nearest_class_cos", "nearest-sibling cosine (centred means)", "{:.3f}"),
        ("readout_2way", "linear read-out from 64-d, 2-way", "{:.3f}"),
        ("readout_all", "linear read-out from 64-d, all classes", "{:.4f}"))


def format_table(columns: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per statistic, one column per bank."""
    lines = ["| statistic | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for key, name, fmt in ROWS:
        cells = [fmt.format(stats[key]) if key in stats else "" for stats in columns.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
