"""The scorecard: at each selected checkpoint, every check of REFERENCE §9.5-9.8 that applies to the run, next to the
paper's number (``analysis.paper.PAPER``), in one tidy table ``scorecard.csv``
(``step, sequences, check, paper, measured, unit, low, high, section``; one row per check and step).

Nothing here is a new measurement; each check reads the table of the analysis that owns it (``needs``: ablation and
clamp; ``rows_from_tables``) or reuses its machinery:

- final in-context accuracies, layer 0's direct effect, only-Q/K/V recomputed, all heads removed: the ``ablation``
  table's ``in_context_acc`` rows (``none``/``clean``, the ``qkv_composition`` units, ``all_heads`` zero);
- copier slope / accuracy at delta 0 / monotone fraction: the ``clamp`` table's ``isolated`` induction rows of
  every last-layer head on CIWL data (C25 Fig 2b);
- final full-vocabulary accuracies (ICL and pure IWL, as §9.5): the shared baseline pass;
- peaks (``flip_peak``, ``icl_eval_peak``, ``flip_near_zero``, ``peak_ratio``): ``strategies.detect_events`` on the
  run's eval log; run-level, so repeated at every step;
- layer-0 switch: ``progress.head_measures`` (``label_to_prev`` vs ``label_to_self`` on Train data), here and at
  the checkpoint nearest the flip peak (the reference, computed once in ``prepare``): this needs the model.
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

from coopetition.analysis.base import Analysis, Checkpoint, Context, Figure
from coopetition.store.run import load_checkpoint
from coopetition.analysis.paper import PAPER
from coopetition.analysis.progress import head_measures
from coopetition.analysis.strategies import curve, detect_events
from coopetition.task.evalset import EvalData
from coopetition.tables import FLOAT, INT, STR

if TYPE_CHECKING:  # TransformerLens is imported on first use (coopetition.model)
    from coopetition.model import ActivationCache, ICLTransformer

SCHEMA = {"step": INT, "sequences": INT, "check": STR, "paper": FLOAT, "measured": FLOAT, "unit": STR, "low": FLOAT,
          "high": FLOAT, "section": STR}
COLUMNS = tuple(SCHEMA)
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


def table_checks(ablation: pd.DataFrame | None, clamp: pd.DataFrame | None) -> dict[str, float]:
    """The in-context checks of one checkpoint from the rows of the ``ablation`` and ``clamp`` tables at that step:
    per in-context evaluator the clean accuracy and the composition / all-heads checks, and on CIWL the copier
    summary of the ``isolated`` induction clamps."""
    out: dict[str, float] = {}
    if ablation is not None and len(ablation):
        acc = ablation[ablation["metric"] == "in_context_acc"]
        for evaluator in IN_CONTEXT:
            rows = acc[acc["evaluator"] == evaluator]
            found = {(u, m): (v, d) for u, m, v, d in zip(rows["unit"], rows["method"], rows["value"], rows["delta"])}
            if ("none", "clean") in found:
                out[f"final_acc_{evaluator}"] = float(found["none", "clean"][0])
            for key, check in COMPOSITION.items():
                if key in found:
                    value, delta = found[key]
                    out[f"{check}_{evaluator}"] = float(delta if check == "l0_direct_effect" else value)
    if clamp is not None and len(clamp):
        rows = clamp[(clamp["evaluator"] == "ciwl") & (clamp["intervention"] == "induction")
                     & (clamp["condition"] == "isolated") & (clamp["metric"] == "in_context_acc")]
        by_head: dict[str, list[tuple[float, float]]] = {}
        for head, strength, value in zip(rows["head"], rows["strength"], rows["value"]):
            by_head.setdefault(head, []).append((float(strength), float(value)))
        if by_head:
            curves = torch.tensor([[v for _, v in sorted(points)] for points in by_head.values()])
            strengths = [s for s, _ in sorted(next(iter(by_head.values())))]
            out.update(copier_summary(strengths, curves))
    return out


def full_accuracy(logits: Float[Tensor, "n classes"], data: EvalData) -> float:
    return float((logits.argmax(-1) == data.target).float().mean())


def scorecard_rows(measured: dict[str, float]) -> list[dict]:
    """One row per paper check that was measured (rows without step/sequences)."""
    return [{"check": c.check, "paper": c.paper, "measured": measured[c.check], "unit": c.unit, "low": c.low,
             "high": c.high, "section": c.section} for c in PAPER if c.check in measured]


PAGE_CAPTION = (
    "Paper (REFERENCE §9.5-9.8) vs measured, per checkpoint: final accuracies, peak positions, layer-0 "
    "direct effect, only-Q/K/V recomputed, all heads removed, copier curve, layer-0 switch. Green: inside "
    "the agreement band; red: outside; grey: not compared (words only or a different scale); amber: cannot "
    "be judged on this run (a peak on its last step, still rising). The paper's mechanistic numbers are for "
    "its final 64M checkpoint."
)


class ScorecardAnalysis(Analysis):
    name: ClassVar[str] = "scorecard"
    title: ClassVar[str] = "Scorecard"
    caption: ClassVar[str] = ("Every behavioural and mechanistic check of REFERENCE §9.5-9.8 that applies to the run, "
                              "paper vs measured, per checkpoint.")
    tables: ClassVar[dict] = {"scorecard": SCHEMA}
    needs: ClassVar[tuple[str, ...]] = ("ablation", "clamp")  # the in-context checks are read from their tables
    figures: ClassVar[tuple] = (Figure("scorecard.html", "Scorecard: paper vs measured", PAGE_CAPTION,
                                       "coopetition.plots.scorecard:figure"),)

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
        """The checks that need the model (or the eval log); the rest come from the tables (``rows_from_tables``)."""
        measured = dict(self.timeline)
        data = self.context.data
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

    @classmethod
    def rows_from_tables(cls, context: Context, step: int, sequences: int, own: dict[str, list[dict]],
                         tables: dict[str, pd.DataFrame]) -> dict[str, list[dict]]:
        """This step's rows: its own checks plus those read from the ablation and clamp rows of the step, in the
        paper table's order."""
        measured = {r["check"]: r["measured"] for r in own.get("scorecard", [])}
        measured |= table_checks(tables.get("ablation"), tables.get("clamp"))
        return {"scorecard": [{"step": step, "sequences": sequences, **r} for r in scorecard_rows(measured)]}
