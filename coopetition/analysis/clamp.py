"""Activation clamping across checkpoints: dose-response curves of single heads (C25 section 5.3, Fig 2b).

At every selected checkpoint, each head's attention is clamped to an ideal pattern of strength S (the same
``induction`` and ``prev_token`` interventions that training takes) and the in-context scores are read out:

- last layer, ``induction:L:H:S``: the query row puts S on the label tokens equal to the target and 1 - S on the
  others (attention delta = 2S - 1 with two context pairs). A *copier* head, whose output is the label it attends
  to, gives an accuracy that rises monotonically with S and passes ~0.5 at delta 0 (C25 §9.8).
- first layer, ``prev_token:0:H:S``: every token puts S on the previous token and 1 - S on itself (the ICL route
  needs label tokens to see their exemplar; CIWL suits self attention).

Conditions (``condition`` column): ``others_kept`` (the rest of the network runs as usual), ``others_ablated``
(the other heads of that layer are zero-ablated), and, for the last layer, ``isolated``: C25's single-head protocol,
which keeps only that head (every earlier head, the other heads of its layer and the token embedding ablated, all
patterns and values preserved from the baseline), so the output is what that one head copies. Evaluators whose
target never appears in the context (pure IWL) are skipped: an induction pattern is undefined there.

**Fewer passes for the last layer** (``linear_scores``). In an attention-only network an ``induction`` clamp of a
last-layer head changes only that head's query row, which is affine in S (``induction_weights``), and nothing
nonlinear follows it before the final LayerNorm: the residual stream at the query is exactly
r(S) = r(0) + S (r(1) - r(0)). So each (head, condition) runs two passes, S = 0 and S = 1, and every strength is read
out from the interpolated residual (final LayerNorm and the needed label logits). This is the same number up to
float rounding (~1e-7 relative; an accuracy can differ only where two label logits are that close), checked against
the one-pass-per-strength method in ``tests/test_analysis_fast_clamp.py``. It is used only where it is exact in
real arithmetic: no MLPs and no run or ``--intervene`` edits (which might act after the clamp); otherwise, or with
``AnalysisConfig.clamp_exact``, every strength is its own pass. ``prev_token`` clamps (layer 0) feed a nonlinear
later layer and always run one pass per strength.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from coopetition.analysis.ablation import METRICS, variant_scores
from coopetition.analysis.base import Analysis, Checkpoint
from coopetition.store.run import EvalData
from coopetition.analysis.readout import in_context_scores, readout_labels
from coopetition.interventions import (Ablate, AblateEmbedding, Induction, Intervened, Intervention, Preserve,
                                       PrevToken)

COLUMNS = ("step", "sequences", "evaluator", "intervention", "condition", "head", "strength", "metric", "value")


def clamp_variants(n_layers: int, n_heads: int, strengths: tuple[float, ...]) -> list[tuple[dict, tuple]]:
    """``[(labels, interventions)]`` for every clamped head, strength and condition."""
    last = n_layers - 1
    variants = []
    for head in range(n_heads):
        others = tuple((last, h) for h in range(n_heads) if h != head)
        earlier = tuple((layer, None) for layer in range(last))
        conditions: dict[str, tuple[Intervention, ...]] = {"others_kept": (), "others_ablated": (Ablate(others),)}
        isolate = (Ablate(earlier + others),) if earlier + others else ()
        conditions["isolated"] = (*isolate, AblateEmbedding(), Preserve(("patterns", "values")))
        for condition, context in conditions.items():
            for s in strengths:
                labels = {"intervention": "induction", "condition": condition, "head": f"L{last}H{head}",
                          "strength": s}
                variants.append((labels, (*context, Induction(((last, head),), s))))
    if n_layers >= 2:
        for head in range(n_heads):
            others = tuple((0, h) for h in range(n_heads) if h != head)
            for condition, context in (("others_kept", ()), ("others_ablated", (Ablate(others),))):
                for s in strengths:
                    labels = {"intervention": "prev_token", "condition": condition, "head": f"L0H{head}",
                              "strength": s}
                    variants.append((labels, (*context, PrevToken(((0, head),), s))))
    return variants


def linear_applies(forward: Intervened) -> bool:
    """Whether ``linear_scores`` is exact in real arithmetic for ``forward`` (see the module docstring)."""
    return bool(forward.network.cfg.attn_only) and not forward.edits


def linear_scores(forward: Intervened, data: EvalData, baseline, variants: list[tuple[Intervention, ...]],
                  max_rows: int) -> dict[str, list[float]]:
    """``variant_scores`` with every last-layer ``induction`` variant read out from the S = 0 and S = 1 passes of
    its (head, condition) (only where ``linear_applies``); other variants run as usual."""
    logits = linear_logits(forward, data, baseline, variants, max_rows)
    return {m: v.mean(dim=1).tolist() for m, v in in_context_scores(logits, data.context_labels, data.target).items()}


def linear_logits(forward: Intervened, data: EvalData, baseline, variants: list[tuple[Intervention, ...]],
                  max_rows: int) -> torch.Tensor:
    """The readout logits ``[variant, n, k]`` behind ``linear_scores``."""
    last = forward.network.cfg.n_layers - 1
    labels = readout_labels(data.context_labels, data.target)
    groups: dict[tuple, list[tuple[int, float]]] = {}
    exact = []
    for i, variant in enumerate(variants):
        clamp = variant[-1] if variant else None
        if isinstance(clamp, Induction) and all(layer == last for layer, _ in clamp.heads):
            groups.setdefault((variant[:-1], clamp.heads), []).append((i, clamp.strength))
        else:
            exact.append(i)
    out = torch.empty(len(variants), data.n, labels.shape[1], device=labels.device)
    if exact:
        out[exact] = forward.run_variants(data.exemplars, data.context_labels, data.target,
                                          [variants[i] for i in exact], labels, baseline, max_rows=max_rows)
    if not groups:
        return out
    ends = [(*context, Induction(heads, s)) for context, heads in groups for s in (0.0, 1.0)]
    residual = forward.run_variants(data.exemplars, data.context_labels, data.target, ends, baseline=baseline,
                                    max_rows=max_rows, final_residual=True)  # [2 * groups, n, d_model]
    r0, r1 = residual[0::2], residual[1::2]
    members = [(g, i, s) for g, found in enumerate(groups.values()) for i, s in found]
    strength = torch.tensor([s for _, _, s in members], dtype=residual.dtype, device=residual.device)
    index = torch.tensor([g for g, _, _ in members], device=residual.device)
    mixed = r0[index] + strength[:, None, None] * (r1[index] - r0[index])  # [members, n, d_model]
    n = data.n
    out[[i for _, i, _ in members]] = torch.cat([
        forward.network.unembed_query(chunk.reshape(-1, 1, chunk.shape[-1]),
                                      labels.repeat(chunk.shape[0], 1)).view(chunk.shape[0], n, -1)
        for chunk in mixed.split(max(1, max_rows // n))]).to(out.dtype)
    return out


class ClampAnalysis(Analysis):
    name: ClassVar[str] = "clamp"
    title: ClassVar[str] = "Activation clamping"
    caption: ClassVar[str] = ("Accuracy against the clamped attention strength of each head (last layer: induction "
                              "pattern; first layer: previous-token pattern), with the head's layer-mates kept or "
                              "ablated, or the head isolated (C25 Fig 2b); slider: checkpoint.")
    tables: ClassVar[dict] = {"clamp": COLUMNS}

    def prepare(self) -> None:
        self.evaluators = tuple(name for name in self.context.evaluators
                                if (self.context.data[name].context_labels
                                    == self.context.data[name].target[:, None]).any())
        cfg = self.context.network.cfg
        self.variants = clamp_variants(cfg.n_layers, cfg.n_heads, self.config.clamp_strengths)
        self.linear = not self.config.clamp_exact and linear_applies(self.context.forward)

    def checkpoint_rows(self, checkpoint: Checkpoint) -> dict[str, list[dict]]:
        rows = []
        for name in self.evaluators:
            data = self.context.data[name]
            _, cache = checkpoint.baseline(data)
            score = linear_scores if self.linear else variant_scores
            scores = score(self.context.forward, data, cache, [v for _, v in self.variants], self.config.max_rows)
            rows += [{"evaluator": name, **labels, "metric": m, "value": scores[m][i]}
                     for i, (labels, _) in enumerate(self.variants) for m in METRICS]
        return {"clamp": rows}
