"""Linear-probe accuracy over training: for each target a (layer boundary, token) x checkpoint heatmap, a dropdown
over evaluators."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from coopetition.plots.common import colour_bar, evaluator_menu, preferred, step_axis
from coopetition.plots.patching import token_names



def figure(table: pd.DataFrame) -> go.Figure:
    acc = table[table["metric"] == "heldout_acc"]
    keys = ["step", "evaluator", "target", "layer", "position"]
    chance = table[table["metric"] == "chance"][keys + ["value"]].rename(columns={"value": "chance"})
    acc = acc.merge(chance, on=keys, how="left") if len(chance) else acc.assign(chance=float("nan"))
    steps = step_axis(acc)
    evaluators = list(acc["evaluator"].unique())
    targets = sorted(acc["target"].unique(), key=lambda t: (t.rstrip("0123456789"), t))
    n_pos = int(acc["position"].max()) + 1
    tokens = token_names(n_pos)
    cols = 2
    n_rows = math.ceil(len(targets) / cols)
    n_sites = int(acc[["target", "layer", "position"]].drop_duplicates().groupby("target").size().max()) if len(acc) \
        else 1
    panel = 22 * n_sites + 90
    height = panel * n_rows + 200
    fig = make_subplots(rows=n_rows, cols=cols, subplot_titles=[f"target: {t}" for t in targets],
                        vertical_spacing=90 / height, horizontal_spacing=0.14)
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
            odds = cells.pivot_table(index="site", columns="step", values="chance", sort=False)
            odds = odds.reindex(index=grid.index, columns=steps)
            place = (t_index // cols + 1, t_index % cols + 1)
            fig.add_trace(go.Heatmap(z=grid.values, x=[str(s) for s in steps], y=list(grid.index), zmin=0, zmax=1,
                                     colorscale="Viridis", visible=e_index == shown, showscale=t_index == 0,
                                     colorbar=colour_bar("held-out probe accuracy (0-1)"), customdata=odds.values,
                                     hovertemplate=f"{evaluator} · {target}<br>%{{y}}<br>step %{{x}}<br>"
                                                   "acc %{z:.3f} (chance %{customdata:.3f})<extra></extra>"), *place)
            owners.append(e_index)
            # the chance line of a heatmap: every cell no better than chance (majority class) gets a cross
            low = [(str(s), site) for site in grid.index for s in steps
                   if not math.isnan(grid.at[site, s]) and grid.at[site, s] <= odds.at[site, s] + 1e-9]
            fig.add_trace(go.Scatter(x=[x for x, _ in low] or [None], y=[y for _, y in low] or [None], mode="markers",
                                     marker=dict(symbol="x-thin", size=9, line=dict(width=2, color="white")),
                                     name="at or below chance (majority class)", legendgroup="chance",
                                     showlegend=False, visible=e_index == shown,
                                     hoverinfo="skip"), *place)
            owners.append(e_index)
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="× at or below chance (majority class)",
                             marker=dict(symbol="x-thin", size=9, line=dict(width=2, color="black"))), 1, 1)
    owners.append(-1)
    fig.update_xaxes(type="category", title_text="checkpoint (optimizer step)", title_standoff=2)
    fig.update_yaxes(autorange="reversed", tickfont=dict(size=11), title_text="site: resid layer · token",
                     title_standoff=2)
    menu = evaluator_menu(evaluators, [[o in (i, -1) for o in owners] for i in range(len(evaluators))],
                          active=shown, y=1.0)
    for button, evaluator in zip(menu["buttons"], evaluators):
        button.update(method="update", args=[button["args"][0], {"title.text": title(evaluator)}])
    fig.update_layout(title=title(evaluators[shown] if evaluators else "-"), template="plotly_white", height=height,
                      width=1250, margin=dict(t=120), updatemenus=[menu],
                      legend=dict(orientation="h", x=0.45, xanchor="left", y=1 - 55 / height, yanchor="top",
                                  yref="container"))
    return fig


def title(evaluator: str) -> str:
    return f"Linear probes over training on <b>{evaluator}</b> sequences: held-out accuracy per residual-stream site"
