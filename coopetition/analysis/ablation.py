"""Head, layer and embedding ablations (C25 section 5.3), every one a ``Variant`` of one batched pass.

Units and methods (``unit`` / ``method`` columns of ``ablation.csv``):

- ``L{l}H{h}`` (one head), ``L{l}`` (all heads of layer l), ``all_heads``, each with
  ``zero`` (the head writes nothing: its ``hook_z`` is 0, the same as the reference's zeroed values since attention
  biases are 0), ``mean`` (its output replaced by the eval-set mean per position), ``resample`` (by the output on
  another sequence of the set, one fixed permutation), ``zero_keep_patterns`` (zero, with every layer's attention
  pattern clamped to the clean pass: only value/direct paths of the ablation count) and ``zero_keep_values``
  (zero, with every layer's values clamped to the clean pass: only query/key paths and the direct path count).
- ``qkv_composition``: layer 0 zero-ablated while layer 1's queries, keys and values are all clamped to the clean
  pass (``recompute_none``: what layer 0 adds directly), or all but one (``recompute_q`` / ``_k`` / ``_v``: how much
  of layer 0's effect reaches layer 1 through Q-, K- or V-composition), or none (``recompute_all`` = ``L0`` zero).
  Later layers (a deeper model) run normally.
- ``token_embed``: the token (exemplar and label) embeddings zeroed, positions kept; ``zero`` alone, and
  ``zero_keep_patterns_values`` (all patterns and values clamped), which removes only the direct
  embedding-to-unembedding path (the reference's 96.7 % experiment).

Reported: ``in_context_acc``, ``in_context_prob`` and ``target_logit_diff`` (see ``readout.in_context_scores``)
averaged over the sequences, and ``delta`` from the clean pass.
"""

from __future__ import annotations

import torch

from coopetition.analysis.edits import Edit, Variant, run_variants
from coopetition.analysis.loading import EvalData
from coopetition.analysis.readout import in_context_scores, readout_labels
from coopetition.model import ICLTransformer
from coopetition.model.hooked import ActivationCache

HEAD_METHODS = ("zero", "mean", "resample", "zero_keep_patterns", "zero_keep_values")
QKV_UNITS = ("recompute_none", "recompute_q", "recompute_k", "recompute_v", "recompute_all")
METRICS = ("in_context_acc", "in_context_prob", "target_logit_diff")


def _clamp_all(cache: ActivationCache, n_layers: int, what: str) -> list[Edit]:
    return [Edit(f"blocks.{l}.attn.hook_{what}", cache[f"blocks.{l}.attn.hook_{what}"], clamp=True)
            for l in range(n_layers)]


def _ablate(cache: ActivationCache, layer: int, heads: int | slice, method: str, perm: torch.Tensor) -> Edit:
    name = f"blocks.{layer}.attn.hook_z"
    z = cache[name]
    source = {"mean": z.mean(0, keepdim=True), "resample": z[perm]}.get(method, torch.zeros_like(z[:1]))
    return Edit(name, source, (slice(None), heads))


def _keep(cache: ActivationCache, n_layers: int, method: str) -> list[Edit]:
    what = {"zero_keep_patterns": "pattern", "zero_keep_values": "v"}.get(method)
    return _clamp_all(cache, n_layers, what) if what else []


def _keep_is_moot(layers: set[int], n_layers: int) -> bool:
    """Clamping patterns or values only changes layers that compute after the ablated ones. A unit that reaches the
    last layer (a last-layer head or layer, ``all_heads``) leaves nothing downstream, so "keep" equals plain zero."""
    return max(layers) == n_layers - 1


def ablation_variants(cache: ActivationCache, n_layers: int, n_heads: int,
                      perm: torch.Tensor) -> tuple[list[Variant], dict[int, int]]:
    """The variants to run, and ``aliases``: variant index -> index of an identical variant (not run again)."""
    units: list[tuple[str, list[tuple[int, int | slice]]]] = [
        (f"L{l}H{h}", [(l, h)]) for l in range(n_layers) for h in range(n_heads)]
    units += [(f"L{l}", [(l, slice(None))]) for l in range(n_layers)]
    units += [("all_heads", [(l, slice(None)) for l in range(n_layers)])]
    variants, aliases = [], {}
    for unit, targets in units:
        zero_index = len(variants)
        moot = _keep_is_moot({layer for layer, _ in targets}, n_layers)
        for method in HEAD_METHODS:
            if moot and method.startswith("zero_keep"):
                aliases[len(variants)] = zero_index
                variants.append(Variant({"unit": unit, "method": method}))
                continue
            edits = [_ablate(cache, layer, heads, method, perm) for layer, heads in targets]
            variants.append(Variant({"unit": unit, "method": method}, tuple(edits + _keep(cache, n_layers, method))))
    if n_layers >= 2:
        ablate_l0 = _ablate(cache, 0, slice(None), "zero", perm)
        for unit in QKV_UNITS:
            kept = {"recompute_none": "qkv", "recompute_q": "kv", "recompute_k": "qv", "recompute_v": "qk",
                    "recompute_all": ""}[unit]
            clamps = [Edit(f"blocks.1.attn.hook_{c}", cache[f"blocks.1.attn.hook_{c}"], clamp=True) for c in kept]
            variants.append(Variant({"unit": unit, "method": "qkv_composition"}, (ablate_l0, *clamps)))
    embed = Edit("hook_embed", torch.zeros_like(cache["hook_embed"][:1]))
    variants.append(Variant({"unit": "token_embed", "method": "zero"}, (embed,)))
    keep = _clamp_all(cache, n_layers, "pattern") + _clamp_all(cache, n_layers, "v")
    variants.append(Variant({"unit": "token_embed", "method": "zero_keep_patterns_values"}, (embed, *keep)))
    return variants, aliases


def ablation_rows(model: ICLTransformer, data: EvalData, cache: ActivationCache, seed: int,
                  max_rows: int) -> list[dict]:
    """Rows ``unit, method, metric, value, delta`` for one checkpoint and evaluator (caller adds step/evaluator);
    the unedited pass is the row ``unit="none", method="clean"``."""
    perm = torch.randperm(data.n, generator=torch.Generator().manual_seed(seed)).to(data.classes.device)
    found, aliases = ablation_variants(cache, model.cfg.n_layers, model.cfg.n_heads, perm)
    variants = [Variant({"unit": "none", "method": "clean"})] + found
    same_as = {i + 1: j + 1 for i, j in aliases.items()}  # indices shifted past the clean variant
    run = [i for i in range(len(variants)) if i not in same_as]
    readout = readout_labels(data.context_labels, data.target)
    computed = run_variants(model, data.exemplars, data.context_labels, readout, [variants[i] for i in run], cache,
                            max_rows)
    row_of = {i: k for k, i in enumerate(run)}
    logits = computed[[row_of[same_as.get(i, i)] for i in range(len(variants))]]
    scores = {m: v.mean(dim=1).tolist() for m, v in in_context_scores(logits, data.context_labels,
                                                                       data.target).items()}
    return [{**variant.labels, "metric": m, "value": scores[m][i], "delta": scores[m][i] - scores[m][0]}
            for i, variant in enumerate(variants) for m in METRICS]
