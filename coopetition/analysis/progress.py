"""Progress measures read from one clean pass (C25 section 6.1, visualize_runs.py), per head.

- ``induction_strength``: attention from the query to label tokens equal to the target minus attention to the
  other label tokens (the reference's correct-minus-incorrect label attention; summed when several labels match,
  which only happens at ctx 8). On Flip data, > 0 is ICL-style (the label paired with the matching exemplar) and
  < 0 CIWL-style; on CIWL data, > 0 means the head finds the query's in-weights label wherever it sits.
- ``prev_token_score``: attention t -> t-1 averaged over positions t >= 1, baseline-corrected as in the reference,
  a - (1 - a) / t (t the 0-indexed query position; the reference's ``(1-a)/(r+1)`` with row r = t-1);
  ``prev_token_score_labels``: the same over label positions only (t odd; the reference's "Average for 1,3").
- ``label_to_prev`` / ``label_to_self``: raw attention from each label token to its exemplar and to itself
  (C25 appendix: layer-0 heads switch from the first, which builds ICL, to the second, which suits CIWL).
- ``dla``: direct logit attribution of the head's output at the query to the correct label: the head output,
  centred and divided by the final LayerNorm scale (``ActivationCache.apply_ln_to_stack``), dotted
  with (u_target - mean u_other) where u are the LN-weight-folded unembedding columns (``folded_unembed``) of the
  target and of the other distinct context labels.
- ``dla`` at layer -1, head -1: the same for the embeddings at the query (the direct in-weights path).
- ``copy_score``: the same readout of the head's value output from each label token (as if it attended there
  fully), own label minus the other context labels, averaged over label tokens: > 0 means the head's OV circuit
  copies the label it attends to (C25's L2 "copier" heads).
The mean attention pattern of every head goes to a separate long table (``attention_rows``). Weights are read from
the network that ran (with a graft, the frozen source's layers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from coopetition.analysis.base import Analysis, Checkpoint
from coopetition.store.run import EvalData
from coopetition.analysis.readout import distinct_mask
from coopetition.model.sites import hook_name

if TYPE_CHECKING:  # TransformerLens is imported on first use (coopetition.model)
    from coopetition.model import ActivationCache, ICLTransformer

MEASURES = ("induction_strength", "prev_token_score", "prev_token_score_labels", "label_to_prev", "label_to_self",
            "dla", "copy_score")


def _unembed_contrast(model: ICLTransformer, data: EvalData) -> tuple[Tensor, Tensor]:
    """Per sequence: LN-folded unembedding columns of every context label [n, ctx, d] and the target's [n, d]."""
    return model.folded_unembed(data.context_labels), model.folded_unembed(data.target)


def _contrast_direction(model: ICLTransformer, data: EvalData) -> Float[Tensor, "n d_model"]:
    """u_target - mean u over the other distinct context labels: what raises the target against the context."""
    ctx_u, target_u = _unembed_contrast(model, data)
    other = (distinct_mask(data.context_labels) & (data.context_labels != data.target[:, None])).float()
    return target_u - (ctx_u * other[..., None]).sum(1) / other.sum(1, keepdim=True).clamp(min=1)


def _centre(x: Tensor) -> Tensor:
    return x - x.mean(dim=-1, keepdim=True)


