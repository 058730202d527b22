"""Head ablation: units x checkpoints heatmaps of the change in in-context accuracy, one panel per method, a
dropdown over evaluators."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from coopetition.analysis.ablation import HEAD_METHODS
from coopetition.plots.common import DIVERGING, evaluator_menu, preferred, step_axis

CAPTION = ("Change in in-context accuracy when a head (L{layer}H{head}, layers 0-indexed), a whole layer, all heads "
           "or the token embedding is ablated (zero, mean, resample; zero with patterns or values kept from the clean "
           "pass), the Q/K/V-composition test and token-embedding ablation. Red: the ablation lowers the evaluator's "
           "in-context accuracy; blue: raises it (e.g. Flip rises when a CIWL head is removed). Pick the evaluator.")
EXTRA = "composition & embedding"


def _panels(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    heads = table[table["unit"] != "token_embed"]
    panels = [(m, heads[heads["method"] == m]) for m in HEAD_METHODS]
    extra = table[table["method"].isin(["qkv_composition"]) | (table["unit"] == "token_embed")]
    extra = extra.assign(unit=extra["unit"] + " (" + extra["method"].str.replace("qkv_composition", "L0 zero") + ")")
    return [p for p in panels + [(EXTRA, extra)] if len(p[1])]


def figure(table: pd.DataFrame, metric: str = "in_context_acc") -> go.Figure:
    table = table[(table["metric"] == metric) & (table["method"] != "clean")]
    steps = step_axis(table)
    evaluators = list(table["evaluator"].unique())
    panels = _panels(table)
    heights = [max(len(p[1]["unit"].unique()), 3) for p in panels]
    fig = make_subplots(rows=len(panels), cols=1, row_heights=heights, vertical_spacing=0.03,
                        subplot_titles=[name for name, _ in panels])
    shown = preferred(evaluators)
    visibility = []
    for e_index, evaluator in enumerate(evaluators):
        for row, (_, panel) in enumerate(panels, start=1):
            cells = panel[panel["evaluator"] == evaluator]
            units = list(dict.fromkeys(panel["unit"]))
            grid = cells.pivot_table(index="unit", columns="step", values="delta").reindex(index=units, columns=steps)
            fig.add_trace(go.Heatmap(z=grid.values, x=[str(s) for s in steps], y=units, zmin=-0.5, zmax=0.5,
                                     colorscale=DIVERGING, reversescale=False, zmid=0, visible=e_index == shown,
                                     colorbar=dict(title="Δ acc"), showscale=row == 1,
                                     hovertemplate="%{y}<br>step %{x}<br>Δ %{z:.3f}<extra></extra>"), row, 1)
            visibility.append(e_index)
    menus = [[v == i for v in visibility] for i in range(len(evaluators))]
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(type="category")
    fig.update_layout(title=f"Head ablation: Δ {metric} (evaluator: menu)", template="plotly_white",
                      height=220 + 16 * sum(heights) + 40 * len(panels),
                      updatemenus=[evaluator_menu(evaluators, menus, active=shown, y=1.0)])
    return fig
