"""Activation patching figures: layer x position (residual) and head x position (head output) heatmaps with a
slider over checkpoints; head x checkpoint heatmaps per component; attribution against exact patching."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from coopetition.plots.common import DIVERGING, evaluator_menu, step_axis

CAPTION_POSITIONS = ("Normalised logit difference restored by patching one clean activation into the corrupted run: "
                     "residual stream per layer boundary x token position (top) and each head's output per position "
                     "(bottom), one column per clean/corrupted pair; the slider picks the checkpoint.")
CAPTION_HEADS = ("Per-head patching over training: head output (z), queries, keys, values or attention pattern of "
                 "each head, exact or attribution (gradient) estimate (menu), one column per pair.")
CAPTION_ATTRIBUTION = ("Attribution patching against exact patching for every head's output at every checkpoint "
                       "(top) and their agreement over training (bottom: Spearman rank correlation; sign agreement "
                       "on the three largest effects).")


def token_names(n_pos: int) -> list[str]:
    """``x1 y1 x2 y2 ... q``: exemplar i at 2i, its label at 2i+1, the query last."""
    return [f"{'xy'[p % 2]}{p // 2 + 1}" for p in range(n_pos - 1)] + ["q"]


def _heat(grid: pd.DataFrame, x: list[str], y: list[str], visible: bool, showscale: bool) -> go.Heatmap:
    return go.Heatmap(z=grid.values, x=x, y=y, zmin=-1, zmax=1, zmid=0, colorscale=DIVERGING, visible=visible,
                      showscale=showscale, colorbar=dict(title="norm. LD"),
                      hovertemplate="%{y}<br>%{x}<br>%{z:.3f}<extra></extra>")


def positions_figure(table: pd.DataFrame) -> go.Figure:
    exact = table[table["kind"] == "exact"]
    pairs, steps = list(exact["pair"].unique()), step_axis(exact)
    n_pos = int(exact["position"].max()) + 1
    tokens = token_names(n_pos)
    fig = make_subplots(rows=2, cols=len(pairs), subplot_titles=pairs + [""] * len(pairs), vertical_spacing=0.1)
    owners, traces, rows, cols = [], [], [], []
    for s_index, step in enumerate(steps):
        at = exact[exact["step"] == step]
        for c, pair in enumerate(pairs, start=1):
            p = at[at["pair"] == pair]
            resid = p[p["component"] == "resid"].pivot_table(index="layer", columns="position", values="value")
            resid = resid.reindex(columns=range(n_pos))
            traces.append(_heat(resid, tokens, [f"resid {l}" for l in resid.index], s_index == len(steps) - 1,
                                c == 1))
            heads = p[(p["component"] == "z") & (p["position"] >= 0)]
            grid = heads.assign(unit="L" + heads["layer"].astype(str) + "H" + heads["head"].astype(str))
            grid = grid.pivot_table(index="unit", columns="position", values="value", sort=False)
            traces.append(_heat(grid.reindex(columns=range(n_pos)), tokens, list(grid.index),
                                s_index == len(steps) - 1, False))
            owners += [s_index, s_index]
            rows += [1, 2]
            cols += [c, c]
    fig.add_traces(traces, rows=rows, cols=cols)
    sliders = [dict(active=len(steps) - 1, currentvalue=dict(prefix="step "), pad=dict(t=40),
                    steps=[dict(label=str(step), method="restyle",
                                args=[{"visible": [o == i for o in owners]}]) for i, step in enumerate(steps)])]
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title="Activation patching by position", template="plotly_white", sliders=sliders,
                      height=900, width=max(700, 380 * len(pairs)))
    return fig


def heads_figure(table: pd.DataFrame) -> go.Figure:
    rows = table[table["kind"].isin(["exact", "attribution"]) & (table["position"] == -1)
                 & (table["component"] != "resid") & (table["layer"] >= 0)]
    pairs, steps = list(rows["pair"].unique()), step_axis(rows)
    choices = [(c, k) for c in ("z", "q", "k", "v", "pattern") for k in ("exact", "attribution")]
    fig = make_subplots(rows=1, cols=len(pairs), subplot_titles=pairs, shared_yaxes=True)
    owners = []
    for i, (component, kind) in enumerate(choices):
        part = rows[(rows["component"] == component) & (rows["kind"] == kind)]
        for c, pair in enumerate(pairs, start=1):
            p = part[part["pair"] == pair]
            p = p.assign(unit="L" + p["layer"].astype(str) + "H" + p["head"].astype(str))
            grid = p.pivot_table(index="unit", columns="step", values="value", sort=False).reindex(columns=steps)
            fig.add_trace(_heat(grid, [str(s) for s in steps], list(grid.index), i == 0, c == 1), 1, c)
            owners.append(i)
    menu = evaluator_menu([f"{c} · {k}" for c, k in choices], [[o == i for o in owners] for i in range(len(choices))],
                          y=1.08)
    fig.update_xaxes(type="category", title_text="step")
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title="Per-head patching over training (component · method: menu)", template="plotly_white",
                      updatemenus=[menu], height=650, width=max(700, 420 * len(pairs)))
    return fig


def attribution_figure(table: pd.DataFrame) -> go.Figure:
    heads = table[(table["component"] == "z") & (table["position"] == -1) & (table["layer"] >= 0)]
    keys = ["step", "pair", "layer", "head"]
    both = heads[heads["kind"] == "exact"].merge(heads[heads["kind"] == "attribution"], on=keys,
                                                 suffixes=("_exact", "_attr"))
    agree = table[table["kind"] == "agreement"]
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.12,
                        subplot_titles=("per-head effect: attribution vs exact", "agreement over training"))
    for pair in both["pair"].unique():
        p = both[both["pair"] == pair]
        fig.add_trace(go.Scatter(x=p["value_exact"], y=p["value_attr"], mode="markers", name=pair, opacity=0.6,
                                 text=[f"step {s} L{l}H{h}" for s, l, h in zip(p["step"], p["layer"], p["head"])],
                                 hovertemplate="%{text}<br>exact %{x:.3f}<br>attribution %{y:.3f}"), 1, 1)
    if len(both):
        lo = float(min(both["value_exact"].min(), both["value_attr"].min()))
        hi = float(max(both["value_exact"].max(), both["value_attr"].max()))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dash", color="grey"),
                                 name="y = x"), 1, 1)
    for (pair, metric), p in agree.groupby(["pair", "metric"]):
        if metric == "top1_match":
            continue
        p = p.sort_values("step")
        fig.add_trace(go.Scatter(x=p["step"], y=p["value"], mode="lines+markers", name=f"{pair}: {metric}"), 2, 1)
    fig.update_xaxes(title_text="exact (normalised LD)", row=1, col=1)
    fig.update_yaxes(title_text="attribution", row=1, col=1)
    fig.update_xaxes(title_text="step", row=2, col=1)
    fig.update_layout(title="Attribution patching vs exact patching", template="plotly_white", height=850)
    return fig
