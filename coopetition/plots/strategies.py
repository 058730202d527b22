"""C25 Fig 1b: in-context accuracy (and loss) of every evaluator over training, with the detected events."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from coopetition.plots.common import colour, headline
from coopetition.task.evaluators import EvaluatorSpec

EVENT_STYLE = {"icl_peak": ("ICL peak", "#d62728", "top center"),
               "icl_eval_peak": ("ICL-eval peak", "#1f77b4", "top right"),
               "crossover": ("ICL/CIWL crossover", "#ff7f0e", "bottom right")}
EVENTS = tuple(EVENT_STYLE)  # the event rows of strategies.csv (``analysis.strategies.EVENTS``; a test checks both)


def at_last_step(event_step: float, curves: pd.DataFrame) -> bool:
    """A maximum on the run's last eval step is not a peak: the curve may still be rising."""
    return len(curves) > 0 and int(event_step) >= int(curves["step"].max())


def figure(table: pd.DataFrame, specs: Mapping[str, EvaluatorSpec] | None = None) -> go.Figure:
    """Each evaluator's headline metric (its spec's) and loss over training; ``specs``: the run's evaluators."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.09,
                        subplot_titles=("in-context accuracy (IWL: full-vocabulary accuracy)", "loss"))
    curves = table[~table["metric"].isin(EVENTS)]
    for evaluator in curves["evaluator"].unique():
        metric = headline(evaluator, specs)
        for row, m in ((1, metric), (2, "loss")):
            s = curves[(curves["evaluator"] == evaluator) & (curves["metric"] == m)].sort_values("step")
            fig.add_trace(go.Scatter(x=s["step"], y=s["value"], mode="lines" if len(s) > 20 else "lines+markers",
                                     marker=dict(size=5), name=evaluator, legendgroup=evaluator,
                                     showlegend=row == 1, line=dict(color=colour(evaluator, specs)),
                                     customdata=s["sequences"],
                                     hovertemplate=f"{evaluator}<br>step %{{x}}<br>%{{customdata}} sequences"
                                                   "<br>%{y:.3f}<extra></extra>"), row, 1)
    fig.add_hline(y=0.5, line=dict(dash="dash", color="grey"), row=1, col=1,
                  annotation_text="chance (2 labels)", annotation_position="bottom left",
                  annotation_font=dict(size=10, color="grey"))
    last = int(curves["step"].max()) if len(curves) else 0
    for _, event in table[table["metric"].isin(EVENTS)].iterrows():
        label, tint, place = EVENT_STYLE[event["metric"]]
        if event["metric"] != "crossover" and at_last_step(event["step"], curves):
            label = f"{label}: not yet peaked (max at the last step)"
        # labels near the right edge open to the left, so none is cut off
        place = place.replace("right", "left") if last and event["step"] > 0.7 * last else place
        if place.endswith("center") and last and event["step"] > 0.7 * last:
            place = place.replace("center", "left")
        fig.add_vline(x=event["step"], line=dict(dash="dot", color=tint))
        fig.add_trace(go.Scatter(x=[event["step"]], y=[event["value"]], mode="markers+text", text=[label],
                                 textposition=place, marker=dict(size=10, color=tint, symbol="diamond"),
                                 textfont=dict(color=tint), name=label, cliponaxis=False,
                                 hovertemplate=f"{label}<br>step %{{x}}<br>%{{y:.3f}}<extra></extra>"), 1, 1)
    fig.update_yaxes(range=[-0.02, 1.08], title_text="in-context accuracy", row=1, col=1)
    fig.update_yaxes(title_text="cross-entropy loss (nats)", row=2, col=1)
    fig.update_xaxes(title_text="optimizer step", row=2, col=1)
    if curves["step"].nunique() == 1:  # one analysed step: one tick, not 1499, 1499.5, ...
        fig.update_xaxes(tickvals=[int(curves["step"].iloc[0])])
    fig.update_layout(title="Strategies over training: each evaluator's in-context accuracy and loss", height=720,
                      width=1200, template="plotly_white", margin=dict(t=110),
                      updatemenus=[dict(type="buttons", direction="left", x=1.0, xanchor="right", y=1.1,
                                        buttons=[dict(label="linear x", method="relayout",
                                                      args=[{"xaxis.type": "linear", "xaxis2.type": "linear"}]),
                                                 dict(label="log x", method="relayout",
                                                      args=[{"xaxis.type": "log", "xaxis2.type": "log"}])])])
    return fig
