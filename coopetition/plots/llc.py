"""The LLC over training beside the strategy curves (one shared step axis), and each chain's SGLD loss trace."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from coopetition.plots.common import colour, head_colour, headline, step_axis
from coopetition.plots.strategies import EVENT_STYLE, EVENTS
from coopetition.task.evaluators import EvaluatorSpec



def figure(llc: pd.DataFrame, strategies: pd.DataFrame | None = None,
           specs: Mapping[str, EvaluatorSpec] | None = None) -> go.Figure:
    """Rows: strategy curves (if the ``strategies`` table is there), the LLC, the loss at the checkpoint."""
    panels = (["in-context accuracy (IWL: acc)"] if strategies is not None and len(strategies) else []) + \
        ["LLC (mean ± std across chains; dots: chains)", "L(w*): training loss at the checkpoint"]
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.06, subplot_titles=panels,
                        row_heights=[1.0] * len(panels))
    row = 1
    if len(panels) == 3:
        curves = strategies[~strategies["metric"].isin(EVENTS)]
        for evaluator in curves["evaluator"].unique():
            metric = headline(evaluator, specs)
            s = curves[(curves["evaluator"] == evaluator) & (curves["metric"] == metric)].sort_values("step")
            fig.add_trace(go.Scatter(x=s["step"], y=s["value"], mode="lines", name=evaluator,
                                     line=dict(color=colour(evaluator, specs)),
                                     hovertemplate=f"{evaluator}<br>step %{{x}}<br>%{{y:.3f}}<extra></extra>"), 1, 1)
        fig.add_hline(y=0.5, line=dict(dash="dash", color="grey"), row=1, col=1)
        fig.update_yaxes(range=[-0.02, 1.05], title_text="in-context acc", row=1, col=1)
        for _, event in strategies[strategies["metric"].isin(("icl_peak", "crossover"))].iterrows():
            label, tint, _ = EVENT_STYLE[event["metric"]]
            fig.add_vline(x=event["step"], line=dict(dash="dot", color=tint))
            fig.add_annotation(x=event["step"], y=1.0, yref="y domain", text=label, showarrow=False,
                               font=dict(color=tint, size=11), xanchor="left", row=1, col=1)
        row = 2
    summary = llc[llc["chain"] == -1].sort_values("step")
    chains = llc[llc["chain"] >= 0]
    fig.add_trace(go.Scatter(x=summary["step"], y=summary["llc_mean"], mode="lines+markers", name="LLC",
                             line=dict(color="black"), error_y=dict(type="data", array=summary["llc_std"],
                                                                    visible=True),
                             customdata=summary[["llc_std", "init_loss"]],
                             hovertemplate="step %{x}<br>LLC %{y:.2f} ± %{customdata[0]:.2f}<extra></extra>"),
                  row, 1)
    for chain in sorted(chains["chain"].unique()):
        c = chains[chains["chain"] == chain].sort_values("step")
        fig.add_trace(go.Scatter(x=c["step"], y=c["llc_mean"], mode="markers", name=f"chain {chain}",
                                 legendgroup="chains", marker=dict(size=5, color=head_colour(int(chain)), opacity=0.6),
                                 hovertemplate=f"chain {chain}<br>step %{{x}}<br>LLC %{{y:.2f}}<extra></extra>"),
                      row, 1)
    fig.add_hline(y=0, line=dict(color="grey", width=1), row=row, col=1)
    fig.add_trace(go.Scatter(x=summary["step"], y=summary["init_loss"], mode="lines+markers", name="L(w*)",
                             line=dict(color="#8c564b"),
                             hovertemplate="step %{x}<br>L(w*) %{y:.4f}<extra></extra>"), row + 1, 1)
    fig.update_yaxes(title_text="LLC (dimensionless)", row=row, col=1)
    fig.update_yaxes(title_text="loss (nats, log)", type="log", row=row + 1, col=1)
    fig.update_xaxes(title_text="optimizer step", row=len(panels), col=1)
    axes = [f"xaxis{i if i > 1 else ''}.type" for i in range(1, len(panels) + 1)]
    fig.update_layout(title="Local learning coefficient of every checkpoint over training", margin=dict(t=110),
                      height=300 * len(panels) + 140,
                      template="plotly_white",
                      updatemenus=[dict(type="buttons", direction="left", x=1.0, xanchor="right", y=1.06,
                                        buttons=[dict(label="linear x", method="relayout",
                                                      args=[{a: "linear" for a in axes}]),
                                                 dict(label="log x", method="relayout",
                                                      args=[{a: "log" for a in axes}])]),
                                   # late-training LLCs are 100x below the transition's: a log y shows them
                                   dict(type="buttons", direction="left", x=0.0, xanchor="left", y=1.06,
                                        buttons=[dict(label="linear LLC", method="relayout",
                                                      args=[{f"yaxis{row if row > 1 else ''}.type": "linear"}]),
                                                 dict(label="log LLC", method="relayout",
                                                      args=[{f"yaxis{row if row > 1 else ''}.type": "log"}])])])
    return fig


def traces_figure(trace: pd.DataFrame, llc: pd.DataFrame) -> go.Figure:
    """Loss per SGLD step and running LLC of every chain, one checkpoint at a time (slider)."""
    steps = step_axis(trace)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=("loss of each chain's batch at every SGLD step", "running LLC estimate"))
    summary = llc[llc["chain"] == -1].set_index("step")
    owners, traces, places = [], [], []
    for s_index, step in enumerate(steps):
        rows = trace[trace["step"] == step]
        init = float(summary.loc[step, "init_loss"])
        nbeta = float(summary.loc[step, "nbeta"])
        visible = s_index == len(steps) - 1
        for chain in sorted(rows["chain"].unique()):
            c = rows[rows["chain"] == chain].sort_values("sgld_step")
            drawn = c[c["draw"] >= 0]
            running = nbeta * (drawn["loss"].expanding().mean() - init)
            tint = head_colour(int(chain))
            traces += [go.Scatter(x=c["sgld_step"], y=c["loss"], mode="lines", name=f"chain {chain}",
                                  legendgroup=f"c{chain}", showlegend=True, visible=visible,
                                  line=dict(color=tint, width=1)),
                       go.Scatter(x=drawn["sgld_step"], y=running, mode="lines", name=f"chain {chain}",
                                  legendgroup=f"c{chain}", showlegend=False, visible=visible, line=dict(color=tint))]
            places += [(1, 1), (1, 2)]
            owners += [s_index, s_index]
        x = [int(rows["sgld_step"].min()), int(rows["sgld_step"].max())]
        traces.append(go.Scatter(x=x, y=[init, init], mode="lines", name="L(w*)", visible=visible,
                                 line=dict(color="black", dash="dash")))
        places.append((1, 1))
        owners.append(s_index)
    fig.add_traces(traces, rows=[p[0] for p in places], cols=[p[1] for p in places])
    sliders = [dict(active=len(steps) - 1, currentvalue=dict(prefix="step "), pad=dict(t=50),
                    steps=[dict(label=str(step), method="restyle", args=[{"visible": [o == i for o in owners]}])
                           for i, step in enumerate(steps)])]
    fig.update_xaxes(title_text="SGLD step")
    fig.update_yaxes(title_text="loss (nats)", row=1, col=1)
    fig.update_yaxes(title_text="running LLC estimate", row=1, col=2)
    fig.update_layout(title="LLC diagnostics: SGLD loss traces per chain (slider: checkpoint)",
                      template="plotly_white", height=580, margin=dict(t=110),
                      sliders=sliders)
    return fig
