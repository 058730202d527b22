"""``EvalData``: the one container for an evaluator's sequences as the model reads them.

Training's evaluation, the ``Run`` handle and every analysis hold an evaluator's sequences in this one type: the
index tables of a ``SequenceBatch`` with the exemplar vectors gathered from the bank once (``from_batch``), on the
device the model runs on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from coopetition.task.sampler import SequenceBatch, gather_features

if TYPE_CHECKING:  # torch is imported where a tensor is made (train's parser runs without it)
    from jaxtyping import Float, Int
    from torch import Tensor


@dataclass(frozen=True)
class EvalData:
    """``n`` sequences of one evaluator (item N is the query) with their exemplar vectors: what the model reads.

    The model takes features and labels, not tokens: ``exemplars`` ``[n, items, dim]`` and ``context_labels``
    ``[n, items - 1]``; ``target`` is the query's correct label."""

    name: str
    exemplars: Float[Tensor, "n item dim"]
    classes: Int[Tensor, "n item"]
    labels: Int[Tensor, "n item"]
    types: Int[Tensor, "n item"]

    @classmethod
    def from_batch(cls, name: str, batch: SequenceBatch, features: Tensor) -> "EvalData":
        """Gather ``batch``'s exemplar vectors from ``features`` (the bank), on the features' device."""
        batch = batch.to(features.device)
        return cls(name, gather_features(features, batch), batch.classes, batch.labels, batch.types)

    @property
    def n(self) -> int:
        return self.classes.shape[0]

    @property
    def n_ctx(self) -> int:
        return self.classes.shape[1] - 1

    @property
    def context_labels(self) -> Int[Tensor, "n ctx"]:
        return self.labels[:, :-1]

    @property
    def target(self) -> Int[Tensor, " n"]:
        return self.labels[:, -1]

    def head(self, n: int) -> "EvalData":
        return self.slice(0, n)

    def slice(self, start: int, stop: int) -> "EvalData":
        """Sequences ``start .. stop - 1`` (views, no copy): evaluation runs a set in batches."""
        return EvalData(self.name, self.exemplars[start:stop], self.classes[start:stop], self.labels[start:stop],
                        self.types[start:stop])

    def with_labels(self, name: str, labels: Int[Tensor, "n item"]) -> "EvalData":
        return EvalData(name, self.exemplars, self.classes, labels, self.types)


def gather_eval_sets(sets: dict[str, SequenceBatch], features: Tensor) -> list[EvalData]:
    """Every eval set with its features gathered once onto ``features``' device (training evaluates these)."""
    return [EvalData.from_batch(name, batch, features) for name, batch in sets.items()]
