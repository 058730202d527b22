"""The scorecard page: for one checkpoint at a time (slider), a table of every check (paper, measured, the band we
call agreement, verdict) and a dot chart of paper vs measured; positions in sequences on their own log axis."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from coopetition.plots.common import step_axis

VERDICT_COLOUR = {"as paper": "#2ca02c", "differs": "#d62728", "not compared": "#7f7f7f",
                  "cannot judge": "#e6ab02"}
CELL_TINT = {"as paper": "#e8f5e9", "differs": "#fdecea", "not compared": "#f4f4f4", "cannot judge": "#fff6d5"}
# A peak found on the run's last step is no peak (the curve may still rise): checks built on it cannot be judged.
PEAK_CHECKS = {"flip": ("flip_peak", "flip_peak_fraction"), "icl_eval": ("icl_eval_peak", "icl_eval_peak_fraction")}
CANNOT_JUDGE = "cannot judge: the peak is on the run's last step (not yet peaked)"


def unjudgeable(rows: pd.DataFrame) -> set[str]:
    """Checks of one checkpoint's rows that this run cannot judge: those resting on a peak at fraction 1."""
    measured = dict(zip(rows["check"], rows["measured"]))
    out: set[str] = set()
    for checks in PEAK_CHECKS.values():
        fraction = measured.get(checks[1])
        if fraction is not None and not pd.isna(fraction) and fraction >= 1.0:
            out |= set(checks) | {"peak_ratio"}
    return out


def verdict(row: pd.Series, unjudged: set[str] = frozenset()) -> str:
    if row["check"] in unjudged:
        return "cannot judge"
    if pd.isna(row["low"]) or pd.isna(row["measured"]):
        return "not compared"
    return "as paper" if row["low"] <= row["measured"] <= row["high"] else "differs"


def _fmt(value: float, unit: str) -> str:
    if pd.isna(value):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if unit == "sequences":
        return f"{value / 1e6:.3g}M"
    return f"{value:.4g}"


def _band(row: pd.Series) -> str:
    if pd.isna(row["low"]):
        return "—"
    low = "(0" if 0 < row["low"] < 1e-6 else f"[{_fmt(row['low'], row['unit'])}"  # "> 0" bands
    return f"{low}, {_fmt(row['high'], row['unit'])}]"


def _table(rows: pd.DataFrame, visible: bool) -> go.Table:
    unjudged = unjudgeable(rows)
    verdicts = rows.apply(verdict, axis=1, unjudged=unjudged)
    columns = {"check": rows["check"], "section": rows["section"], "unit": rows["unit"],
               "paper": [_fmt(v, u) if not pd.isna(v) else "(words)" for v, u in zip(rows["paper"], rows["unit"])],
               "measured": [_fmt(v, u) for v, u in zip(rows["measured"], rows["unit"])],
               "agreement band": rows.apply(_band, axis=1), "verdict": verdicts}
    tint = [CELL_TINT[v] for v in verdicts]
    return go.Table(header=dict(values=[f"<b>{c}</b>" for c in columns], align="left", fill_color="#dddddd"),
                    cells=dict(values=list(columns.values()), align="left", fill_color=[tint] * len(columns),
                               height=22),
                    columnwidth=[2.2, 1.4, 1.8, 0.9, 0.9, 1.2, 0.9], visible=visible)


def _dots(rows: pd.DataFrame, visible: bool, clip: tuple[float, float], unjudged: set[str]) -> list[go.Scatter]:
    """Band segments, paper diamonds and measured circles (coloured by verdict) for the given rows."""
    band_x, band_y = [], []
    for _, r in rows[rows["low"].notna()].iterrows():
        band_x += [max(r["low"], clip[0]), min(r["high"], clip[1]), None]
        band_y += [r["check"], r["check"], None]
    colours = [VERDICT_COLOUR[v] for v in rows.apply(verdict, axis=1, unjudged=unjudged)] if len(rows) else []
    return [go.Scatter(x=band_x, y=band_y, mode="lines", line=dict(color="rgba(44,160,44,0.35)", width=8),
                       name="agreement band", legendgroup="band", showlegend=False, hoverinfo="skip",
                       visible=visible),
            go.Scatter(x=rows["paper"], y=rows["check"], mode="markers", name="paper",
                       marker=dict(symbol="diamond", size=11, color="black"), legendgroup="paper", showlegend=False,
                       customdata=rows["section"], visible=visible,
                       hovertemplate="%{y}<br>paper %{x:.4g}<br>%{customdata}<extra></extra>"),
            go.Scatter(x=rows["measured"], y=rows["check"], mode="markers", name="measured",
                       marker=dict(symbol="circle", size=10, color=colours, line=dict(color="white", width=1)),
                       legendgroup="measured", showlegend=False, visible=visible,
                       hovertemplate="%{y}<br>measured %{x:.4g}<extra></extra>")]


