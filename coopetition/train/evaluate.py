"""Score a model on the fixed eval sets: every metric averaged per evaluator.

The sets are ``task.evalset.EvalData`` (the one container analyses use too), gathered onto the model's device once;
logits come from the run's ``Intervened`` forward, the engine's single variant (``interventions/engine.py``), so
an evaluation scores exactly the network that training steps and analyses run."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from coopetition.faults import fault_point
from coopetition.interventions import Intervened
from coopetition.task.evalset import EvalData, gather_eval_sets
from coopetition.task.metrics import METRICS, query_metrics
from coopetition.task.sampler import SequenceBatch


def prepare_eval_sets(sets: dict[str, SequenceBatch], features: Tensor) -> list[EvalData]:
    """The eval sets with their features gathered once onto ``features``' device."""
    return gather_eval_sets(sets, features)


# (exemplars, context_labels, target) -> query logits: a run's model with its interventions
Forward = Callable[[Tensor, Tensor, Tensor], Tensor]


@torch.no_grad()
def per_sequence_metrics(model: nn.Module, eval_set: EvalData, batch_size: int,
                         forward: Forward | None = None) -> dict[str, Tensor]:
    """Every metric for every sequence of the set (the reference's ``log.h5`` rows). ``forward`` (default: the
    model with no interventions) is how the run computes logits: its ``coopetition.interventions.Intervened``."""
    forward = forward or Intervened(model)
    chunks: dict[str, list[Tensor]] = {m: [] for m in METRICS}
    for start in range(0, eval_set.n, batch_size):
        part = eval_set.slice(start, start + batch_size)
        logits = forward(part.exemplars, part.context_labels, part.target)
        for metric, values in query_metrics(logits, part.target, part.context_labels).items():
            chunks[metric].append(values)
    return {m: torch.cat(v) for m, v in chunks.items()}


@torch.no_grad()
def evaluate(model: nn.Module, eval_sets: list[EvalData], batch_size: int,
             forward: Forward | None = None) -> dict[tuple[str, str], float]:
    """``{(evaluator, metric): mean}`` with one device sync for the whole table."""
    was_training = model.training
    model.eval()
    forward = forward or Intervened(model)
    keys, means = [], []
    for index, eval_set in enumerate(eval_sets):
        for metric, values in per_sequence_metrics(model, eval_set, batch_size, forward).items():
            keys.append((eval_set.name, metric))
            means.append(values.mean())
        if index == 0:  # test hook (coopetition/faults.py): the n-th evaluation, one set scored, nothing written
            fault_point("evaluate")
    model.train(was_training)
    return dict(zip(keys, torch.stack(means).tolist()))
