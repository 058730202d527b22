"""Per-sequence metrics at the query, exactly as the reference logs them (main.py L131-180).

In-context metrics push every label absent from y1..yN to -inf before the argmax/softmax, so with two distinct
context labels chance is 0.5 and a target that is not in context (pure IWL eval) scores 0.

Analyses read the same in-context metrics from the logits of a few labels only (``readout_labels``: the context
labels and the target; ``in_context_scores``): interventions multiply the batch by their number of variants, so
they read out these labels' logits (``ICLTransformer.unembed_query(..., labels)``) rather than every class (C25:
12,800). Both read through the same pieces here (``distinct_mask``, ``_masked_acc_prob``).
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


def distinct_mask(context_labels: Int[Tensor, "batch ctx"]) -> Bool[Tensor, "batch ctx"]:
    """True at the first occurrence of each label in a row (a repeated label is one candidate, as in the metrics)."""
    same = context_labels[:, :, None] == context_labels[:, None, :]
    earlier = torch.ones_like(same[0]).tril(-1).bool()
    return ~(same & earlier).any(dim=-1)


def _masked_acc_prob(logits: Tensor, drop: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Argmax accuracy and softmax probability of column ``target`` with the ``drop`` columns removed (a target
    column past the last counts as absent: 0 and 0). Leading dimensions beyond ``drop``'s broadcast (variants)."""
    masked = logits.masked_fill(drop, float("-inf"))
    acc = (masked.argmax(dim=-1) == target) & ~drop.all(dim=-1)
    probs = torch.softmax(masked, dim=-1)
    return acc.float(), _take(probs, target).nan_to_num(0.0)  # a row with nothing kept has no mass anywhere


def _take(values: Tensor, target: Tensor) -> Tensor:
    """``values[..., target]`` per row, 0 where ``target`` is past the last column."""
    in_range = target < values.shape[-1]
    index = target.clamp(max=values.shape[-1] - 1)[..., None].expand(*values.shape[:-1], 1)
    picked = values.gather(-1, index)[..., 0]
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


def all_finite(values: Tensor) -> bool:
    """Whether every entry is finite, from one min/max pass (``isfinite(x).all()`` makes four full-width passes,
    ~10x slower on CPU): a NaN propagates into both, an infinity is the min or the max."""
    if values.numel() == 0:
        return True
    low, high = torch.aminmax(values)
    return bool(torch.isfinite(low) & torch.isfinite(high))


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
    if n_classes <= context_labels.shape[-1] or not all_finite(logits):
        return reference_query_metrics(logits, target, context_labels)
    valid = target < n_classes  # the reference gives labels past the output classes zero loss
    t = target.clamp(max=n_classes - 1)[:, None]
    logit_t = logits.gather(1, t)[:, 0]
    labels = context_labels.clamp(max=n_classes)  # n_classes: "not a class"
    present = labels < n_classes
    first = distinct_mask(labels) & present  # each distinct in-context class once
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
    max_out, best_out = outside.max(dim=1, keepdim=True)  # the first maximum, as argmax: ~3x faster on CPU
    best_out = best_out[:, 0]
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


def readout_labels(context_labels: Int[Tensor, "batch ctx"], target: Int[Tensor, " batch"]) -> Int[Tensor, "batch k"]:
    """The labels ``in_context_scores`` needs logits for: the context labels, then the target."""
    return torch.cat([context_labels, target[:, None]], dim=1)


def in_context_scores(logits: Float[Tensor, "*variant batch k"], context_labels: Int[Tensor, "batch ctx"],
                      target: Int[Tensor, " batch"]) -> dict[str, Float[Tensor, "*variant batch"]]:
    """From the logits of ``readout_labels`` (the context labels followed by the target's): ``in_context_acc`` /
    ``in_context_prob`` as ``query_metrics`` defines them, and ``target_logit_diff``, the target's logit minus the
    mean logit of the other distinct context labels (defined on every evaluator, including pure IWL, where the
    target is absent from the context and in-context accuracy is 0 by definition).

    The in-context class set is the distinct context positions (``distinct_mask``), and the target's column is its
    first context position (past the last where it is not in context). Ties (a hand-built or fully ablated model)
    go to the earliest context position, where the full-vocabulary argmax takes the lowest class index; both are
    chance on shuffled contexts.
    """
    n_ctx = context_labels.shape[1]
    context_logits, target_logit = logits[..., :n_ctx], logits[..., n_ctx]
    keep = distinct_mask(context_labels)
    is_target = (context_labels == target[:, None]) & keep
    position = torch.where(is_target.any(dim=-1), is_target.int().argmax(dim=-1), n_ctx)
    acc, prob = _masked_acc_prob(context_logits, ~keep, position)
    others = (keep & ~is_target).float()
    other_mean = (context_logits * others).sum(-1) / others.sum(-1).clamp(min=1)
    return {"in_context_acc": acc, "in_context_prob": prob, "target_logit_diff": target_logit - other_mean}