def title(step: int, sequences: int) -> str:
    return (f"Scorecard at checkpoint step {step} ({sequences / 1e6:.3g}M sequences): the paper's checks "
            "(REFERENCE §9.5-9.8) against this run")


def figure(table: pd.DataFrame) -> go.Figure:
    steps = step_axis(table)
    first = table[table["step"] == steps[0]]
    n_lin = int((first["unit"] != "sequences").sum()) or 1
    n_log = int((first["unit"] == "sequences").sum()) or 1
    pixels = [23 * len(first) + 60, 22 * n_lin + 60, 30 * n_log + 60]  # table, dot chart, log chart
    fig = make_subplots(rows=3, cols=1, specs=[[{"type": "table"}], [{"type": "xy"}], [{"type": "xy"}]],
                        row_heights=[p / sum(pixels) for p in pixels], vertical_spacing=60 / sum(pixels),
                        subplot_titles=("", "paper ◆ vs measured ● (accuracies, deltas, fractions, ratios)",
                                        "positions in training, sequences (log; not compared: scales differ)"))
    linear = table[table["unit"] != "sequences"]
    finite = pd.concat([linear["paper"], linear["measured"]]).dropna()
    clip = (min(-0.1, float(finite.min()) - 0.05) if len(finite) else -0.1,
            max(1.1, float(finite.max()) + 0.1) if len(finite) else 1.1)
    owners = []
    for i, step in enumerate(steps):
        rows = table[table["step"] == step]
        show = i == len(steps) - 1
        fig.add_trace(_table(rows, show), row=1, col=1)
        unjudged = unjudgeable(rows)
        for trace in _dots(rows[rows["unit"] != "sequences"].iloc[::-1], show, clip, unjudged):
            fig.add_trace(trace, row=2, col=1)
        for trace in _dots(rows[rows["unit"] == "sequences"].iloc[::-1], show, clip, unjudged):
            fig.add_trace(trace, row=3, col=1)
        owners += [i] * 7
    for name, style in (("paper", dict(symbol="diamond", color="black")),
                        ("measured: as paper", dict(color=VERDICT_COLOUR["as paper"])),
                        ("measured: differs", dict(color=VERDICT_COLOUR["differs"])),
                        ("measured: not compared", dict(color=VERDICT_COLOUR["not compared"])),
                        ("measured: cannot judge on this run", dict(color=VERDICT_COLOUR["cannot judge"]))):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", marker=dict(size=10, **style), name=name),
                      row=2, col=1)
        owners.append(-1)
    sequences = {int(s): int(q) for s, q in zip(table["step"], table["sequences"])}
    sliders = [dict(active=len(steps) - 1, currentvalue=dict(prefix="checkpoint step "), pad=dict(t=30),
                    steps=[dict(label=f"{step} ({sequences[step] / 1e6:.3g}M seq)", method="update",
                                args=[{"visible": [o in (i, -1) for o in owners]},
                                      {"title.text": title(step, sequences[step])}])
                           for i, step in enumerate(steps)])]
    fig.update_xaxes(range=list(clip), zeroline=True, row=2, col=1)
    fig.update_xaxes(type="log", row=3, col=1)
    fig.update_yaxes(automargin=True)
    fig.update_xaxes(title_text="value (unit per row: see the table)", row=2, col=1)
    fig.update_xaxes(title_text="position in training (sequences, log scale)", row=3, col=1)
    fig.update_yaxes(title_text="check", row=2, col=1)
    fig.update_yaxes(title_text="check", row=3, col=1)
    fig.update_layout(title=title(steps[-1], sequences[steps[-1]]),
                      template="plotly_white", height=sum(pixels) + 120 + 200, width=1300, sliders=sliders,
                      margin=dict(t=110, b=40), legend=dict(orientation="h", y=0.99, yanchor="top", x=1.0,
                                                            xanchor="right", yref="container"))
    return fig
