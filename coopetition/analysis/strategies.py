"""Strategy curves from the run's own eval log (no forward passes) with the two events C25 reads off them.

- ``icl_peak``: the step where Flip in-context accuracy is highest, if it ever exceeds 0.5 (Flip is the evaluator
  that separates ICL, which scores 1, from CIWL, which scores 0; C25's flip peak is at 4.25M sequences).
- ``icl_eval_peak``: the step where the ICL evaluator (0/1 relabelled) peaks (C25: 7.75M).
- ``crossover``: the first time after ``icl_peak`` that Flip falls below 0.5, i.e. CIWL starts to dominate,
  linearly interpolated between eval points.
Event rows share the curve table (``metric`` is the event name, ``value`` the curve's value there), so the figure
is drawn from the table alone.
"""

from __future__ import annotations

from typing import ClassVar

import pandas as pd

from coopetition.analysis.base import Analysis, Figure
from coopetition.tables import FLOAT, INT, STR

CURVE_METRICS = ("in_context_acc", "loss", "acc")
EVENTS = ("icl_peak", "icl_eval_peak", "crossover")
SCHEMA = {"step": INT, "sequences": INT, "evaluator": STR, "metric": STR, "value": FLOAT}
COLUMNS = list(SCHEMA)


def curve(table: pd.DataFrame, evaluator: str, metric: str = "in_context_acc") -> pd.DataFrame:
    rows = table[(table["evaluator"] == evaluator) & (table["metric"] == metric)]
    return rows.sort_values("step").reset_index(drop=True)


def detect_events(table: pd.DataFrame) -> list[dict]:
    """Event rows (see module doc) from a table with the ``eval.csv`` columns; absent events give no row."""
    events = []
    flip = curve(table, "flip")
    if len(flip) and flip["value"].max() > 0.5:
        peak = int(flip["value"].idxmax())
        events.append({**flip.loc[peak, ["step", "sequences", "evaluator", "value"]].to_dict(), "metric": "icl_peak"})
        after = flip.iloc[peak:]
        below = after.index[after["value"] < 0.5]
        if len(below):
            i = int(below[0])
            a, b = flip.loc[i - 1], flip.loc[i]
            frac = (a["value"] - 0.5) / (a["value"] - b["value"])
            events.append({"step": round(a["step"] + frac * (b["step"] - a["step"])),
                           "sequences": round(a["sequences"] + frac * (b["sequences"] - a["sequences"])),
                           "evaluator": "flip", "metric": "crossover", "value": 0.5})
    icl = curve(table, "icl")
    if len(icl):
        peak = int(icl["value"].idxmax())
        events.append({**icl.loc[peak, ["step", "sequences", "evaluator", "value"]].to_dict(),
                       "metric": "icl_eval_peak"})
    return events


def strategies_table(eval_table: pd.DataFrame, first_step: int, last_step: int,
                     evaluators: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Curves (every eval step between the first and last selected checkpoint) plus event rows.

    Events are detected on the whole logged curve (a peak just outside the window is still the peak) and kept
    only if they fall inside the window.
    """
    events = pd.DataFrame(detect_events(eval_table), columns=COLUMNS)
    window = eval_table[(eval_table["step"] >= first_step) & (eval_table["step"] <= last_step)]
    curves = window[window["metric"].isin(CURVE_METRICS)]
    if evaluators is not None:
        curves = curves[curves["evaluator"].isin(evaluators)]
    events = events[(events["step"] >= first_step) & (events["step"] <= last_step)]
    out = pd.concat([curves[COLUMNS], events[COLUMNS]], ignore_index=True)
    return out.astype({"step": int, "sequences": int})


PAGE_CAPTION = (
    "Evaluator curves from the run's eval log: in-context accuracy (IWL: full-vocabulary accuracy) and loss. "
    "Markers: ICL peak (Flip maximum), ICL-eval peak, and the ICL/CIWL crossover (Flip falls below 0.5); a "
    "maximum on the last eval step is marked 'not yet peaked'."
)


class StrategiesAnalysis(Analysis):
    name: ClassVar[str] = "strategies"
    title: ClassVar[str] = "Strategies"
    caption: ClassVar[str] = ("Evaluator curves from the run's eval log with the ICL peak, ICL-eval peak and the "
                              "ICL/CIWL crossover.")
    tables: ClassVar[dict] = {"strategies": SCHEMA}
    needs_model: ClassVar[bool] = False
    figures: ClassVar[tuple] = (Figure("strategies.html", "Strategies", PAGE_CAPTION,
                                       "coopetition.plots.strategies:figure", inline=True),)

    def run_rows(self, steps: tuple[int, ...]) -> dict[str, list[dict]]:
        table = strategies_table(self.context.run.eval_table(), steps[0], steps[-1], self.context.evaluators)
        return {"strategies": table.to_dict("records")}
