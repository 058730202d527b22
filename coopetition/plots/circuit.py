"""The circuit as a graph over training: one page per patching pair, built from ``circuit.csv`` (and, when the
folder has it, ``strategies.csv`` for the curves above the graph).

Columns are layers (embeddings, layer 0, ..., logits); the three embeddings are stacked by position class
(exemplar, label, position) and the heads by index. An edge ends at its receiver's Q (upper), K (middle) or V
(lower) port. Width and colour show the exact path-patching effect (normalised logit difference; blue restores the
clean answer, i.e. helps it, red works against it: the convention of every page, ``plots.common``), binned by
|effect|; the buttons hide the bins below a threshold, the slider (Plotly frames, which change only the data, so the
threshold survives) moves over checkpoints and marks the step on the strategy curves. Hover an edge's midpoint for
both estimators. With fewer than two curve steps (one analysed checkpoint) the page is the graph alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from coopetition.interventions.paths import EMBEDDINGS, LOGITS, parse_head
from coopetition.plots.common import HELPS_RGB, HURTS_RGB, colour, headline, step_axis
from coopetition.plots.strategies import EVENT_STYLE, EVENTS
from coopetition.task.evaluators import EvaluatorSpec

BINS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5)  # lower edges of the |effect| bins
WIDTHS = (0.6, 1.2, 2.0, 3.5, 5.5, 8.0)
ALPHAS = (0.25, 0.4, 0.55, 0.7, 0.85, 1.0)
PORTS = {"q": 0.22, "k": 0.0, "v": -0.22, "direct": 0.0}
SIGNS = (("helps: restores the clean answer", HELPS_RGB), ("hurts: works against it", HURTS_RGB))


def pairs(table: pd.DataFrame) -> list[str]:
    return sorted(table.loc[table["method"] == "exact", "pair"].unique())


def _layout(nodes: list[str]) -> dict[str, tuple[float, float]]:
    """Node -> (x, y): x the layer column, y by head index or embedding class, centred on 0."""
    heads = [parse_head(n) for n in nodes if parse_head(n)]
    n_layers = 1 + max((l for l, _ in heads), default=-1)
    n_heads = 1 + max((h for _, h in heads), default=0)
    span = max(n_heads - 1, 2)
    where = {}
    embeds = [e for e in EMBEDDINGS if e in nodes]
    for i, e in enumerate(embeds):
        where[e] = (0.0, span / 2 - i * span / max(len(embeds) - 1, 1))
    for layer, head in heads:
        where[f"L{layer}H{head}"] = (1.0 + layer, (n_heads - 1) / 2 - head)
    where[LOGITS] = (n_layers + 1.0, 0.0)
    return where


def _bin(value: float) -> int:
    """Index of the |effect| bin (NaN, an undefined ratio, goes to the lowest)."""
    return 0 if math.isnan(value) else max(i for i, low in enumerate(BINS) if abs(value) >= low)


def _edge_traces(edges: pd.DataFrame, where: dict) -> list[dict]:
    """Data of the bin traces for one step: per bin, a line trace per sign then a hover-marker trace."""
    out = []
    bins = edges["exact"].map(_bin)
    for b in range(len(BINS)):
        in_bin = edges[bins == b]
        for s, _ in enumerate(SIGNS):
            part = in_bin[(in_bin["exact"] >= 0) == (s == 0)]
            xs, ys = [], []
            for snd, rcv, inp in zip(part["sender"], part["receiver"], part["input"]):
                (x0, y0), (x1, y1) = where[snd], where[rcv]
                xs += [x0 + 0.06, x1 - 0.09, None]
                ys += [y0, y1 + PORTS[inp], None]
            out.append(dict(x=xs or [None], y=ys or [None]))
        mid_x = [(where[s][0] + where[r][0]) / 2 for s, r in zip(in_bin["sender"], in_bin["receiver"])]
        mid_y = [(where[s][1] + where[r][1] + PORTS[i]) / 2
                 for s, r, i in zip(in_bin["sender"], in_bin["receiver"], in_bin["input"])]
        text = [f"{s} → {r} ({i})<br>exact {e:+.3f}<br>attribution {a:+.3f}" for s, r, i, e, a in
                zip(in_bin["sender"], in_bin["receiver"], in_bin["input"], in_bin["exact"], in_bin["attribution"])]
        out.append(dict(x=mid_x or [None], y=mid_y or [None], text=text or [""]))  # invisible hover targets
    return out


def _strategy_curves(fig: go.Figure, strategies: pd.DataFrame | None,
                     specs: Mapping[str, EvaluatorSpec] | None = None) -> None:
    if strategies is None or not len(strategies):
        return
    curves = strategies[~strategies["metric"].isin(EVENTS)]
    for evaluator in curves["evaluator"].unique():
        metric = headline(evaluator, specs)
        s = curves[(curves["evaluator"] == evaluator) & (curves["metric"] == metric)].sort_values("step")
        fig.add_trace(go.Scatter(x=s["step"], y=s["value"], mode="lines", name=evaluator, legendgroup="curves",
                                 line=dict(color=colour(evaluator, specs)),
                                 hovertemplate=f"{evaluator}<br>step %{{x}}<br>%{{y:.3f}}<extra></extra>"), 1, 1)
    for _, event in strategies[strategies["metric"].isin(EVENTS)].iterrows():
        label, tint, _ = EVENT_STYLE[event["metric"]]
        fig.add_trace(go.Scatter(x=[event["step"]] * 2, y=[0, 1], mode="lines", name=label,
                                 line=dict(color=tint, dash="dot"),
                                 hovertemplate=f"{label}<br>step %{{x}}<extra></extra>"), 1, 1)


def _start(steps: list[int], strategies: pd.DataFrame | None) -> int:
    """The slider starts at the checkpoint nearest the ICL peak (else the last)."""
    if strategies is not None and len(strategies):
        peak = strategies.loc[strategies["metric"] == "icl_peak", "step"]
        if len(peak):
            return min(range(len(steps)), key=lambda i: abs(steps[i] - int(peak.iloc[0])))
    return len(steps) - 1


def _has_curves(strategies: pd.DataFrame | None) -> bool:
    """Curves need two steps at least; one analysed checkpoint gets the graph alone, not an empty axis."""
    if strategies is None or not len(strategies):
        return False
    return strategies.loc[~strategies["metric"].isin(EVENTS), "step"].nunique() >= 2


def figure(table: pd.DataFrame, pair: str, strategies: pd.DataFrame | None = None,
           specs: Mapping[str, EvaluatorSpec] | None = None) -> go.Figure:
    rows = table[(table["pair"] == pair) & table["method"].isin(("exact", "attribution"))]
    wide = rows.pivot_table(index=["step", "sender", "receiver", "input"], columns="method", values="effect",
                            aggfunc="first").reset_index()
    for method in ("exact", "attribution"):
        if method not in wide:
            wide[method] = float("nan")
    steps = step_axis(rows)
    nodes = sorted(set(wide["sender"]) | set(wide["receiver"]))
    where = _layout(nodes)
    curves = _has_curves(strategies)
    graph_title = f"edges of pair {pair}: exact path patching (normalised logit difference; hover an edge's middle)"
    if curves:
        fig = make_subplots(rows=2, cols=1, row_heights=[0.25, 0.75], vertical_spacing=0.1,
                            subplot_titles=("strategies (in-context accuracy; IWL: acc) — the black line marks "
                                            "the step shown", graph_title))
        _strategy_curves(fig, strategies, specs)
    else:
        fig = make_subplots(rows=1, cols=1, subplot_titles=(graph_title,))
    g = 2 if curves else 1  # the graph's row
    first = len(fig.data)
    per_step = {step: _edge_traces(wide[wide["step"] == step], where) for step in steps}
    start = _start(steps, strategies) if curves else len(steps) - 1
    for b, (low, width, alpha) in enumerate(zip(BINS, WIDTHS, ALPHAS)):
        for s, (sign, rgb) in enumerate(SIGNS):
            fig.add_trace(go.Scatter(mode="lines", line=dict(width=width, color=f"rgba({rgb}, {alpha})"), visible=b > 0,
                                     name=f"|effect| ≥ {low} ({sign})", legendgroup=f"bin{b}", showlegend=False,
                                     hoverinfo="skip", **per_step[steps[start]][3 * b + s]), g, 1)
        fig.add_trace(go.Scatter(mode="markers", marker=dict(size=12, color="rgba(0,0,0,0)"), showlegend=False,
                                 visible=b > 0,
                                 hovertemplate="%{text}<extra></extra>", **per_step[steps[start]][3 * b + 2]), g, 1)
    marker = len(fig.data)
    if curves:
        fig.add_trace(go.Scatter(x=[steps[start]] * 2, y=[0, 1], mode="lines", line=dict(color="black", width=2),
                                 name="this step", showlegend=False, hoverinfo="skip"), 1, 1)
    for sign, rgb in SIGNS:  # the colour legend (also shows the line width of a strong edge)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(color=f"rgb({rgb})", width=5),
                                 name=f"edge {sign}", legendgroup="signs"), g, 1)
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(color="grey", width=1),
                             name="width: |effect| (0.6 px < 0.02 … 8 px ≥ 0.5)", legendgroup="signs"), g, 1)
    _nodes(fig, where, g)
    fig.frames = [go.Frame(name=str(step), traces=list(range(first, marker + (1 if curves else 0))),
                           data=[go.Scatter(**d) for d in per_step[step]]
                           + ([go.Scatter(x=[step] * 2, y=[0, 1])] if curves else []))
                  for step in steps]
    slider = dict(active=start, currentvalue=dict(prefix="checkpoint step "), pad=dict(t=30), x=0.0, len=1.0,
                  steps=[dict(label=str(step), method="animate",
                              args=[[str(step)], dict(mode="immediate", frame=dict(duration=0, redraw=True),
                                                      transition=dict(duration=0))]) for step in steps])
    n_bin_traces = 3 * len(BINS)
    buttons = [dict(label=f"|effect| ≥ {low}", method="restyle",
                    args=[{"visible": [i // 3 >= b for i in range(n_bin_traces)]},
                          list(range(first, first + n_bin_traces))]) for b, low in enumerate(BINS) if b]
    buttons.insert(0, dict(label="all edges", method="restyle",
                           args=[{"visible": [True] * n_bin_traces}, list(range(first, first + n_bin_traces))]))
    fig.update_layout(title=f"Circuit over training, pair {pair}: which edges carry the clean answer "
                            f"({'slider: checkpoint' if len(steps) > 1 else f'step {steps[0]}'})",
                      template="plotly_white", height=1000 if curves else 800, width=1300,
                      sliders=[slider] if len(steps) > 1 else [], margin=dict(t=110),
                      legend=dict(y=1.0, yanchor="top"),
                      updatemenus=[dict(type="buttons", direction="down", active=1, x=1.01, xanchor="left", y=0.45,
                                        yanchor="top", buttons=buttons, showactive=True)])
    if curves:
        fig.update_yaxes(range=[-0.02, 1.05], title_text="in-context acc", row=1, col=1)
        fig.update_xaxes(title_text="optimizer step", row=1, col=1)
    fig.update_xaxes(visible=False, row=g, col=1)
    fig.update_yaxes(visible=False, row=g, col=1)
    return fig


def _nodes(fig: go.Figure, where: dict, row: int = 2) -> None:
    names = list(where)
    fig.add_trace(go.Scatter(x=[where[n][0] for n in names], y=[where[n][1] for n in names], mode="markers+text",
                             text=names, textposition="middle center", textfont=dict(size=11, color="#222"),
                             marker=dict(size=[64 if len(n) > 5 else 42 for n in names], color="white",
                                         line=dict(color="#444", width=1.5)),
                             showlegend=False, hoverinfo="skip"), row, 1)
    heads = [n for n in names if parse_head(n)]
    for port, dy in (("q", PORTS["q"]), ("k", PORTS["k"]), ("v", PORTS["v"])):
        fig.add_trace(go.Scatter(x=[where[n][0] - 0.16 for n in heads], y=[where[n][1] + dy for n in heads],
                                 mode="text", text=[port.upper()] * len(heads),
                                 textfont=dict(size=10, color="#333"), showlegend=False, hoverinfo="skip"), row, 1)


def agreement_figure(table: pd.DataFrame) -> go.Figure:
    agree = table[table["method"] == "agreement"]
    fig = go.Figure()
    for (pair, metric), p in agree.groupby(["pair", "input"]):
        if metric == "top1_match":
            continue
        p = p.sort_values("step")
        fig.add_trace(go.Scatter(x=p["step"], y=p["effect"], mode="lines+markers", name=f"{pair}: {metric}",
                                 line=dict(dash="solid" if metric == "spearman" else "dot")))
    fig.update_layout(title="Edge attribution vs exact path patching over training, per pair",
                      template="plotly_white", xaxis_title="checkpoint (optimizer step)",
                      yaxis=dict(title="agreement (Spearman ρ; top-5 overlap fraction)", range=[-1.05, 1.05]),
                      height=550, margin=dict(t=110))
    return fig
