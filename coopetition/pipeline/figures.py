"""The figures of ``analyze``: every page the analyses declare (``Analysis.figures``), drawn from their tables by the
functions they name in ``coopetition.plots``, plus ``index.html``. Every HTML file references one shared
``plotly.min.js`` in the same folder, so the folder opens offline and stays small.

An analysis without declared figures gets one generic page per table (value against sequences, a line per group),
so a new analysis is visible in ``index.html`` the moment its class exists. ``replot`` rebuilds every page from the
CSVs of an output folder.

**Reused pages** (``reuse``: a folder, ``analyze`` passes ``CACHE/figures``). A page is a pure function of the bytes of
the tables it is drawn from, the value it is drawn for, the line under its title (run and analysed steps) and the
drawing code. ``analyze`` keys each page by the sha256 of exactly these (the code as the bytes of every module in
``coopetition/plots`` and of the module defining its drawing function, plus the package versions), and copies a
page drawn earlier under the same key instead of drawing it again: a second identical ``analyze`` draws only the
inline headline figure, and after ``zoom`` or over new checkpoints every key changes (new table bytes, new steps) and
everything is drawn anew. A cached page that is not a plain file of sane size is ignored and drawn.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
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
MAX_PAGE_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Key:
    """What a page is a function of, besides the tables' bytes and the drawing code: which function, on which
    tables, for which ``each`` value."""

    draw: str
    tables: tuple[str, ...]
    value: str | None = None


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
    names_ = figure.tables or tuple(cls.tables)
    tables = [frames.get(t) for t in names_]
    draw = figure.draw
    if figure.each is None:
        build = lambda: resolve(draw)(*tables)  # noqa: E731
        build.key = Key(_name(draw), names_)
        return [(Entry(figure.file, figure.title, figure.caption), build)]
    first, rest = tables[0], tables[1:]
    if first is None or not len(first):
        return []
    pages = []
    for v in _values(figure, first):
        build = lambda v=v: resolve(draw)(first, v, *rest)  # noqa: E731
        build.key = Key(_name(draw), names_, repr(v))
        pages.append((Entry(figure.file.format(value=v), figure.title.format(value=v), figure.caption), build))
    return pages


def _name(draw: Callable | str) -> str:
    return draw if isinstance(draw, str) else f"{draw.__module__}:{draw.__qualname__}"


def pages_for(name: str, frames: dict[str, pd.DataFrame | None]) -> list[Page]:
    """The pages of one analysis from the tables (empty when its first table has no rows)."""
    cls = get(name)
    own = {t: frames.get(t) for t in cls.tables}
    first = next(iter(own.values()), None)
    if first is None or not len(first):
        return []
    if cls.figures:
        return [page for figure in cls.figures for page in figure_pages(cls, figure, frames)]
    pages = []
    for table, frame in own.items():
        if frame is not None and len(frame):
            build = lambda table=table, frame=frame: generic_figure(frame, table)  # noqa: E731
            build.key = Key("coopetition.plots.generic:generic_figure", (table,), table)
            pages.append((Entry(f"{table}.html", f"{cls.title or name}: {table}", cls.caption), build))
    return pages


def write_figures(out: Path, frames: dict[str, pd.DataFrame], analyses: tuple[str, ...],
                  shown: Path | None = None, run: str | None = None, reuse: Path | None = None,
                  processes: int = 1) -> dict[str, Path]:
    """Write every page the tables of ``analyses`` allow plus ``index.html``; returns ``{file name: path}``.

    ``shown`` is the folder named on the index page when ``out`` is a temporary folder swapped into place later;
    ``run`` (the run's folder name) goes under every page's title with the analysed steps. ``reuse``: a folder of
    pages drawn earlier (module docstring); the tables must be written in ``out`` as ``{table}.csv``.
    ``processes``: pages are drawn in this many forked processes (Linux; ``analyze`` passes its worker count), each
    page whole by one of them; a page is a pure function of the tables, so the files are the same."""
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
    line_under = (f"run {run} · " if run else "") + steps_label(analysed_steps)
    keys = _Keys(out, line_under) if reuse is not None else None
    todo: list[tuple[Entry, Callable, str | None]] = []  # pages to draw (the inline ones are drawn here)
    for name in analyses:
        for entry, build in pages_for(name, frames):
            entries.append(entry)
            key = keys.of(entry, build) if keys is not None and entry.file not in inline else None
            if key is not None and _copy(Path(reuse) / f"{key}.html", out / entry.file):
                written[entry.file] = out / entry.file
                continue
            if entry.file not in inline:
                todo.append((entry, build, key))
                continue
            fig = _draw(build, line_under, out / entry.file)
            written[entry.file] = out / entry.file
            if headline is None:
                headline = fig
    _draw_all([(build, line_under, out / entry.file) for entry, build, _ in todo], processes)
    for entry, _, key in todo:
        written[entry.file] = out / entry.file
        if key is not None:
            _keep(out / entry.file, Path(reuse) / f"{key}.html")
    line = (f"{len(steps)} steps, {steps[0]}..{steps[-1]}" if steps else "no rows") + f" — {Path(shown or out).resolve()}"
    tables = [f"{t}.csv" for name in analyses for t in get(name).tables if t in frames]
    written["index.html"] = write_index(out, entries, tables, headline, line)
    return written


def _draw(build: Callable, line_under: str, path: Path) -> go.Figure:
    fig = build()
    subtitle(fig, line_under)
    write_figure(fig, path)
    return fig


_PAGES: list[tuple[Callable, str, Path]] = []  # what forked page drawers see (set just before they fork)


def _draw_one(index: int) -> None:
    _draw(*_PAGES[index])


def _draw_all(pages: list[tuple[Callable, str, Path]], processes: int) -> None:
    """Draw ``pages`` (``(build, line under the title, file)``), in ``processes`` forked processes where there is
    more than one page and fork exists (a page of a 201-checkpoint run takes seconds, all of it single-threaded
    Python in plotly); an error in any page is raised here."""
    global _PAGES
    import sys

    processes = min(processes, len(pages))
    if processes <= 1 or sys.platform != "linux":
        for page in pages:
            _draw(*page)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _PAGES = pages
    try:
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
            list(pool.map(_draw_one, range(len(pages))))
    finally:
        _PAGES = []


class _Keys:
    """Page keys (module docstring): the tables' bytes hashed once each, the plotting code once."""

    def __init__(self, out: Path, line_under: str) -> None:
        from coopetition.store.provenance import package_versions

        self.out, self.line_under = out, line_under
        self.tables: dict[str, str | None] = {}
        plots = Path(inspect.getsourcefile(subtitle)).parent
        self.code = {p.name: _sha256(p) for p in sorted(plots.glob("*.py"))}
        self.versions = {k: v for k, v in package_versions().items() if k != "platform"}

    def table(self, name: str) -> str | None:
        if name not in self.tables:
            path = self.out / f"{name}.csv"
            self.tables[name] = _sha256(path) if path.is_file() else None
        return self.tables[name]

    def of(self, entry: Entry, build: Callable) -> str | None:
        key = getattr(build, "key", None)
        if key is None:
            return None
        try:
            module = inspect.getsourcefile(resolve(key.draw))
        except TypeError:
            return None
        blob = {"key": [key.draw, list(key.tables), key.value], "entry": [entry.file, entry.title],
                "line": self.line_under, "tables": [self.table(t) for t in key.tables],
                "code": self.code, "module": _sha256(Path(module)) if module else None, "versions": self.versions}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:40]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy(cached: Path, page: Path) -> bool:
    """Copy a page drawn earlier; False (draw it) unless it is a plain file of sane size that copies whole."""
    try:
        if cached.is_symlink() or not cached.is_file() or not 0 < cached.stat().st_size <= MAX_PAGE_BYTES:
            return False
        shutil.copyfile(cached, page)
        return True
    except OSError:
        return False


def _keep(page: Path, cached: Path) -> None:
    """Keep a drawn page for reuse: copied beside, then renamed into place (a reader never sees half a page). A
    cache that cannot be written only costs the reuse."""
    import os
    import tempfile

    tmp = None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{cached.name}.", suffix=".tmp", dir=cached.parent)
        os.close(fd)
        shutil.copyfile(page, tmp)
        os.replace(tmp, cached)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _read(out: Path, table: str) -> pd.DataFrame:
    from coopetition.analysis.tables import read_analysis_table

    return read_analysis_table(out, table)  # typed by the analysis's own declaration, even header-only


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
