"""Head, layer and embedding ablations (C25 section 5.3), every one a list of interventions run in one batched pass.

Units and methods (``unit`` / ``method`` columns of ``ablation.csv``; ``intervention`` holds the exact specs, the
same that ``train --intervene`` and ``analyze --intervene`` take):

- ``L{l}H{h}`` (one head), ``L{l}`` (all heads of layer l), ``all_heads``, each with
  ``zero`` (``ablate:l:h``: the head writes nothing), ``mean`` (``ablate:l:h:mean``: its output replaced by the
  eval-set mean per position), ``resample`` (``ablate:l:h:resample``: by its output on the next sequence of the
  set), ``zero_keep_patterns`` (``ablate`` + ``preserve:patterns``: only value/direct paths of the ablation count)
  and ``zero_keep_values`` (``ablate`` + ``preserve:values``: only query/key paths and the direct path count).
- ``qkv_composition``: layer 0 zero-ablated while layer 1's queries, keys and values are all clamped to the baseline
  (``recompute_none``: what layer 0 adds directly), or all but one (``recompute_q`` / ``_k`` / ``_v``: how much
  of layer 0's effect reaches layer 1 through Q-, K- or V-composition), or none (``recompute_all`` = ``L0`` zero).
  Later layers (a deeper model) run normally.
- ``token_embed``: the token (exemplar and label) embeddings zeroed, positions kept; ``zero`` alone, and
  ``zero_keep_patterns_values`` (all patterns and values clamped), which removes only the direct
  embedding-to-unembedding path (the reference's 96.7 % experiment).

Computed without a hooked pass per variant where that is exact (``variant_scores``; docs/analyze.md, section 2).
"Clean" (and what ``preserve`` restores) is the analysed baseline: the run's own network with its own interventions
and any added with ``--intervene``. Reported: ``in_context_acc``, ``in_context_prob`` and ``target_logit_diff``
(see ``task.metrics.in_context_scores``) averaged over the sequences, and ``delta`` from the baseline.
"""

from __future__ import annotations

from typing import ClassVar

from coopetition.analysis.base import Analysis, Checkpoint, Figure
from coopetition.interventions import Ablate, AblateEmbedding, Intervened, Intervention, Preserve, stream
from coopetition.task.evalset import EvalData
from coopetition.task.metrics import in_context_scores, readout_labels
from coopetition.tables import FLOAT, INT, STR

HEAD_METHODS = ("zero", "mean", "resample", "zero_keep_patterns", "zero_keep_values")
QKV_UNITS = {"recompute_none": ("queries", "keys", "values"), "recompute_q": ("keys", "values"),
             "recompute_k": ("queries", "values"), "recompute_v": ("queries", "keys"), "recompute_all": ()}
METRICS = ("in_context_acc", "in_context_prob", "target_logit_diff")


def _head_variant(heads: tuple, method: str) -> tuple[Intervention, ...]:
    if method in ("zero", "mean", "resample"):
        return (Ablate(heads, method),)
    keep = {"zero_keep_patterns": "patterns", "zero_keep_values": "values"}[method]
    return Ablate(heads), Preserve((keep,))


def ablation_variants(n_layers: int, n_heads: int) -> tuple[list[tuple[dict, tuple[Intervention, ...]]],
                                                            dict[int, int]]:
    """``[(labels, interventions)]`` and ``aliases``: variant index -> index of an identical variant (not run).

    Keeping patterns or values only changes layers that compute after the ablated ones, so for a unit that reaches
    the last layer (a last-layer head or layer, ``all_heads``) "keep" equals plain zero."""
    units = [(f"L{l}H{h}", ((l, h),)) for l in range(n_layers) for h in range(n_heads)]
    units += [(f"L{l}", ((l, None),)) for l in range(n_layers)]
    units += [("all_heads", tuple((l, None) for l in range(n_layers)))]
    variants, aliases = [], {}
    for unit, heads in units:
        zero_index = len(variants)
        moot = max(layer for layer, _ in heads) == n_layers - 1
        for method in HEAD_METHODS:
            if moot and method.startswith("zero_keep"):
                aliases[len(variants)] = zero_index
            variants.append(({"unit": unit, "method": method}, _head_variant(heads, method)))
    if n_layers >= 2:
        for unit, kept in QKV_UNITS.items():
            clamps = (Preserve(kept, (1,)),) if kept else ()
            variants.append(({"unit": unit, "method": "qkv_composition"}, (Ablate(((0, None),)), *clamps)))
    variants.append(({"unit": "token_embed", "method": "zero"}, (AblateEmbedding(),)))
    variants.append(({"unit": "token_embed", "method": "zero_keep_patterns_values"},
                     (AblateEmbedding(), Preserve(("patterns", "values")))))
    return variants, aliases


