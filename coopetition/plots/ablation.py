"""Head ablation: units x checkpoints heatmaps of the change in in-context accuracy, one panel per method, a
dropdown over evaluators."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from coopetition.plots.common import HELPS_LOW, colour_bar, evaluator_menu, preferred, range_of, step_axis

EXTRA = "composition & embedding"
MAX_TEXT_STEPS = 12  # cell values are printed while the columns are wide enough to read them


def _panels(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    heads = table[table["unit"] != "token_embed"]
    methods = [m for m in heads["method"].unique() if m != "qkv_composition"]  # the table's order of methods
    panels = [(m, heads[heads["method"] == m]) for m in methods]
    extra = table[table["method"].isin(["qkv_composition"]) | (table["unit"] == "token_embed")]
    extra = extra.assign(unit=extra["unit"] + " (" + extra["method"].str.replace("qkv_composition", "L0 zero") + ")")
    return [p for p in panels + [(EXTRA, extra)] if len(p[1])]


def title(metric: str, evaluator: str) -> str:
    what = "in-context accuracy" if metric == "in_context_acc" else metric
    return f"Head ablation on <b>{evaluator}</b>: change in {what} when a unit is removed (ablated − clean)"


def figure(table: pd.DataFrame, metric: str = "in_context_acc") -> go.Figure:
    table = table[(table["metric"] == metric) & (table["method"] != "clean")]
    steps = step_axis(table)
    evaluators = list(table["evaluator"].unique())
    panels = _panels(table)
    heights = [max(len(p[1]["unit"].unique()), 3) for p in panels]
    height = 240 + 16 * sum(heights) + 90 * len(panels)
    fig = make_subplots(rows=len(panels), cols=1, row_heights=heights, vertical_spacing=90 / height,
                        subplot_titles=[f"method: {name}" for name, _ in panels])
    shown = preferred(evaluators)
    span = range_of(table["delta"])  # one symmetric range for every panel and evaluator: colours compare
    text = len(steps) <= MAX_TEXT_STEPS
    visibility = []
    for e_index, evaluator in enumerate(evaluators):
        for row, (_, panel) in enumerate(panels, start=1):
            cells = panel[panel["evaluator"] == evaluator]
            units = list(dict.fromkeys(panel["unit"]))
            grid = cells.pivot_table(index="unit", columns="step", values="delta").reindex(index=units, columns=steps)
            fig.add_trace(go.Heatmap(z=grid.values, x=[str(s) for s in steps], y=units, zmin=-span, zmax=span,
                                     colorscale=HELPS_LOW, zmid=0, visible=e_index == shown,
                                     colorbar=colour_bar("Δ in-context acc (blue: the unit helps)"),
                                     showscale=row == 1, texttemplate="%{z:.2f}" if text else None,
                                     textfont=dict(size=9),
                                     hovertemplate=f"{evaluator} · %{{y}}<br>step %{{x}}<br>"
                                                   "Δ %{z:+.3f}<extra></extra>"),
                          row, 1)
            visibility.append(e_index)
    menus = [[v == i for v in visibility] for i in range(len(evaluators))]
    menu = evaluator_menu(evaluators, menus, active=shown, y=1.0)
    for button, evaluator in zip(menu["buttons"], evaluators):
        button.update(method="update", args=[button["args"][0], {"title.text": title(metric, evaluator)}])
    fig.update_yaxes(autorange="reversed", title_text="ablated unit", title_standoff=4)
    fig.update_xaxes(type="category", title_text="checkpoint (optimizer step)", title_standoff=2)
    fig.update_layout(title=title(metric, evaluators[shown] if evaluators else "-"), template="plotly_white",
                      height=height, width=1100, margin=dict(t=110),
                      updatemenus=[menu])
    return fig
