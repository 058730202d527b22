"""Activation clamping: accuracy against the clamped attention strength, one line per head, one panel per clamped
layer and condition, a slider over checkpoints (one page per evaluator; C25 Fig 2b is the CIWL page, "isolated")."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from coopetition.plots.common import head_colour, placed, step_axis

CONDITIONS = ("others_kept", "others_ablated", "isolated")
TITLES = {"induction": "induction clamp, last layer", "prev_token": "previous-token clamp, layer 0"}


def evaluators(table: pd.DataFrame) -> list[str]:
    order = ["ciwl", "train", "flip", "icl"]
    found = list(table["evaluator"].unique())
    return sorted(found, key=lambda e: order.index(e) if e in order else len(order))


def figure(table: pd.DataFrame, evaluator: str, metric: str = "in_context_acc") -> go.Figure:
    rows = table[(table["evaluator"] == evaluator) & (table["metric"] == metric)]
    steps = step_axis(rows)
    kinds = [k for k in ("induction", "prev_token") if k in set(rows["intervention"])]
    conditions = [c for c in CONDITIONS if c in set(rows["condition"])]
    layout = make_subplots(rows=len(kinds), cols=len(conditions), shared_yaxes=True, horizontal_spacing=0.04,
                        vertical_spacing=0.14,
                        subplot_titles=[f"{TITLES[k]} — {c.replace('_', ' ')}" for k in kinds for c in conditions])
    owners, traces, places = [], [], []
    groups = {key: g.sort_values("strength") for key, g in rows.groupby(["step", "intervention", "condition", "head"])}
    panel_heads: dict[tuple, set] = {}  # (step, kind, condition) -> heads, built once (not a scan per panel)
    for (st, k, cond, h) in groups:
        panel_heads.setdefault((st, k, cond), set()).add(h)
    for s_index, step in enumerate(steps):
        for r, kind in enumerate(kinds, start=1):
            for c, condition in enumerate(conditions, start=1):
                heads = sorted(panel_heads.get((step, kind, condition), ()), key=lambda h: int(h.split("H")[1]))
                for head in heads:
                    g = groups[(step, kind, condition, head)]
                    number = int(head.split("H")[1])
                    strength = g["strength"].to_numpy()  # arrays, not Series: plotly converts each Series anew
                    traces.append(dict(  # colour: head index; dotted: layer 0 (legend: each layer's heads)
                        type="scatter",
                        x=strength, y=g["value"].to_numpy(), mode="lines+markers", marker=dict(size=5), name=head,
                        legendgroup=head, showlegend=c == 1, visible=s_index == len(steps) - 1,
                        line=dict(color=head_colour(number), dash="dot" if kind == "prev_token" else "solid"),
                        customdata=2 * strength - 1,
                        hovertemplate=f"{head}<br>S %{{x:.2f}} (delta %{{customdata:.2f}})<br>{metric} %{{y:.3f}}"
                                      "<extra></extra>"))
                    places.append((r, c))
                    owners.append(s_index)
    measured = {(k, cond) for (_, k, cond, _) in groups}
    for r, kind in enumerate(kinds, start=1):
        for c, condition in enumerate(conditions, start=1):
            if (kind, condition) not in measured:  # C25's isolated protocol is defined for the copiers only
                layout.add_annotation(text=f"not measured for {TITLES[kind].split(', ')[1]}", showarrow=False,
                                   x=0.5, y=0.5, row=r, col=c, font=dict(color="grey"))
            # every panel gets the guides (an unmeasured one holds its note)
            layout.add_hline(y=0.5, line=dict(color="grey", dash="dot", width=1), row=r, col=c,
                             exclude_empty_subplots=False)
            layout.add_vline(x=0.5, line=dict(color="grey", dash="dot", width=1), row=r, col=c,
                             exclude_empty_subplots=False)
    sliders = [dict(active=len(steps) - 1, currentvalue=dict(prefix="checkpoint step "), pad=dict(t=50),
                    steps=[dict(label=str(step), method="update", args=[{"visible": [o == i for o in owners]},
                                                                         {"title.text": title(evaluator, step)}])
                           for i, step in enumerate(steps)])]
    layout.update_xaxes(title_text="clamped strength S (attention delta = 2S - 1)", range=[-0.03, 1.03])
    layout.update_yaxes(title_text="in-context accuracy" if metric == "in_context_acc" else metric,
                        range=[-0.03, 1.03], col=1)
    layout.update_layout(title=title(evaluator, steps[-1]), template="plotly_white",
                         height=380 * len(kinds) + 200, width=max(1000, 380 * len(conditions)), margin=dict(t=110))
    fig = placed(layout, traces, places)
    fig.update_layout(sliders=sliders)
    return fig


def title(evaluator: str, step: int) -> str:
    return (f"Activation clamping on {evaluator} sequences at step {step}: in-context accuracy against the clamped "
            "attention strength")
