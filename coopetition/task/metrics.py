"""Per-sequence metrics at the query, exactly as the reference logs them (main.py L131-180).

In-context metrics push every label absent from y1..yN to -inf before the argmax/softmax, so with two distinct
context labels chance is 0.5 and a target that is not in context (pure IWL eval) scores 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

CPU_BLOCK_ELEMENTS = 1 << 19  # logits per block on CPU (2 MiB of float32 per temporary)
METRICS = ("loss", "acc", "prob", "in_context_acc", "in_context_prob", "out_context_acc", "out_context_prob",
           "use_context_prob")


def context_label_mask(context_labels: Int[Tensor, "batch ctx"], n_classes: int) -> Bool[Tensor, "batch classes"]:
    """True where a class index appears among the sequence's context labels (labels >= n_classes are ignored)."""
    mask = torch.zeros(context_labels.shape[0], n_classes + 1, dtype=torch.bool, device=context_labels.device)
    mask.scatter_(1, context_labels.clamp(max=n_classes), True)
    return mask[:, :n_classes]


def _masked_acc_prob(logits: Tensor, drop: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    masked = logits.masked_fill(drop, float("-inf"))
    acc = (masked.argmax(dim=-1) == target) & ~drop.all(dim=-1)
    probs = torch.softmax(masked, dim=-1)
    return acc.float(), _take(probs, target).nan_to_num(0.0)  # a row with nothing kept has no mass anywhere


def _take(values: Tensor, target: Tensor) -> Tensor:
    in_range = target < values.shape[-1]
    picked = values.gather(1, target.clamp(max=values.shape[-1] - 1)[:, None])[:, 0]
    return torch.where(in_range, picked, torch.zeros_like(picked))


def query_metrics(logits: Float[Tensor, "batch classes"], target: Int[Tensor, " batch"],
                  context_labels: Int[Tensor, "batch ctx"]) -> dict[str, Float[Tensor, " batch"]]:
    """Every metric in ``METRICS`` for each sequence (no reduction: callers average or keep per-sequence).

    On CPU the rows go through in blocks of about ``CPU_BLOCK_ELEMENTS`` logits: every op is row-wise, so the values
    are the same bits, and the full-width temporaries stay in cache instead of being fresh pages each time
    (for C25's 12,800 classes this is ~5x faster)."""
    rows = max(1, CPU_BLOCK_ELEMENTS // max(1, logits.shape[-1]))
    if logits.device.type != "cpu" or logits.shape[0] <= rows:
        return _query_metrics(logits, target, context_labels)
    blocks = [_query_metrics(logits[i:i + rows], target[i:i + rows], context_labels[i:i + rows])
              for i in range(0, logits.shape[0], rows)]
    return {metric: torch.cat([block[metric] for block in blocks]) for metric in METRICS}


def _query_metrics(logits: Tensor, target: Tensor, context_labels: Tensor) -> dict[str, Tensor]:
    """The metrics from five passes over the logits instead of about fifteen: evaluation between checkpoints is
    mostly this function (12,800 classes against a 64-wide model), so its cost is most of an eval's.

    Everything is derived from two log-sum-exps, one over the out-of-context classes (one full-width masked pass)
    and one over the few distinct in-context labels (a gather), combined with ``logaddexp``: stable however
    confident the model is in or out of context. Ties go to the lowest class index, as ``argmax`` does.
    Non-finite logits, or a context that covers every class, take ``reference_query_metrics`` (the direct
    definition, which this equals to float rounding; tests/test_metrics.py compares them)."""
    logits = logits.float()
    n_classes = logits.shape[-1]
    if n_classes <= context_labels.shape[-1] or not torch.isfinite(logits).all():
        return reference_query_metrics(logits, target, context_labels)
    valid = target < n_classes  # the reference gives labels past the output classes zero loss
    t = target.clamp(max=n_classes - 1)[:, None]
    logit_t = logits.gather(1, t)[:, 0]
    labels = context_labels.clamp(max=n_classes)  # n_classes: "not a class"
    present = labels < n_classes
    first = present.clone()  # each distinct in-context class once
    for j in range(1, labels.shape[1]):
        first[:, j] &= ~(labels[:, j:j + 1] == labels[:, :j]).any(dim=1)
    target_in = ((labels == target[:, None]) & present).any(dim=1)

    # in context: a handful of logits per row
    ctx_logits = torch.where(first, logits.gather(1, labels.clamp(max=n_classes - 1)), float("-inf"))
    lse_in = torch.logsumexp(ctx_logits, dim=1)  # -inf where no label is in context
    max_in = ctx_logits.max(dim=1).values
    best_in = torch.where(first & (ctx_logits == max_in[:, None]), labels, n_classes).min(dim=1).values
    has_in = first.any(dim=1)

    # out of context: the one full-width pass (mask, argmax, exp, sum)
    # every entry of a row writes the same kind of value: -inf onto an in-context class (a label past the outputs
    # points at the row's first in-context class), or, in a row with none, logit 0 back onto class 0
    first_label = torch.where(has_in, labels.gather(1, first.int().argmax(dim=1, keepdim=True))[:, 0], 0)
    index = torch.where(present, labels, first_label[:, None])
    outside = logits.clone()
    outside.scatter_(1, index, torch.where(has_in[:, None], float("-inf"), logits[:, :1]).expand_as(index))
    best_out = outside.argmax(dim=1)
    max_out = outside.gather(1, best_out[:, None])
    lse_out = max_out[:, 0] + outside.sub_(max_out).exp_().sum(dim=1).log()

    lse = torch.logaddexp(lse_out, lse_in)
    best = torch.where(max_out[:, 0] > max_in, best_out,
                       torch.where(max_in > max_out[:, 0], best_in, torch.minimum(best_out, best_in)))
    zero = torch.zeros_like(logit_t)
    out_of_context = valid & ~target_in
    return {
        "loss": torch.where(valid, lse - logit_t, zero),
        "acc": (best == target).float(),
        "prob": torch.where(valid, (logit_t - lse).exp(), zero),
        "in_context_acc": (has_in & (best_in == target)).float(),
        "in_context_prob": torch.where(target_in, (logit_t - lse_in).exp(), zero),
        "out_context_acc": (out_of_context & (best_out == target)).float(),
        "out_context_prob": torch.where(out_of_context, (logit_t - lse_out).exp(), zero),
        "use_context_prob": (lse_in - lse).exp(),
    }


def reference_query_metrics(logits: Tensor, target: Tensor, context_labels: Tensor) -> dict[str, Tensor]:
    """The metrics written as their definitions, one full-width softmax per metric family: the oracle the fast
    path is tested against, and what it falls back to for non-finite logits."""
    logits = logits.float()
    n_classes = logits.shape[-1]
    in_context = context_label_mask(context_labels, n_classes)
    valid = target < n_classes
    log_probs = torch.log_softmax(logits, dim=-1)
    loss = -_take(log_probs, target) * valid
    probs = log_probs.exp()
    in_acc, in_prob = _masked_acc_prob(logits, ~in_context, target)
    out_acc, out_prob = _masked_acc_prob(logits, in_context, target)
    return {
        "loss": loss,
        "acc": (logits.argmax(dim=-1) == target).float(),
        "prob": _take(probs, target),
        "in_context_acc": in_acc,
        "in_context_prob": in_prob,
        "out_context_acc": out_acc,
        "out_context_prob": out_prob,
        "use_context_prob": (probs * in_context).sum(dim=-1),
    }


def query_loss(logits: Float[Tensor, "batch classes"], target: Int[Tensor, " batch"],
               reduction: str = "mean") -> Tensor:
    """The training loss: mean cross-entropy at the query (``reduction="none"``: each sequence's)."""
    return F.cross_entropy(logits, target, reduction=reduction)
