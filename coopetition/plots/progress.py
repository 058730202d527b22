"""Progress measures per head over training (lines; dropdown over evaluators) and mean attention patterns per head
(heatmaps; slider over checkpoints; one file per evaluator)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from coopetition.plots.common import (LAYER_DASHES, colour_bar, evaluator_menu, head_colour, placed, preferred,
                                      step_axis)
from coopetition.plots.patching import token_names

PANELS = (("prev_token_score", "first"), ("label_to_prev", "first"), ("label_to_self", "first"),
          ("induction_strength", "last"), ("dla", "last"), ("copy_score", "last"))


def figure(table: pd.DataFrame) -> go.Figure:
    evaluators = list(table["evaluator"].unique())
    last = int(table["layer"].max())
    titles = [f"{m} (layer {0 if w == 'first' else last})" for m, w in PANELS]
    fig = make_subplots(rows=3, cols=2, subplot_titles=[titles[i] for i in (0, 3, 1, 4, 2, 5)],
                        vertical_spacing=0.1)
    places = {0: (1, 1), 1: (2, 1), 2: (3, 1), 3: (1, 2), 4: (2, 2), 5: (3, 2)}
    shown = preferred(evaluators)
    owners = []
    for e_index, evaluator in enumerate(evaluators):
        for p_index, (measure, which) in enumerate(PANELS):
            layer = 0 if which == "first" else last
            rows = table[(table["evaluator"] == evaluator) & (table["measure"] == measure) & (table["layer"] == layer)]
            for head, s in rows.groupby("head"):
                s = s.sort_values("step")
                # colour: head index; dash and marker: layer (the two layers' heads share colours)
                fig.add_trace(go.Scatter(x=s["step"], y=s["value"], mode="lines+markers",
                                         marker=dict(size=6 if layer else 5, symbol="square" if layer else "circle"),
                                         name=f"L{layer}H{head}", legendgroup=f"layer{layer}",
                                         legendgrouptitle_text=f"layer {layer} ({'left' if layer == 0 else 'right'}"
                                                               f" column{', dashed' if layer else ''})",
                                         showlegend=p_index in (0, 3) and e_index == shown, visible=e_index == shown,
                                         line=dict(color=head_colour(int(head)),
                                                   dash=LAYER_DASHES[min(layer, len(LAYER_DASHES) - 1)]),
                                         hovertemplate=f"L{layer}H{head}<br>step %{{x}}<br>%{{y:.3f}}<extra></extra>"),
                              *places[p_index])
                owners.append(e_index)
            direct = table[(table["evaluator"] == evaluator) & (table["measure"] == measure) & (table["layer"] < 0)]
            if measure == "dla" and len(direct):
                direct = direct.sort_values("step")
                fig.add_trace(go.Scatter(x=direct["step"], y=direct["value"], mode="lines", name="embeddings (direct)",
                                         line=dict(color="black", dash="dash"), visible=e_index == shown,
                                         showlegend=e_index == shown,
                                         hovertemplate="direct path<br>step %{x}<br>%{y:.3f}<extra></extra>"),
                              *places[p_index])
                owners.append(e_index)
    fig.update_xaxes(title_text="optimizer step", row=3)
    for (r, c), unit in zip(((1, 1), (2, 1), (3, 1), (1, 2), (2, 2), (3, 2)),
                            ("score", "attention weight", "attention weight", "attention diff.", "logit",
                             "logit")):
        fig.update_yaxes(title_text=unit, row=r, col=c)
    menu = evaluator_menu(evaluators, [[o == i for o in owners] for i in range(len(evaluators))], active=shown,
                          y=1.06)
    for button, evaluator in zip(menu["buttons"], evaluators):
        button.update(method="update", args=[button["args"][0], {"title.text": progress_title(evaluator)}])
    fig.update_layout(title=progress_title(evaluators[shown] if evaluators else "-"), template="plotly_white",
                      height=980, width=1250, margin=dict(t=120), updatemenus=[menu],
                      legend=dict(groupclick="toggleitem"))
    return fig


def progress_title(evaluator: str) -> str:
    return f"Progress measures per head over training, on <b>{evaluator}</b> sequences"


def attention_figure(table: pd.DataFrame, evaluator: str) -> go.Figure:
    rows = table[table["evaluator"] == evaluator]
    steps = step_axis(rows)
    n_layers, n_heads = int(rows["layer"].max()) + 1, int(rows["head"].max()) + 1
    n_pos = int(rows["query_pos"].max()) + 1
    tokens = token_names(n_pos)
    grid = np.full((len(steps), n_layers, n_heads, n_pos, n_pos), np.nan)  # NaN above the causal diagonal
    step_index = {s: i for i, s in enumerate(steps)}
    grid[rows["step"].map(step_index).to_numpy(), rows["layer"].to_numpy(), rows["head"].to_numpy(),
         rows["query_pos"].to_numpy(), rows["key_pos"].to_numpy()] = rows["value"].to_numpy()
    layout = make_subplots(rows=n_layers, cols=n_heads, horizontal_spacing=0.02, vertical_spacing=0.08,
                           subplot_titles=[f"L{l}H{h}" for l in range(n_layers) for h in range(n_heads)])
    owners, traces, places = [], [], []
    blues = go.Heatmap(colorscale="Blues").colorscale  # plotly's expansion of the name (the traces skip validation)
    for s_index in range(len(steps)):
        for layer in range(n_layers):
            for head in range(n_heads):
                traces.append(dict(type="heatmap", z=grid[s_index, layer, head], x=tokens, y=tokens, zmin=0, zmax=1,
                                         colorscale=blues, visible=s_index == len(steps) - 1,
                                         showscale=layer == 0 and head == 0,
                                         colorbar=colour_bar("mean attention weight (0-1)", length=260),
                                         hovertemplate=f"L{layer}H{head} step {steps[s_index]}<br>query %{{y}} → "
                                                       "key %{x}<br>weight %{z:.3f}<extra></extra>"))
                places.append((layer + 1, head + 1))
                owners.append(s_index)
    sliders = [dict(active=len(steps) - 1, currentvalue=dict(prefix="checkpoint step "), pad=dict(t=70),
                    steps=[dict(label=str(step), method="update", args=[{"visible": [o == i for o in owners]},
                                                                         {"title.text": attention_title(evaluator,
                                                                                                        step)}])
                           for i, step in enumerate(steps)])]
    layout.update_yaxes(autorange="reversed")
    layout.update_yaxes(title_text="query token", col=1)
    layout.update_xaxes(title_text="key token", row=n_layers)
    layout.update_layout(title=attention_title(evaluator, steps[-1]), template="plotly_white",
                         height=280 * n_layers + 200, width=max(900, 150 * n_heads + 160), margin=dict(t=110))
    fig = placed(layout, traces, places)  # a heatmap per checkpoint and head: plain dicts, not validated one by one
    fig.update_layout(sliders=sliders)
    return fig


def attention_title(evaluator: str, step: int) -> str:
    return (f"Mean attention pattern per head on {evaluator} sequences at step {step} "
            "(row: query token, column: key token)")