def variant_scores(forward: Intervened, data: EvalData, baseline, variants: list[tuple[Intervention, ...]],
                   max_rows: int) -> dict[str, list[float]]:
    """Mean ``in_context_acc``/``_prob``/``target_logit_diff`` of each variant (index 0 is usually the baseline).
    Head, layer and embedding ablations of an attention-only network come from the baseline cache and one hook-free
    pass of the later blocks (``stream.ablation_logits``, exact in real arithmetic); any other variant, or any
    variant of a network with MLPs or run edits, is one hooked pass (``Intervened.run_variants``)."""
    logits = stream.ablation_logits(forward, data.exemplars, data.context_labels, data.target, variants,
                                    readout_labels(data.context_labels, data.target), baseline, max_rows)
    return {m: v.mean(dim=1).tolist() for m, v in in_context_scores(logits, data.context_labels, data.target).items()}


def ablation_rows(forward: Intervened, data: EvalData, baseline, max_rows: int) -> list[dict]:
    """Rows ``unit, method, intervention, metric, value, delta`` for one checkpoint and evaluator; the baseline is
    the row ``unit="none", method="clean"``."""
    cfg = forward.network.cfg
    found, aliases = ablation_variants(cfg.n_layers, cfg.n_heads)
    variants = [({"unit": "none", "method": "clean"}, ())] + found
    same_as = {i + 1: j + 1 for i, j in aliases.items()}  # indices shifted past the baseline
    run = [i for i in range(len(variants)) if i not in same_as]
    row_of = {i: k for k, i in enumerate(run)}
    scores = variant_scores(forward, data, baseline, [variants[i][1] for i in run], max_rows)
    rows = []
    for i, (labels, interventions) in enumerate(variants):
        k = row_of[same_as.get(i, i)]
        rows += [{**labels, "intervention": spec_text(interventions), "metric": m, "value": scores[m][k],
                  "delta": scores[m][k] - scores[m][0]} for m in METRICS]
    return rows


def spec_text(interventions: tuple[Intervention, ...]) -> str:
    return " + ".join(i.spec for i in interventions) or "none"


PAGE_CAPTION = (
    "Change in in-context accuracy when a head (L{layer}H{head}, layers 0-indexed), a whole layer, all heads "
    "or the token embedding is ablated (zero, mean, resample; zero with patterns or values kept from the "
    "clean pass), the Q/K/V-composition test and token-embedding ablation. Blue: the ablation lowers the "
    "evaluator's in-context accuracy, so the unit helps the answer; red: raises it (e.g. Flip rises when a "
    "CIWL head is removed) — the same blue/red as the patching and circuit pages. Pick the evaluator."
)


class AblationAnalysis(Analysis):
    name: ClassVar[str] = "ablation"
    title: ClassVar[str] = "Head ablation"
    caption: ClassVar[str] = ("Change in in-context accuracy when a head, a layer, all heads or the token embedding "
                              "is ablated, and the Q/K/V-composition test (C25 section 5.3).")
    tables: ClassVar[dict] = {"ablation": {"step": INT, "sequences": INT, "evaluator": STR, "unit": STR, "method": STR,
                                           "intervention": STR, "metric": STR, "value": FLOAT, "delta": FLOAT}}
    figures: ClassVar[tuple] = (Figure("ablation.html", "Head ablation", PAGE_CAPTION,
                                       "coopetition.plots.ablation:figure"),)

    def checkpoint_rows(self, checkpoint: Checkpoint) -> dict[str, list[dict]]:
        rows = []
        for name in self.context.evaluators:
            data = self.context.data[name]
            _, cache = checkpoint.baseline(data)
            rows += [{"evaluator": name, **r}
                     for r in ablation_rows(self.context.forward, data, cache, self.config.max_rows)]
        return {"ablation": rows}
