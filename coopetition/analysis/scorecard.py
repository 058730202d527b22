"""The scorecard: at each selected checkpoint, every check of REFERENCE §9.5-9.8 that applies to the run, next to the
paper's number (``analysis.paper.PAPER``), in one tidy table ``scorecard.csv``
(``step, sequences, check, paper, measured, unit, low, high, section``; one row per check and step).

Nothing here is a new measurement; each check reuses the machinery of the analysis that owns it, through the one
intervention vocabulary and forward path (``Intervened.run_variants``):

- final accuracies: the shared baseline pass (in-context acc; ICL and pure IWL as full-vocabulary acc, as §9.5);
- peaks (``flip_peak``, ``icl_eval_peak``, ``flip_near_zero``, ``peak_ratio``): ``strategies.detect_events`` on the
  run's eval log; run-level, so repeated at every step;
- layer 0's direct effect, only-Q/K/V recomputed, all heads removed: the ``ablation`` analysis's variants
  (``ablation_variants``: ``qkv_composition`` units, ``all_heads`` zero), scored by its ``variant_scores``;
- copier slope / accuracy at delta 0 / monotone fraction: the ``clamp`` analysis's ``isolated`` induction variants
  of every last-layer head on CIWL data (C25 Fig 2b);
- layer-0 switch: ``progress.head_measures`` (``label_to_prev`` vs ``label_to_self`` on Train data), here and at
  the checkpoint nearest the flip peak (the reference, computed once in ``prepare``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from coopetition.analysis.ablation import ablation_variants, variant_scores
from coopetition.analysis.base import Analysis, Checkpoint
from coopetition.analysis.clamp import clamp_variants, linear_applies, linear_scores
from coopetition.store.run import EvalData, load_checkpoint
from coopetition.analysis.paper import PAPER
from coopetition.analysis.progress import head_measures
from coopetition.analysis.strategies import curve, detect_events
from coopetition.interventions import Intervened, Intervention

if TYPE_CHECKING:  # TransformerLens is imported on first use (coopetition.model)
    from coopetition.model import ActivationCache, ICLTransformer

COLUMNS = ("step", "sequences", "check", "paper", "measured", "unit", "low", "high", "section")
COMPOSITION = {("recompute_none", "qkv_composition"): "l0_direct_effect", ("recompute_q", "qkv_composition"):
               "recompute_q", ("recompute_k", "qkv_composition"): "recompute_k",
               ("recompute_v", "qkv_composition"): "recompute_v", ("all_heads", "zero"): "all_heads_removed"}
IN_CONTEXT = ("train", "ciwl", "flip")  # final in-context accuracy and the ablation checks
FULL = ("icl", "iwl")  # final full-vocabulary accuracy (§9.5's 320M numbers)
NEAR_ZERO = 0.05  # "flip ~ 0" (§9.6)
MONOTONE_SLACK = 0.05  # a copier's curve may dip this much between strengths (sampling noise)
COPIER_RISE = 0.5  # ... and must rise at least this much from S = 0 to S = 1


def timeline(eval_table: pd.DataFrame, total_steps: int) -> dict[str, float]:
    """Run-level checks from the eval log: where the Flip and ICL-eval peaks fall (sequences and fraction of the
    run's ``total_steps``), their ratio, and when Flip first falls to ``NEAR_ZERO`` after its peak (NaN: never)."""
    events = {e["metric"]: e for e in detect_events(eval_table)}
    out: dict[str, float] = {}

    def fraction(step: float) -> float:
        return step / total_steps if total_steps > 0 else math.nan

    for check, event in (("flip_peak", "icl_peak"), ("icl_eval_peak", "icl_eval_peak")):
        if event in events:
            out[check] = float(events[event]["sequences"])
            out[f"{check}_fraction"] = fraction(events[event]["step"])
    if "flip_peak" in out and "icl_eval_peak" in out:
        out["peak_ratio"] = out["icl_eval_peak"] / out["flip_peak"] if out["flip_peak"] else math.nan
    if "icl_peak" in events:
        flip = curve(eval_table, "flip")
        after = flip[(flip["step"] > events["icl_peak"]["step"]) & (flip["value"] <= NEAR_ZERO)]
        out["flip_near_zero"] = float(after["sequences"].iloc[0]) if len(after) else math.nan
        out["flip_near_zero_fraction"] = fraction(after["step"].iloc[0]) if len(after) else math.nan
    return out


def copier_summary(strengths: Sequence[float], acc: Float[Tensor, "head strength"]) -> dict[str, float]:
    """Mean over heads of the least-squares slope of accuracy against delta = 2S - 1, of the accuracy at delta 0
    (interpolated), and the fraction of heads that are copiers (monotone up to ``MONOTONE_SLACK``, rising at least
    ``COPIER_RISE``)."""
    s = torch.tensor(strengths, dtype=torch.float64)
    order = s.argsort()
    delta, acc = 2 * s[order] - 1, acc.double()[:, order]
    centred = delta - delta.mean()
    slope = (acc * centred).sum(1) / (centred**2).sum()
    at0 = torch.tensor([np.interp(0.0, delta.numpy(), row.numpy()) for row in acc])
    monotone = (acc.diff(dim=1) >= -MONOTONE_SLACK).all(1) & (acc[:, -1] - acc[:, 0] >= COPIER_RISE)
    return {"copier_slope": float(slope.mean()), "copier_acc_at_delta0": float(at0.mean()),
            "copier_monotone_fraction": float(monotone.double().mean())}


def label_attention(network: ICLTransformer, data: EvalData,
                    cache: ActivationCache) -> tuple[Bool[Tensor, " head"], Bool[Tensor, " head"]]:
    """Per layer-0 head: does label-token attention (mean over sequences and label tokens) go more to the previous
    token, the label's exemplar (``prev``), or more to the label itself (``self``)? A head may be neither (a tie)."""
    measures = head_measures(network, data, cache)
    to_prev, to_self = measures["label_to_prev"][0], measures["label_to_self"][0]
    return to_prev > to_self, to_self > to_prev


def mechanism_variants(n_layers: int, n_heads: int) -> list[tuple[str, tuple[Intervention, ...]]]:
    """The ablation analysis's composition and all-heads variants, named by check."""
    found, _ = ablation_variants(n_layers, n_heads)
    return [(COMPOSITION[(labels["unit"], labels["method"])], interventions) for labels, interventions in found
            if (labels["unit"], labels["method"]) in COMPOSITION]


def copier_variants(n_layers: int, n_heads: int, strengths: tuple[float, ...]) -> list[tuple[dict, tuple]]:
    """The clamp analysis's ``isolated`` induction clamps of every last-layer head."""
    return [(labels, v) for labels, v in clamp_variants(n_layers, n_heads, strengths)
            if labels["intervention"] == "induction" and labels["condition"] == "isolated"]


def evaluator_checks(forward: Intervened, data: EvalData, cache: ActivationCache, strengths: tuple[float, ...],
                     max_rows: int, linear: bool = False) -> dict[str, float]:
    """The in-context checks of one evaluator (``train``, ``ciwl`` or ``flip``): clean accuracy, the ablation
    checks, and (CIWL only) the copier summary; one batched ``run_variants`` call."""
    cfg = forward.network.cfg
    named = mechanism_variants(cfg.n_layers, cfg.n_heads)
    copiers = copier_variants(cfg.n_layers, cfg.n_heads, strengths) if data.name == "ciwl" else []
    variants = [()] + [v for _, v in named] + [v for _, v in copiers]
    # ``linear``: the clamp analysis's own fewer-pass readout (where exact in real arithmetic), so both tables agree
    score = linear_scores if linear and linear_applies(forward) else variant_scores
    acc = score(forward, data, cache, variants, max_rows)["in_context_acc"]
    out = {f"final_acc_{data.name}": acc[0]}
    for i, (check, _) in enumerate(named, start=1):
        out[f"{check}_{data.name}"] = acc[i] - acc[0] if check == "l0_direct_effect" else acc[i]
    if copiers:
        by_head: dict[str, list[tuple[float, float]]] = {}
        for (labels, _), value in zip(copiers, acc[1 + len(named):]):
            by_head.setdefault(labels["head"], []).append((labels["strength"], value))
        curves = torch.tensor([[v for _, v in sorted(points)] for points in by_head.values()])
        out.update(copier_summary(sorted(strengths), curves))
    return out


def full_accuracy(logits: Float[Tensor, "n classes"], data: EvalData) -> float:
    return float((logits.argmax(-1) == data.target).float().mean())


def scorecard_rows(measured: dict[str, float]) -> list[dict]:
    """One row per paper check that was measured (rows without step/sequences)."""
    return [{"check": c.check, "paper": c.paper, "measured": measured[c.check], "unit": c.unit, "low": c.low,
             "high": c.high, "section": c.section} for c in PAPER if c.check in measured]


class ScorecardAnalysis(Analysis):
    name: ClassVar[str] = "scorecard"
    title: ClassVar[str] = "Scorecard"
    caption: ClassVar[str] = ("Every behavioural and mechanistic check of REFERENCE §9.5-9.8 that applies to the run, "
                              "paper vs measured, per checkpoint.")
    tables: ClassVar[dict] = {"scorecard": COLUMNS}

    @classmethod
    def cache_inputs(cls, run) -> dict:
        """The eval log (run-level checks; ``zoom`` adds rows) and the checkpoint nearest the flip peak (the layer-0
        reference): a cached row is reused only while both are the same."""
        import hashlib

        eval_table = run.eval_table()
        events = {e["metric"]: e for e in detect_events(eval_table)}
        reference = None
        if "icl_peak" in events and run.checkpoints:
            info = min(run.checkpoints, key=lambda c: abs(c.step - events["icl_peak"]["step"]))
            reference = [info.step, info.sha256]
        log = hashlib.sha256(eval_table.to_csv(index=False).encode()).hexdigest()
        return {"eval_log": log, "reference": reference}

    def prepare(self) -> None:
        """Run-level checks from the eval log, and the layer-0 reference: label-token attention at the checkpoint
        nearest the flip peak (loaded into the shared model here; every analysed checkpoint is loaded after)."""
        run = self.context.run
        eval_table = run.eval_table()
        self.timeline = timeline(eval_table, run.config.train.steps)
        self.reference: Tensor | None = None  # layer-0 heads attending label -> previous token at the flip peak
        events = {e["metric"]: e for e in detect_events(eval_table)}
        data = self.context.data.get("train")
        if "icl_peak" not in events or data is None or self.context.network.cfg.n_layers < 2 or not run.checkpoints:
            return
        peak = events["icl_peak"]["step"]
        info = min(run.checkpoints, key=lambda c: abs(c.step - peak))
        load_checkpoint(self.context.model, info, self.config.device)
        with torch.no_grad():
            _, cache = self.context.forward.run_cached(data.exemplars, data.context_labels, data.target)
        self.reference, _ = label_attention(self.context.network, data, cache)

    def checkpoint_rows(self, checkpoint: Checkpoint) -> dict[str, list[dict]]:
        measured = dict(self.timeline)
        data = self.context.data
        for name in (e for e in IN_CONTEXT if e in data):
            _, cache = checkpoint.baseline(data[name])
            measured |= evaluator_checks(self.context.forward, data[name], cache, self.config.clamp_strengths,
                                         self.config.max_rows, linear=not self.config.clamp_exact)
        for name in (e for e in FULL if e in data):
            logits, _ = checkpoint.baseline(data[name])
            measured[f"final_acc_{name}"] = full_accuracy(logits, data[name])
        if "train" in data and self.context.network.cfg.n_layers >= 2:
            _, cache = checkpoint.baseline(data["train"])
            prev, self_now = label_attention(self.context.network, data["train"], cache)
            measured["l0_prev_token_heads"] = float(prev.float().mean())
            if self.reference is not None:
                measured["l0_switched_to_self"] = float((self.reference & self_now).float().mean())
        return {"scorecard": scorecard_rows(measured)}
