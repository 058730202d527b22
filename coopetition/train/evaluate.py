"""Score a model on the fixed eval sets: every metric averaged per evaluator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from coopetition.faults import fault_point
from coopetition.task.metrics import METRICS, query_metrics
from coopetition.task.sampler import SequenceBatch, gather_features


@dataclass(frozen=True)
class PreparedEvalSet:
    """An eval set with its features gathered once and kept on the model's device."""

    name: str
    batch: SequenceBatch
    exemplars: Tensor

    @classmethod
    def prepare(cls, name: str, batch: SequenceBatch, features: Tensor) -> "PreparedEvalSet":
        batch = batch.to(features.device)
        return cls(name, batch, gather_features(features, batch))


def prepare_eval_sets(sets: dict[str, SequenceBatch], features: Tensor) -> list[PreparedEvalSet]:
    return [PreparedEvalSet.prepare(name, batch, features) for name, batch in sets.items()]


# (exemplars, context_labels, target) -> query logits: a run's model with its interventions
Forward = Callable[[Tensor, Tensor, Tensor], Tensor]


@torch.no_grad()
def per_sequence_metrics(model: nn.Module, eval_set: PreparedEvalSet, batch_size: int,
                         forward: Forward | None = None) -> dict[str, Tensor]:
    """Every metric for every sequence of the set (the reference's ``log.h5`` rows). ``forward`` (default: the
    bare model) is how the run computes logits, e.g. ``coopetition.interventions.Intervened``."""
    forward = forward or (lambda exemplars, labels, target: model(exemplars, labels))
    chunks: dict[str, list[Tensor]] = {m: [] for m in METRICS}
    for start in range(0, eval_set.batch.size, batch_size):
        part = eval_set.batch.slice(start, start + batch_size)
        logits = forward(eval_set.exemplars[start:start + batch_size], part.context_labels, part.target)
        for metric, values in query_metrics(logits, part.target, part.context_labels).items():
            chunks[metric].append(values)
    return {m: torch.cat(v) for m, v in chunks.items()}


@torch.no_grad()
def evaluate(model: nn.Module, eval_sets: list[PreparedEvalSet], batch_size: int,
             forward: Forward | None = None) -> dict[tuple[str, str], float]:
    """``{(evaluator, metric): mean}`` with one device sync for the whole table."""
    was_training = model.training
    model.eval()
    keys, means = [], []
    for index, eval_set in enumerate(eval_sets):
        for metric, values in per_sequence_metrics(model, eval_set, batch_size, forward).items():
            keys.append((eval_set.name, metric))
            means.append(values.mean())
        if index == 0:  # test hook (coopetition/faults.py): the n-th evaluation, one set scored, nothing written
            fault_point("evaluate")
    model.train(was_training)
    return dict(zip(keys, torch.stack(means).tolist()))
