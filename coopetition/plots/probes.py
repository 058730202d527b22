"""Linear-probe accuracy over training: for each target a (layer boundary, token) x checkpoint heatmap, a dropdown
over evaluators."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from coopetition.plots.common import evaluator_menu, preferred, step_axis
from coopetition.plots.patching import token_names

CAPTION = ("Held-out accuracy of linear probes on the residual stream (rows: layer boundary 'resid l' x token; "
           "columns: checkpoints) for the query's class, whether each context exemplar matches the query, the "
           "position of the correct label, each label's identity and each context exemplar's class. Chance "
           "(majority class) is in probes.csv. Pick the evaluator in the menu.")


def figure(table: pd.DataFrame) -> go.Figure:
    acc = table[table["metric"] == "heldout_acc"]
    steps = step_axis(acc)
    evaluators = list(acc["evaluator"].unique())
    targets = sorted(acc["target"].unique(), key=lambda t: (t.rstrip("0123456789"), t))
    n_pos = int(acc["position"].max()) + 1
    tokens = token_names(n_pos)
    cols = 2
    n_rows = math.ceil(len(targets) / cols)
    fig = make_subplots(rows=n_rows, cols=cols, subplot_titles=targets, vertical_spacing=0.35 / max(n_rows, 1),
                        horizontal_spacing=0.12)
    shown = preferred(evaluators)
    owners = []
    for e_index, evaluator in enumerate(evaluators):
        for t_index, target in enumerate(targets):
            cells = acc[(acc["evaluator"] == evaluator) & (acc["target"] == target)]
            # astype(str) after the map: an evaluator without this target leaves ``cells`` empty, the map keeps
            # int64, and pandas 3 refuses to add a text column to a number column even with no rows.
            token = cells["position"].map(lambda p: tokens[int(p)]).astype(str)
            cells = cells.assign(site="resid " + cells["layer"].astype(str) + " · " + token)
            grid = cells.pivot_table(index="site", columns="step", values="value", sort=False).reindex(columns=steps)
            fig.add_trace(go.Heatmap(z=grid.values, x=[str(s) for s in steps], y=list(grid.index), zmin=0, zmax=1,
                                     colorscale="Viridis", visible=e_index == shown, showscale=t_index == 0,
                                     colorbar=dict(title="acc"),
                                     hovertemplate="%{y}<br>step %{x}<br>acc %{z:.3f}<extra></extra>"),
                          t_index // cols + 1, t_index % cols + 1)
            owners.append(e_index)
    fig.update_xaxes(type="category")
    fig.update_yaxes(autorange="reversed", tickfont=dict(size=8))
    fig.update_layout(title="Linear probes over training (evaluator: menu)", template="plotly_white",
                      height=320 * n_rows + 100,
                      updatemenus=[evaluator_menu(evaluators, [[o == i for o in owners]
                                                               for i in range(len(evaluators))], active=shown,
                                                  y=1.02)])
    return fig
