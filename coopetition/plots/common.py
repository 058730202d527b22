"""What every analysis figure shares: one local plotly.js per output folder, colours, checkpoint axes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

PLOTLY_JS = "plotly.min.js"
EVALUATOR_COLOURS = {"train": "black", "b2_train": "#7f7f7f", "icl": "#1f77b4", "flip": "#d62728",
                     "ciwl": "#2ca02c", "iwl": "#9467bd"}
HEAD_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")
DIVERGING = "RdBu"


def colour(evaluator: str) -> str:
    return EVALUATOR_COLOURS.get(evaluator, "#17becf")


def head_colour(head: int) -> str:
    return HEAD_COLOURS[head % len(HEAD_COLOURS)]


def ensure_plotlyjs(out: Path) -> None:
    """Write plotly.js once into the folder; every figure references it relatively (opens offline, DIR stays small)."""
    path = out / PLOTLY_JS
    script = get_plotlyjs()
    if not path.is_file() or path.stat().st_size != len(script.encode()):
        path.write_text(script)


def write_figure(fig: go.Figure, path: Path) -> Path:
    # auto_play off: a figure with frames (circuit's slider) opens on its chosen step instead of playing them all
    fig.write_html(path, include_plotlyjs=PLOTLY_JS, full_html=True, config={"responsive": True}, auto_play=False)
    return path


def step_axis(table: pd.DataFrame) -> list[int]:
    """Checkpoint steps in order; heatmaps use them as categories so dense early checkpoints stay visible."""
    return sorted(int(s) for s in table["step"].unique())


def evaluator_menu(labels: list[str], visibility: list[list[bool]], active: int = 0, x: float = 1.0,
                   y: float = 1.12) -> dict:
    """A dropdown (top right, clear of the title) whose i-th entry shows the traces ``visibility[i]``."""
    return dict(type="dropdown", active=active, x=x, xanchor="right", y=y, yanchor="bottom",
                buttons=[dict(label=label, method="restyle", args=[{"visible": vis}])
                         for label, vis in zip(labels, visibility)])


def preferred(options: list[str], order: tuple[str, ...] = ("flip", "ciwl", "train", "icl", "iwl")) -> int:
    """Index of the option shown first (Flip separates ICL from CIWL best)."""
    for name in order:
        if name in options:
            return options.index(name)
    return 0
