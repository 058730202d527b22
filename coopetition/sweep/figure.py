"""The sweep figure, built from ``summary.csv`` alone: in-context accuracy (IWL: full accuracy, as the paper plots
it) vs training sequences, one panel per evaluator, one colour per non-seed grid point; the line is the mean over
seeds and the shaded band mean ± std (``band="std"``) or min–max (``band="minmax"``)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative
from plotly.subplots import make_subplots

from coopetition.errors import ConfigError
from coopetition.plots.common import ensure_plotlyjs, write_figure
from coopetition.task.evaluators import spec_for

BANDS = ("std", "minmax")
ORDER = ("train", "icl", "flip", "ciwl", "iwl")
PALETTE = qualitative.Plotly


def metric_of(evaluator: str) -> str:
    """The evaluator's headline metric (its spec's: pure IWL plots full-vocabulary accuracy)."""
    return spec_for(evaluator).headline_metric


def figure(summary: pd.DataFrame, band: str = "std", title: str = "sweep") -> go.Figure:
    if band not in BANDS:
        raise ConfigError(f"band must be one of {', '.join(BANDS)}, got {band!r}")
    present = list(summary["evaluator"].unique())
    evaluators = [e for e in ORDER if e in present] + [e for e in present if e not in ORDER]
    cols = min(3, len(evaluators))
    rows = math.ceil(len(evaluators) / cols)
    fig = make_subplots(rows=rows, cols=cols, shared_yaxes=True, horizontal_spacing=0.04,
                        vertical_spacing=0.12, subplot_titles=[f"{e} ({metric_of(e)})" for e in evaluators])
    groups = list(dict.fromkeys(summary["group"]))
    for index, evaluator in enumerate(evaluators):
        row, col = index // cols + 1, index % cols + 1
        curves = summary[(summary["evaluator"] == evaluator) & (summary["metric"] == metric_of(evaluator))]
        for g, group in enumerate(groups):
            s = curves[curves["group"] == group].sort_values("sequences")
            if s.empty:
                continue
            tint = PALETTE[g % len(PALETTE)]
            spread = s["std"].fillna(0.0)
            low, high = (s["mean"] - spread, s["mean"] + spread) if band == "std" else (s["min"], s["max"])
            low, high = low.clip(0.0, 1.0), high.clip(0.0, 1.0)  # accuracies: a ± std band must not leave [0, 1]
            fig.add_trace(go.Scatter(
                x=[*s["sequences"], *s["sequences"][::-1]], y=[*high, *low[::-1]], fill="toself", mode="lines",
                line=dict(width=0), fillcolor=_translucent(tint), name=f"{group} band", legendgroup=group,
                showlegend=False, hoverinfo="skip"), row, col)
            fig.add_trace(go.Scatter(
                x=s["sequences"], y=s["mean"], mode="lines", name=group, legendgroup=group,
                showlegend=index == 0, line=dict(color=tint), customdata=s[["step", "std", "min", "max", "n"]],
                hovertemplate=(f"{group}<br>{evaluator}<br>%{{x}} sequences (step %{{customdata[0]}})<br>"
                               "mean %{y:.3f} ± %{customdata[1]:.3f}<br>min %{customdata[2]:.3f}, "
                               "max %{customdata[3]:.3f}, n %{customdata[4]}<extra></extra>")), row, col)
        if metric_of(evaluator).startswith("in_context"):  # chance among two context labels
            fig.add_hline(y=0.5, line=dict(dash="dash", color="grey", width=1), row=row, col=col)
    fig.update_yaxes(range=[-0.02, 1.05])
    fig.update_xaxes(title_text="sequences", row=rows)
    spread_text = "± std" if band == "std" else "min–max"
    fig.update_layout(title=f"{title}: mean across seeds, band {spread_text}", template="plotly_white",
                      height=360 * rows, legend_title_text="grid point")
    return fig


def write_figure_from_summary(summary_csv: Path, path: Path, band: str = "std", title: str = "sweep") -> Path:
    """Regenerate the figure from the table on disk (plotly.js written once next to it)."""
    ensure_plotlyjs(path.parent)
    return write_figure(figure(pd.read_csv(summary_csv), band, title), path)


def _translucent(colour: str, alpha: float = 0.2) -> str:
    r, g, b = hex_to_rgb(colour)
    return f"rgba({r},{g},{b},{alpha})"
