"""Activation patching figures: layer x position (residual) and head x position (head output) heatmaps with a
slider over checkpoints; head x checkpoint heatmaps per component; attribution against exact patching."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from coopetition.plots.common import HELPS_HIGH, LOW_GAP_GREY, colour_bar, evaluator_menu, placed, step_axis



def token_names(n_pos: int) -> list[str]:
    """``x1 y1 x2 y2 ... q``: exemplar i at 2i, its label at 2i+1, the query last."""
    return [f"{'xy'[p % 2]}{p // 2 + 1}" for p in range(n_pos - 1)] + ["q"]


MIN_GAP = 0.1  # below it patching.csv holds NaN (``analysis.patching.MIN_GAP``; a test checks both)
RELIABLE_GAP = 1.0  # logits; below it the normalised value is greyed out (a display choice: the CSV keeps it)
GREY = [[0.0, LOW_GAP_GREY], [1.0, LOW_GAP_GREY]]
GAP_NOTE = (f"Grey cells: the clean − corrupted logit difference (gap) is under {RELIABLE_GAP:g} logit at that "
            f"checkpoint, so the ratio is noise (under {MIN_GAP:g} it is undefined: NaN in patching.csv). "
            "Hover shows value and gap.")
SCALE_TITLE = "restored logit diff. (1 = clean, 0 = corrupted)"


def gaps(table: pd.DataFrame) -> dict[tuple[int, str], float]:
    """``{(step, pair): clean − corrupted logit difference}`` from the baseline rows."""
    base = table[table["kind"] == "baseline"].pivot_table(index=["step", "pair"], columns="component", values="value")
    if not len(base) or not {"clean", "corrupt"} <= set(base.columns):
        return {}
    return {(int(s), p): float(v) for (s, p), v in (base["clean"] - base["corrupt"]).items()}


def reliable(gap: float | None) -> bool:
    return gap is not None and abs(gap) >= RELIABLE_GAP


def _heat(grid: pd.DataFrame, x: list[str], y: list[str], visible: bool, showscale: bool,
          gap: np.ndarray, where: str) -> list[dict]:
    """The value heatmap (cells of a reliable gap) and a grey one over the rest; ``gap`` broadcasts to the grid.
    Plain dicts (``common.placed`` skips validating them one by one); every colour scale is explicit."""
    values = grid.to_numpy(dtype=float)
    gap = np.broadcast_to(np.asarray(gap, dtype=float), values.shape)
    ok = np.abs(np.nan_to_num(gap, nan=0.0)) >= RELIABLE_GAP
    hover = (f"{where}<br>%{{z:.3f}} of the clean logit difference restored<br>gap %{{customdata:.2f}} logit"
             "<extra></extra>")
    grey_hover = (f"{where}<br>value %{{text}} — not shown: gap %{{customdata:.2f}} logit "
                  f"(< {RELIABLE_GAP:g})<extra></extra>")
    text = [["NaN" if v != v else f"{v:.3f}" for v in row] for row in values]
    return [dict(type="heatmap", z=np.where(ok, values, np.nan), x=x, y=y, zmin=-1, zmax=1, zmid=0,
                 colorscale=HELPS_HIGH, visible=visible, showscale=showscale, colorbar=colour_bar(SCALE_TITLE),
                 customdata=gap, hovertemplate=hover),
            dict(type="heatmap", z=np.where(ok, np.nan, 0.0), x=x, y=y, zmin=0, zmax=1, colorscale=GREY,
                 showscale=False, visible=visible, customdata=gap, text=text, hovertemplate=grey_hover,
                 name="low gap")]


def positions_figure(table: pd.DataFrame) -> go.Figure:
    exact = table[table["kind"] == "exact"]
    pairs, steps = list(exact["pair"].unique()), step_axis(exact)
    n_pos = int(exact["position"].max()) + 1
    tokens = token_names(n_pos)
    gap = gaps(table)
    layout = make_subplots(rows=2, cols=len(pairs), subplot_titles=[f"pair {p}" for p in pairs] + [""] * len(pairs),
                           vertical_spacing=0.14)
    owners, traces, places = [], [], []
    parts = dict(tuple(exact.groupby(["step", "pair"], sort=False)))  # one pass, not a scan per step and pair
    empty = exact.iloc[:0]
    for s_index, step in enumerate(steps):
        show = s_index == len(steps) - 1
        for c, pair in enumerate(pairs, start=1):
            p = parts.get((step, pair), empty)
            g = gap.get((step, pair), np.nan)
            resid = p[p["component"] == "resid"].pivot_table(index="layer", columns="position", values="value")
            resid = resid.reindex(columns=range(n_pos))
            traces += _heat(resid, tokens, [f"resid {l}" for l in resid.index], show, c == 1, g,
                            f"{pair} · %{{y}} · token %{{x}} · step {step}")
            heads = p[(p["component"] == "z") & (p["position"] >= 0)]
            grid = heads.assign(unit="L" + heads["layer"].astype(str) + "H" + heads["head"].astype(str))
            grid = grid.pivot_table(index="unit", columns="position", values="value", sort=False)
            traces += _heat(grid.reindex(columns=range(n_pos)), tokens, list(grid.index), show, False, g,
                            f"{pair} · %{{y}} output · token %{{x}} · step {step}")
            owners += [s_index] * 4
            places += [(1, c), (1, c), (2, c), (2, c)]
    sliders = [dict(active=len(steps) - 1, currentvalue=dict(prefix="checkpoint step "), pad=dict(t=60),
                    steps=[dict(label=str(step), method="restyle",
                                args=[{"visible": [o == i for o in owners]}]) for i, step in enumerate(steps)])]
    layout.update_yaxes(autorange="reversed")
    layout.update_yaxes(title_text="residual stream entering layer", row=1, col=1)
    layout.update_yaxes(title_text="head output (L layer H head)", row=2, col=1)
    layout.update_xaxes(title_text="token position (x: exemplar, y: label, q: query)", title_standoff=4)
    layout.add_annotation(text=GAP_NOTE, xref="paper", yref="paper", x=0, y=-0.1, showarrow=False, xanchor="left",
                          font=dict(size=11, color="#555"))
    layout.update_layout(title="Activation patching by position: clean activation patched into the corrupted run",
                         template="plotly_white", height=950, width=max(900, 380 * len(pairs)),
                         margin=dict(t=110, b=170))
    fig = placed(layout, traces, places)
    fig.update_layout(sliders=sliders)
    return fig


def heads_title(component: str, kind: str) -> str:
    names = {"z": "head output", "q": "queries", "k": "keys", "v": "values", "pattern": "attention pattern"}
    return f"Per-head patching over training: {names.get(component, component)} ({component}), {kind} patching"


def heads_figure(table: pd.DataFrame) -> go.Figure:
    rows = table[table["kind"].isin(["exact", "attribution"]) & (table["position"] == -1)
                 & (table["component"] != "resid") & (table["layer"] >= 0)]
    pairs, steps = list(rows["pair"].unique()), step_axis(rows)
    gap = gaps(table)
    choices = [(c, k) for c in ("z", "q", "k", "v", "pattern") for k in ("exact", "attribution")]
    fig = make_subplots(rows=1, cols=len(pairs), subplot_titles=[f"pair {p}" for p in pairs], shared_yaxes=True)
    owners = []
    for i, (component, kind) in enumerate(choices):
        part = rows[(rows["component"] == component) & (rows["kind"] == kind)]
        for c, pair in enumerate(pairs, start=1):
            p = part[part["pair"] == pair]
            p = p.assign(unit="L" + p["layer"].astype(str) + "H" + p["head"].astype(str))
            grid = p.pivot_table(index="unit", columns="step", values="value", sort=False).reindex(columns=steps)
            g = np.array([gap.get((s, pair), np.nan) for s in steps])[None, :]
            for trace in _heat(grid, [str(s) for s in steps], list(grid.index), i == 0, c == 1, g,
                               f"{pair} · %{{y}} {component} · step %{{x}}"):
                fig.add_trace(trace, 1, c)
                owners.append(i)
    menu = evaluator_menu([f"{c} · {k}" for c, k in choices], [[o == i for o in owners] for i in range(len(choices))],
                          y=1.08)
    for button, (component, kind) in zip(menu["buttons"], choices):
        button.update(method="update", args=[button["args"][0], {"title.text": heads_title(component, kind)}])
    fig.update_xaxes(type="category", title_text="checkpoint (optimizer step)")
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(title_text="head (L layer H head)", col=1)
    fig.add_annotation(text=GAP_NOTE, xref="paper", yref="paper", x=0, y=-0.2, showarrow=False, xanchor="left",
                       font=dict(size=11, color="#555"))
    fig.update_layout(title=heads_title(*choices[0]), template="plotly_white", updatemenus=[menu], height=700,
                      width=max(900, 420 * len(pairs)), margin=dict(t=120, b=150))
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
    fig.update_xaxes(title_text="exact patching (normalised logit difference restored)", row=1, col=1)
    fig.update_yaxes(title_text="attribution estimate (same units)", row=1, col=1)
    fig.update_xaxes(title_text="checkpoint (optimizer step)", row=2, col=1)
    fig.update_yaxes(title_text="agreement (Spearman ρ; sign fraction)", range=[-1.05, 1.05], row=2, col=1)
    fig.update_layout(title="Attribution patching vs exact patching, every head's output", template="plotly_white",
                      height=850, margin=dict(t=110))
    return fig