def head_measures(model: ICLTransformer, data: EvalData,
                  cache: ActivationCache) -> dict[str, Float[Tensor, "layer head"]]:
    """Every measure in ``MEASURES`` as a [layer, head] tensor averaged over the sequences."""
    n_layers, n_heads, n_ctx, device = model.cfg.n_layers, model.cfg.n_heads, data.n_ctx, data.classes.device
    label_pos = torch.arange(n_ctx, device=device) * 2 + 1
    query = 2 * n_ctx
    patterns = torch.stack([cache[hook_name("pattern", l)] for l in range(n_layers)], dim=1)  # b l h q k
    direction = _contrast_direction(model, data)  # [n, d]
    ctx_u, _ = _unembed_contrast(model, data)
    is_target = data.context_labels == data.target[:, None]
    scale = cache[hook_name("ln_final_scale")][:, query]  # [n, 1]

    to_labels = patterns[:, :, :, query][..., label_pos]  # b l h ctx
    sign = is_target.float() * 2 - 1
    out = {"induction_strength": (to_labels * sign[:, None, None]).sum(-1).mean(0)}

    t = torch.arange(1, 2 * n_ctx + 1, device=device)
    prev = patterns[:, :, :, t, t - 1]  # b l h t
    score = prev - (1 - prev) / t.float()
    out["prev_token_score"] = score.mean(dim=(0, 3))
    out["prev_token_score_labels"] = score[..., t % 2 == 1].mean(dim=(0, 3))
    out["label_to_prev"] = patterns[:, :, :, label_pos, label_pos - 1].mean(dim=(0, 3))
    out["label_to_self"] = patterns[:, :, :, label_pos, label_pos].mean(dim=(0, 3))

    # Each head's output at the query (the adapter's z @ W_O), centred and divided by the final LayerNorm's scale there
    # (ActivationCache.apply_ln_to_stack): [(layer head), n, d]. Not stack_head_results: it stores results in the
    # shared cache and logs a line about it, differently on each TransformerLens line.
    outputs = [model.head_outputs(l, cache[hook_name("z", l)][:, query]) for l in range(n_layers)]  # [n, head, d]
    stacked = torch.stack(outputs).transpose(1, 2).flatten(0, 1)  # [(layer head), n, d]
    heads = cache.apply_ln_to_stack(stacked, layer=-1, pos_slice=query)
    out["dla"] = torch.einsum("cnd,nd->cn", heads, direction).mean(1).reshape(n_layers, n_heads)
    copy = []
    for l in range(n_layers):
        v_lab = cache[hook_name("v", l)][:, label_pos]  # [n, ctx, head, d_head]
        v_out = _centre(model.head_outputs(l, v_lab)) / scale[:, None, None]
        logits = torch.einsum("nchd,nkd->nchk", v_out, ctx_u)  # value of label c read against every label k
        same_label = data.context_labels[:, :, None] == data.context_labels[:, None, :]
        others = (~same_label).float()[:, :, None, :]  # [n, ctx, 1, ctx]
        own = logits.diagonal(dim1=1, dim2=3).transpose(1, 2)  # [n, ctx, head]
        contrast = own - (logits * others).sum(-1) / others.sum(-1).clamp(min=1)
        copy.append(contrast.mean(dim=(0, 1)))
    out["copy_score"] = torch.stack(copy)
    return out


def direct_path_dla(model: ICLTransformer, data: EvalData, cache: ActivationCache) -> float:
    """DLA of the embeddings at the query (token + position, i.e. ``blocks.0.hook_resid_pre``): the in-weights
    route from the query exemplar straight to the unembedding, with the same contrast as the heads' ``dla``."""
    query = 2 * data.n_ctx
    direction = _contrast_direction(model, data)
    embedded = cache.apply_ln_to_stack(cache[hook_name("resid_pre", 0)][None, :, query], layer=-1, pos_slice=query)
    return float((embedded[0] * direction).sum(-1).mean())


def progress_rows(model: ICLTransformer, data: EvalData, cache: ActivationCache) -> list[dict]:
    """Rows ``measure, layer, head, value``; the embeddings' direct-path DLA is ``dla`` at layer -1, head -1."""
    rows = [{"measure": "dla", "layer": -1, "head": -1, "value": direct_path_dla(model, data, cache)}]
    for measure, values in head_measures(model, data, cache).items():
        for l in range(values.shape[0]):
            rows += [{"measure": measure, "layer": l, "head": h, "value": float(v)} for h, v in enumerate(values[l])]
    return rows


def attention_rows(model: ICLTransformer, cache: ActivationCache) -> list[dict]:
    """Mean attention pattern per head: ``layer, head, query_pos, key_pos, value`` (causal entries only)."""
    rows = []
    for l in range(model.cfg.n_layers):
        mean = cache[hook_name("pattern", l)].mean(0)  # head q k
        for h in range(mean.shape[0]):
            for q in range(mean.shape[1]):
                rows += [{"layer": l, "head": h, "query_pos": q, "key_pos": k, "value": float(mean[h, q, k])}
                         for k in range(q + 1)]
    return rows


class ProgressAnalysis(Analysis):
    name: ClassVar[str] = "progress"
    title: ClassVar[str] = "Progress measures"
    caption: ClassVar[str] = "Per-head progress measures and mean attention patterns over training."
    tables: ClassVar[dict] = {
        "progress": ("step", "sequences", "evaluator", "measure", "layer", "head", "value"),
        "progress_attention": ("step", "sequences", "evaluator", "layer", "head", "query_pos", "key_pos", "value")}

    def checkpoint_rows(self, checkpoint: Checkpoint) -> dict[str, list[dict]]:
        network = self.context.network
        progress, attention = [], []
        for name in self.context.evaluators:
            data = self.context.data[name]
            _, cache = checkpoint.baseline(data)
            progress += [{"evaluator": name, **r} for r in progress_rows(network, data, cache)]
            attention += [{"evaluator": name, **r} for r in attention_rows(network, cache)]
        return {"progress": progress, "progress_attention": attention}
