"""In-context scores from the logits of a few labels (the context labels and the target).

Interventions multiply the batch by their number of variants, so analyses read out only these labels' logits
(``ICLTransformer.unembed_query(..., labels)``) rather than every class (C25: 12,800); the scores here are exactly
``task.metrics``'s ``in_context_acc`` / ``in_context_prob`` computed from them (``tests/test_analysis_readout.py``).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


def distinct_mask(context_labels: Int[Tensor, "batch ctx"]) -> torch.Tensor:
    """True at the first occurrence of each label in a row (a repeated label is one candidate, as in the metrics)."""
    same = context_labels[:, :, None] == context_labels[:, None, :]
    earlier = torch.ones_like(same[0]).tril(-1).bool()
    return ~(same & earlier).any(dim=-1)


def in_context_scores(logits: Float[Tensor, "*variant batch k"], context_labels: Int[Tensor, "batch ctx"],
                      target: Int[Tensor, " batch"]) -> dict[str, Float[Tensor, "*variant batch"]]:
    """From the logits of the context labels followed by the target's (``readout = [context_labels, target]``):
    ``in_context_acc`` / ``in_context_prob`` exactly as ``task.metrics`` defines them, and ``target_logit_diff``,
    the target's logit minus the mean logit of the other distinct context labels (defined on every evaluator,
    including pure IWL, where the target is absent from the context and in-context accuracy is 0 by definition).

    Ties (a hand-built or fully ablated model) go to the earliest context position, where the reference's argmax
    over all classes takes the lowest class index; both are chance on shuffled contexts.
    """
    n_ctx = context_labels.shape[1]
    context_logits, target_logit = logits[..., :n_ctx], logits[..., n_ctx]
    keep = distinct_mask(context_labels)
    masked = context_logits.masked_fill(~keep, float("-inf"))
    is_target = (context_labels == target[:, None]) & keep
    picked = masked.argmax(dim=-1, keepdim=True)
    acc = is_target.expand_as(masked).gather(-1, picked)[..., 0].float()
    prob = (torch.softmax(masked, dim=-1) * is_target).sum(dim=-1)
    others = (keep & ~is_target).float()
    other_mean = (context_logits * others).sum(-1) / others.sum(-1).clamp(min=1)
    return {"in_context_acc": acc, "in_context_prob": prob, "target_logit_diff": target_logit - other_mean}


def readout_labels(context_labels: Int[Tensor, "batch ctx"], target: Int[Tensor, " batch"]) -> Int[Tensor, "batch k"]:
    """The labels ``in_context_scores`` needs logits for."""
    return torch.cat([context_labels, target[:, None]], dim=1)
