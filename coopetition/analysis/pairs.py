"""Clean/corrupted pairs for activation patching, built from the evaluators so that positions align.

Each pair changes labels only (exemplar vectors and token positions are identical), and each has two candidate
answers, ``answers[:, 0]`` (the clean run's) and ``answers[:, 1]`` (the corrupted run's):

- ``flip_vs_train`` (from Flip): corrupted = the Flip sequence (query-class exemplar labelled c_d, distractor
  labelled c_q, target c_d); clean = the same sequence unflipped (labels = classes, target c_q), which is exactly a
  Train-eval sequence. Answers (c_q, c_d). ICL answers differently on the two, CIWL does not, so on a CIWL model the
  clean-corrupted logit-difference gap (the normaliser) collapses.
- ``icl_swap`` (from ICL): clean = the 0/1-relabelled sequence; corrupted = the two labels swapped. Answers
  (target, other label). Only the exemplar-label binding differs, so only ICL can tell them apart.
- ``ciwl_vs_iwl`` (from CIWL): clean = the CIWL sequence (one context label overwritten with the query's class
  c_q); corrupted = that label restored to its own class c_a, which is a pure-IWL sequence. Answers (c_q, c_a).
- ``exemplar_swap`` (from ICL; ``circuit`` only): the same contrast as ``icl_swap``, made on the other side of the
  binding: the exemplars (and classes) of the target's context item and the first distractor trade places, labels
  stay. Answers (target, other label). A label-only pair never changes what a previous-token head writes (it copies
  the *exemplar* before each label), so only this pair lets an edge from such a head carry the effect.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from coopetition.store.run import EvalData
from coopetition.task.sequence import DISTRACTOR


@dataclass(frozen=True)
class PatchPair:
    name: str
    clean: EvalData
    corrupt: EvalData
    answers: Int[Tensor, "n 2"]


def _swap(labels: Tensor, a: Tensor, b: Tensor) -> Tensor:
    a, b = a[:, None], b[:, None]
    return torch.where(labels == a, b, torch.where(labels == b, a, labels))


def _distractor_label(data: EvalData) -> Tensor:
    """The label on the first distractor item (the answer a flip/relabel swaps the target with)."""
    ctx_types = data.types[:, :-1]
    first = (ctx_types == DISTRACTOR).float().argmax(dim=1, keepdim=True)
    return data.context_labels.gather(1, first)[:, 0]


def flip_vs_train(flip: EvalData) -> PatchPair:
    query_class, target = flip.classes[:, -1], flip.target
    clean = flip.with_labels("flip_unflipped", _swap(flip.labels, query_class, target))
    return PatchPair("flip_vs_train", clean, flip, torch.stack([query_class, target], dim=1))


def icl_swap(icl: EvalData) -> PatchPair:
    target, other = icl.target, _distractor_label(icl)
    corrupt = icl.with_labels("icl_swapped", _swap(icl.labels, target, other))
    return PatchPair("icl_swap", icl, corrupt, torch.stack([target, other], dim=1))


def ciwl_vs_iwl(ciwl: EvalData) -> PatchPair:
    ctx_classes = ciwl.classes[:, :-1]
    overwritten = (ciwl.context_labels == ciwl.target[:, None]) & (ctx_classes != ciwl.target[:, None])
    slot = overwritten.float().argmax(dim=1, keepdim=True)
    restored = ctx_classes.gather(1, slot)[:, 0]
    labels = ciwl.labels.clone()
    labels[:, :-1] = torch.where(overwritten, ctx_classes, ciwl.context_labels)
    corrupt = ciwl.with_labels("ciwl_restored", labels)
    return PatchPair("ciwl_vs_iwl", ciwl, corrupt, torch.stack([ciwl.target, restored], dim=1))


def exemplar_swap(icl: EvalData) -> PatchPair:
    target, other = icl.target, _distractor_label(icl)
    ctx = icl.context_labels
    mine = (ctx == target[:, None]).float().argmax(dim=1)
    theirs = (icl.types[:, :-1] == DISTRACTOR).float().argmax(dim=1)
    order = torch.arange(icl.classes.shape[1]).expand(icl.n, -1).clone()
    rows = torch.arange(icl.n)
    order[rows, mine], order[rows, theirs] = theirs, mine
    corrupt = EvalData("icl_exemplars_swapped", icl.exemplars[rows[:, None], order],
                       icl.classes.gather(1, order), icl.labels, icl.types.gather(1, order))
    return PatchPair("exemplar_swap", icl, corrupt, torch.stack([target, other], dim=1))


BUILDERS = {"flip": flip_vs_train, "icl": icl_swap, "ciwl": ciwl_vs_iwl}


def build_pairs(data: dict[str, EvalData]) -> list[PatchPair]:
    """Every pair whose source evaluator is among ``data`` (unknown evaluators give no pair)."""
    return [BUILDERS[name](d) for name, d in data.items() if name in BUILDERS]
