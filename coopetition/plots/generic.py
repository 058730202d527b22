"""The page an analysis gets when nothing more specific is registered: its table's ``value`` against sequences,
one line per combination of the other descriptive columns (the first ``MAX_LINES``), so a new analysis is visible
in ``index.html`` the moment its class exists."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

MAX_LINES = 60


def generic_figure(table: pd.DataFrame, name: str) -> go.Figure:
    fig = go.Figure()
    if "value" not in table.columns:
        return fig.update_layout(title=f"{name}: no 'value' column to plot", template="plotly_white")
    keys = [c for c in table.columns if c not in ("step", "sequences", "value") and table[c].dtype == object
            or c in ("layer", "head", "position") and c in table.columns]
    groups = list(table.groupby(keys, sort=False)) if keys else [((), table)]
    for key, rows in groups[:MAX_LINES]:
        key = key if isinstance(key, tuple) else (key,)
        label = " ".join(f"{k}={v}" for k, v in zip(keys, key)) or name
        rows = rows.sort_values("sequences")
        fig.add_trace(go.Scatter(x=rows["sequences"], y=rows["value"], mode="lines+markers", name=label,
                                 customdata=rows["step"],
                                 hovertemplate=f"{label}<br>step %{{customdata}}<br>%{{y:.4g}}<extra></extra>"))
    shown = f" (first {MAX_LINES} of {len(groups)} lines)" if len(groups) > MAX_LINES else ""
    fig.update_layout(title=f"{name}{shown}", xaxis_title="sequences", yaxis_title="value", template="plotly_white")
    return fig
