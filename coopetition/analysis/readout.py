"""Cheap reads of a model's answer: the forward pass up to the final LayerNorm, then logits for a few labels only.

Interventions multiply the batch by the number of variants (heads x methods, positions x layers ...), and the full
unembedding (C25: 12,800 classes) would dominate their cost, while every analysis metric needs the logits of the
context labels only (in-context accuracy is an argmax over them; patching compares two labels). This module is the
one place that reproduces ``ICLTransformer.forward`` step by step (TransformerLens hooks installed on the model
apply as usual); ``tests/test_analysis_readout.py`` checks it against the model's own logits.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from coopetition.model import ICLTransformer


def query_normalized(model: ICLTransformer, exemplars: Float[Tensor, "batch item dim"],
                     context_labels: Int[Tensor, "batch ctx"]) -> Float[Tensor, "batch d_model"]:
    """The final-LayerNorm output at the query position (what the unembedding reads)."""
    residual = model.hook_embed(model.embed(exemplars, context_labels))
    if model.cfg.positional_embedding_type != "rotary":
        n_pos = residual.shape[1]
        residual = residual + model.hook_pos_embed(model.pos_embed.W_pos[:n_pos].expand_as(residual))
    return query_normalized_from(model, residual, 0)


def query_normalized_from(model: ICLTransformer, residual: Float[Tensor, "batch pos d_model"],
                          start_layer: int) -> Float[Tensor, "batch d_model"]:
    """The same from the residual stream entering block ``start_layer`` (its ``hook_resid_pre`` still fires)."""
    residual = super(ICLTransformer, model).forward(residual, start_at_layer=start_layer,
                                                    stop_at_layer=model.cfg.n_layers)
    return model.ln_final(residual)[:, -1]


def label_logits(model: ICLTransformer, normalized: Float[Tensor, "batch d_model"],
                 labels: Int[Tensor, "batch k"]) -> Float[Tensor, "batch k"]:
    """Logits of the given labels only (labels past the output layer read as the last class; callers avoid them)."""
    labels = labels.clamp(max=model.n_outputs - 1)
    columns = model.unembed.W_U.T[labels]  # [batch, k, d_model]
    return torch.einsum("bd,bkd->bk", normalized, columns) + model.unembed.b_U[labels]


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
