"""What every analysis figure shares: one local plotly.js per output folder, colours, checkpoint axes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from coopetition.task.evaluators import EvaluatorSpec, display_order, spec_for

PLOTLY_JS = "plotly.min.js"
HEAD_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")
LAYER_DASHES = ("solid", "dash", "dot", "dashdot")  # a head's line: colour by head index, dash by layer

# One colour convention on every page: BLUE = the unit helps the clean/correct answer, RED = it hurts it.
# Patching and path patching: a positive normalised logit difference restores the clean answer -> blue.
# Ablation: removing a unit that helps lowers accuracy, a negative delta -> blue (``HELPS_LOW``).
HELPS, HURTS, NEUTRAL = "#2166ac", "#b2182b", "#f7f7f7"
HELPS_RGB, HURTS_RGB = "33, 102, 172", "178, 24, 43"
HELPS_HIGH = [[0.0, HURTS], [0.25, "#ef8a62"], [0.5, NEUTRAL], [0.75, "#67a9cf"], [1.0, HELPS]]  # + helps
HELPS_LOW = [[1.0 - at, c] for at, c in reversed(HELPS_HIGH)]  # - helps (ablation deltas)
DIVERGING = HELPS_HIGH
CONVENTION = "blue: helps the clean answer · red: hurts it"
LOW_GAP_GREY = "#bdbdbd"
PAPER_SIZE = (1000, 700)  # px of an SVG download when a figure sets no size: a full-width paper figure


def colour(evaluator: str, specs: Mapping[str, EvaluatorSpec] | None = None) -> str:
    """The evaluator's colour: its spec's (``specs``, a run's own, else the built-in suites'; see ``spec_for``)."""
    return spec_for(evaluator, specs).colour


def headline(evaluator: str, specs: Mapping[str, EvaluatorSpec] | None = None) -> str:
    """The metric an evaluator's curve plots: its spec's ``headline_metric``."""
    return spec_for(evaluator, specs).headline_metric


def head_colour(head: int) -> str:
    return HEAD_COLOURS[head % len(HEAD_COLOURS)]


def ensure_plotlyjs(out: Path) -> None:
    """Write plotly.js once into the folder; every figure references it relatively (opens offline, DIR stays small)."""
    path = out / PLOTLY_JS
    script = get_plotlyjs()
    if not path.is_file() or path.stat().st_size != len(script.encode()):
        path.write_text(script)


def html_config(fig: go.Figure, name: str) -> dict:
    """Plotly's config: the camera button downloads an SVG (vector, for a paper) at the figure's own size."""
    width = int(fig.layout.width or PAPER_SIZE[0])
    height = int(fig.layout.height or PAPER_SIZE[1])
    return {"responsive": True, "displaylogo": False,
            "toImageButtonOptions": {"format": "svg", "filename": name, "width": width, "height": height, "scale": 1}}


def write_figure(fig: go.Figure, path: Path) -> Path:
    # auto_play off: a figure with frames (circuit's slider) opens on its chosen step instead of playing them all
    fig.write_html(path, include_plotlyjs=PLOTLY_JS, full_html=True, config=html_config(fig, path.stem),
                   auto_play=False)
    return path


def placed(layout: go.Figure, traces: list[dict], places: list[tuple[int, int]]) -> go.Figure:
    """The figure ``layout.add_traces(traces, rows, cols)`` would give: ``layout`` (a ``make_subplots`` figure with
    its axes, annotations and template already set) holding ``traces`` (plain dicts, e.g. ``dict(type="scatter",
    ...)``) in the subplots ``places`` (``(row, col)``), built without plotly's per-trace validation and copies.
    Those cost about 2 ms per trace, most of the drawing time of a page with a trace per checkpoint and head (8,000
    on a 201-checkpoint clamp page); the page's JSON is the same (``tests/test_plots_pages.py``). The returned figure
    does not validate later updates either: do row/col updates (``update_xaxes(row=...)``, ``add_hline``) and
    anything plotly must expand (a ``template`` name) on ``layout`` first."""
    refs: dict[tuple[int, int], dict] = {}
    for trace, (row, col) in zip(traces, places):
        if (row, col) not in refs:
            sub = layout.get_subplot(row, col)
            refs[row, col] = {"xaxis": sub.xaxis.plotly_name.replace("axis", ""),
                              "yaxis": sub.yaxis.plotly_name.replace("axis", "")}
        trace.update(refs[row, col])
    return go.Figure(data=traces, layout=layout.layout, _validate=False)


def colour_bar(title: str, length: int = 320, **extra) -> dict:
    """A colour bar of fixed height at the top right, so all of it is on the first screen of a tall page."""
    return dict(title=dict(text=title, side="right"), lenmode="pixels", len=length, y=1.0, yanchor="top",
                thickness=14, **extra)


def subtitle(fig: go.Figure, line: str) -> go.Figure:
    """Append a smaller second title line (run, steps) to the title, and to every title a menu or slider sets."""
    text = fig.layout.title.text or ""
    fig.update_layout(title=dict(text=f"{text}<br><sup>{line}</sup>", x=0.01, xanchor="left"))
    controls = [b for m in fig.layout.updatemenus or () for b in m.buttons or ()]
    controls += [s for slider in fig.layout.sliders or () for s in slider.steps or ()]
    for control in controls:
        args = list(control.args or ())
        if len(args) > 1 and isinstance(args[1], dict) and "title.text" in args[1]:
            args[1] = {**args[1], "title.text": f"{args[1]['title.text']}<br><sup>{line}</sup>"}
            control.args = args
    return fig


def range_of(values, floor: float = 0.05, cap: float = 1.0) -> float:
    """A symmetric colour range that fits the data (no saturated cells), at least ``floor``."""
    finite = [abs(float(v)) for v in values if v == v]
    return min(max(max(finite, default=floor), floor), cap) if finite else floor


def steps_label(steps: list[int]) -> str:
    if not steps:
        return "no checkpoints"
    return f"step {steps[0]}" if len(steps) == 1 else f"{len(steps)} checkpoints, steps {steps[0]}..{steps[-1]}"


def step_axis(table: pd.DataFrame) -> list[int]:
    """Checkpoint steps in order; heatmaps use them as categories so dense early checkpoints stay visible."""
    return sorted(int(s) for s in table["step"].unique())


def evaluator_menu(labels: list[str], visibility: list[list[bool]], active: int = 0, x: float = 1.0,
                   y: float = 1.12) -> dict:
    """A dropdown (top right, clear of the title) whose i-th entry shows the traces ``visibility[i]``."""
    return dict(type="dropdown", active=active, x=x, xanchor="right", y=y, yanchor="bottom",
                buttons=[dict(label=label, method="restyle", args=[{"visible": vis}])
                         for label, vis in zip(labels, visibility)])


def preferred(options: list[str], specs: Mapping[str, EvaluatorSpec] | None = None) -> int:
    """Index of the evaluator shown first: the lowest ``display_rank`` of the evaluators' specs (the built-in
    suites open on Flip, which separates ICL from CIWL best); the first option if none ranks."""
    return options.index(display_order(options, specs)[0]) if options else 0
