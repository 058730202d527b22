"""Vectorised, seeded sampling of whole batches of sequences (class, exemplar and label indices).

Everything is drawn with tensor ops from an explicit ``torch.Generator``; the bank is indexed only at the end
(``gather_features``), as in the reference, so eval sets can be stored as small integer tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from coopetition.task.label_pairs import draw_pairs
from coopetition.task.sequence import BURSTY, DISTRACTOR, OTHER, QUERY, SequenceSpec

if TYPE_CHECKING:
    import torch
    from jaxtyping import Float, Int
    from torch import Tensor


@dataclass(frozen=True)
class SequenceBatch:
    """Index tables for a batch of ``N+1``-item sequences; item ``N`` (the last) is the query.

    ``labels[:, -1]`` is the target; ``labels[:, :-1]`` are the in-context labels y1..yN.
    """

    classes: Int[Tensor, "batch item"]
    exemplars: Int[Tensor, "batch item"]
    labels: Int[Tensor, "batch item"]
    types: Int[Tensor, "batch item"]

    FIELDS = ("classes", "exemplars", "labels", "types")

    @property
    def size(self) -> int:
        return self.classes.shape[0]

    @property
    def context_labels(self) -> Int[Tensor, "batch ctx"]:
        return self.labels[:, :-1]

    @property
    def target(self) -> Int[Tensor, " batch"]:
        return self.labels[:, -1]

    def to(self, device: torch.device | str) -> "SequenceBatch":
        return SequenceBatch(*(getattr(self, f).to(device) for f in self.FIELDS))

    def slice(self, start: int, stop: int) -> "SequenceBatch":
        return SequenceBatch(*(getattr(self, f)[start:stop] for f in self.FIELDS))

    @staticmethod
    def cat(batches: list["SequenceBatch"]) -> "SequenceBatch":
        import torch
        return SequenceBatch(*(torch.cat([getattr(b, f) for b in batches]) for f in SequenceBatch.FIELDS))


@dataclass(frozen=True)
class ClassPool:
    """The classes and exemplars a sampler may draw from: ``[lo, hi)`` ranges plus optional class weights."""

    class_lo: int
    class_hi: int
    exemplar_lo: int
    exemplar_hi: int
    class_weights: Float[Tensor, " classes"] | None = None  # None = uniform (evaluators always are)

    @property
    def n_classes(self) -> int:
        return self.class_hi - self.class_lo


def zipf_weights(n_classes: int, alpha: float) -> Tensor | None:
    """p(k) proportional to (k+1)^-alpha; ``None`` (uniform) for alpha 0."""
    import torch
    if alpha == 0:
        return None
    return torch.arange(1, n_classes + 1, dtype=torch.float64).pow(-alpha).float()


def _draw_classes(pool: ClassPool, n: int, k: int, exclude: Tensor | None, replace: bool,
                  gen: torch.Generator, device: torch.device) -> Tensor:
    """``[n, k]`` local class indices from the pool's distribution with each row's ``exclude`` removed."""
    import torch
    if pool.class_weights is None:
        if exclude is None and replace:
            return torch.randint(pool.n_classes, (n, k), generator=gen, device=device)
        if exclude is not None and exclude.shape[1] == 1 and k == 1:  # fast path: uniform, skip one class
            draw = torch.randint(pool.n_classes - 1, (n, 1), generator=gen, device=device)
            return draw + (draw >= exclude).long()
    if pool.class_weights is None:
        weights = torch.ones(n, pool.n_classes, device=device)
    else:
        weights = pool.class_weights.to(device).expand(n, -1).clone()
    if exclude is not None:
        weights.scatter_(1, exclude, 0.0)
    return torch.multinomial(weights, k, replacement=replace, generator=gen)


def sample_sequences(spec: SequenceSpec, pool: ClassPool, n: int, gen: torch.Generator,
                     device: torch.device | str = "cpu") -> SequenceBatch:
    """Draw ``n`` sequences of ``spec`` from ``pool`` (see ``SequenceSpec`` for the semantics)."""
    import torch
    device = torch.device(device)
    n_ctx, b, n_dis, n_rest = spec.context_len, spec.burstiness, spec.n_distractor_items, spec.n_rest
    rows = torch.arange(n, device=device)

    query = _draw_classes(pool, n, 1, None, True, gen, device)  # [n, 1]
    parts, types = [query.expand(n, b)], [BURSTY] * b
    exclude = query
    if n_dis:
        distractor = _draw_classes(pool, n, 1, query, False, gen, device)
        parts.append(distractor.expand(n, n_dis))
        types += [DISTRACTOR] * n_dis
        exclude = torch.cat([query, distractor], dim=1)
    else:
        distractor = None
    if n_rest:
        avoid = exclude if (spec.no_support or spec.unique_rest) else None
        parts.append(_draw_classes(pool, n, n_rest, avoid, not spec.unique_rest, gen, device))
        types += [OTHER] * n_rest
    context = torch.cat(parts, dim=1)
    context_types = torch.tensor(types, device=device).expand(n, n_ctx)

    order = torch.rand(n, n_ctx, generator=gen, device=device).argsort(dim=1)
    context = context.gather(1, order)
    context_types = context_types.gather(1, order)

    classes = torch.cat([context, query], dim=1) + pool.class_lo
    item_types = torch.cat([context_types, torch.full((n, 1), QUERY, device=device)], dim=1)

    exemplars = torch.randint(pool.exemplar_lo, pool.exemplar_hi, (n, n_ctx + 1), generator=gen, device=device)
    if spec.match_exemplars:
        shared = torch.randint(pool.exemplar_lo, pool.exemplar_hi, (n, 2), generator=gen, device=device)
        is_query_class = (item_types == BURSTY) | (item_types == QUERY)
        exemplars = torch.where(is_query_class, shared[:, :1], exemplars)
        exemplars = torch.where(item_types == DISTRACTOR, shared[:, 1:], exemplars)

    labels = classes.clone()
    is_bursty, is_dis = item_types == BURSTY, item_types == DISTRACTOR
    if spec.assign_query_label_random:
        slot = torch.randint(n_ctx, (n,), generator=gen, device=device)
        labels[rows, slot] = classes[:, -1]
    if spec.relabel in ("fewshot", "01"):
        table = spec.label_pairs(device)
        if table is not None:  # a pair from the spec's part of the split (IH24), in random order
            first, second = draw_pairs(table, n, gen, device)
        else:  # a uniformly random ordered pair of distinct labels = a uniform unordered pair in random order
            n_labels = 2 if spec.relabel == "01" else spec.fewshot_labels
            first = torch.randint(n_labels, (n, 1), generator=gen, device=device)
            second = torch.randint(n_labels - 1, (n, 1), generator=gen, device=device)
            second = second + (second >= first).long()
        labels = torch.where(is_bursty | (item_types == QUERY), first, labels)
        labels = torch.where(is_dis, second, labels)
    elif spec.relabel == "flip":
        q_label = classes[:, -1:]
        d_label = distractor + pool.class_lo
        labels = torch.where(is_bursty | (item_types == QUERY), d_label, labels)
        labels = torch.where(is_dis, q_label, labels)
    return SequenceBatch(classes, exemplars, labels, item_types)


def gather_features(features: Float[Tensor, "classes exemplars dim"],
                    batch: SequenceBatch) -> Float[Tensor, "batch item dim"]:
    """Look the batch's (class, exemplar) pairs up in the bank (kept on the same device as the batch)."""
    return features[batch.classes, batch.exemplars]


def sample_mixture(specs: list[SequenceSpec], weights: list[float], pool: ClassPool, n: int,
                   gen: torch.Generator, device: torch.device | str = "cpu") -> SequenceBatch:
    """Each sequence comes from one spec chosen with probability ``weights`` (Chan et al.'s p(bursty) mixtures)."""
    import torch
    if len(specs) == 1:
        return sample_sequences(specs[0], pool, n, gen, device)
    probs = torch.tensor(weights, dtype=torch.float, device=gen.device)  # multinomial needs gen's device
    choice = torch.multinomial(probs, n, replacement=True, generator=gen)
    counts = torch.bincount(choice, minlength=len(specs)).tolist()  # the one host sync, for mixtures only
    parts = [sample_sequences(s, pool, c, gen, device) for s, c in zip(specs, counts) if c]
    return SequenceBatch.cat(parts)
