"""The figures of ``analyze``: every page the analyses declare (``Analysis.figures``), drawn from their tables by the
functions they name in ``coopetition.plots``, plus ``index.html``. Every HTML file references one shared
``plotly.min.js`` in the same folder, so the folder opens offline and stays small.

An analysis without declared figures gets one generic page per table (value against sequences, a line per group),
so a new analysis is visible in ``index.html`` the moment its class exists. ``replot`` rebuilds every page from the
CSVs of an output folder.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from coopetition.analysis.base import Analysis, Figure
from coopetition.analysis.registry import get, names
from coopetition.errors import ConfigError
from coopetition.pipeline.index import Entry, write_index
from coopetition.plots.common import ensure_plotlyjs, steps_label, subtitle, write_figure
from coopetition.plots.generic import generic_figure

Page = tuple[Entry, Callable[[], go.Figure]]


def resolve(target: Callable | str) -> Callable:
    """A callable, or ``"module:function"`` imported now (so analysis modules never import plotting code)."""
    if callable(target):
        return target
    module, _, function = str(target).partition(":")
    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"figure function {target!r} cannot be found: {err}") from None


def _values(figure: Figure, first: pd.DataFrame) -> list:
    if figure.values is not None:
        return list(resolve(figure.values)(first))
    return list(first[figure.each].unique())


def figure_pages(cls: type[Analysis], figure: Figure, frames: dict[str, pd.DataFrame | None]) -> list[Page]:
    """The pages of one declared figure (see ``Figure``)."""
    tables = [frames.get(t) for t in (figure.tables or tuple(cls.tables))]
    draw = figure.draw
    if figure.each is None:
        return [(Entry(figure.file, figure.title, figure.caption), lambda: resolve(draw)(*tables))]
    first, rest = tables[0], tables[1:]
    if first is None or not len(first):
        return []
    return [(Entry(figure.file.format(value=v), figure.title.format(value=v), figure.caption),
             lambda v=v: resolve(draw)(first, v, *rest)) for v in _values(figure, first)]


def pages_for(name: str, frames: dict[str, pd.DataFrame | None]) -> list[Page]:
    """The pages of one analysis from the tables (empty when its first table has no rows)."""
    cls = get(name)
    own = {t: frames.get(t) for t in cls.tables}
    first = next(iter(own.values()), None)
    if first is None or not len(first):
        return []
    if cls.figures:
        return [page for figure in cls.figures for page in figure_pages(cls, figure, frames)]
    return [(Entry(f"{table}.html", f"{cls.title or name}: {table}", cls.caption),
             lambda table=table, frame=frame: generic_figure(frame, table))
            for table, frame in own.items() if frame is not None and len(frame)]


def write_figures(out: Path, frames: dict[str, pd.DataFrame], analyses: tuple[str, ...],
                  shown: Path | None = None, run: str | None = None) -> dict[str, Path]:
    """Write every page the tables of ``analyses`` allow plus ``index.html``; returns ``{file name: path}``.

    ``shown`` is the folder named on the index page when ``out`` is a temporary folder swapped into place later;
    ``run`` (the run's folder name) goes under every page's title with the analysed steps."""
    out = Path(out)
    ensure_plotlyjs(out)
    written: dict[str, Path] = {}
    entries = []
    headline = None
    inline = {f.file for name in analyses for f in get(name).figures if f.inline}
    # the analysed checkpoints (strategies' rows are every eval step of the run, not only those)
    analysed = [f for t, f in frames.items() if t != "strategies" and f is not None and len(f)] or \
        [f for f in frames.values() if f is not None and len(f)]
    analysed_steps = sorted({int(s) for f in analysed for s in f["step"].unique()})
    steps = sorted({int(s) for f in frames.values() if f is not None and len(f) for s in f["step"].unique()})
    for name in analyses:
        for entry, build in pages_for(name, frames):
            fig = build()
            subtitle(fig, (f"run {run} · " if run else "") + steps_label(analysed_steps))
            written[entry.file] = write_figure(fig, out / entry.file)
            entries.append(entry)
            if entry.file in inline and headline is None:
                headline = fig
    line = (f"{len(steps)} steps, {steps[0]}..{steps[-1]}" if steps else "no rows") + f" — {Path(shown or out).resolve()}"
    tables = [f"{t}.csv" for name in analyses for t in get(name).tables if t in frames]
    written["index.html"] = write_index(out, entries, tables, headline, line)
    return written


def _read(out: Path, table: str) -> pd.DataFrame:
    from coopetition.analysis.tables import SCHEMAS, read_analysis_table

    if table in SCHEMAS:
        return read_analysis_table(out, table)  # typed, even header-only
    return pd.read_csv(out / f"{table}.csv")  # a plug-in's table: no declared kinds


def replot(out: Path) -> dict[str, Path]:
    """Rebuild every figure and ``index.html`` from the CSV tables already in ``out`` (the analyses recorded in
    ``analysis.json``, or every registered analysis whose tables are there)."""
    out = Path(out)
    record_path = out / "analysis.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    analyses = tuple(record["analysis"]["analyses"]) if record is not None else names()
    analyses = tuple(a for a in analyses if a in names() and all((out / f"{t}.csv").is_file() for t in get(a).tables))
    frames = {t: _read(out, t) for a in analyses for t in get(a).tables}
    run = (Path(str(record.get("run", ""))).name or None) if record is not None else None
    return write_figures(out, frames, analyses, run=run)
