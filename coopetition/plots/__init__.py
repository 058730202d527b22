"""Figures for ``coopetition analyze``, built only from the tables it writes (``replot`` rebuilds them from the
CSVs in an output folder). Every HTML file references one shared ``plotly.min.js`` in the same folder, so the folder
opens offline and stays small.

Which pages an analysis gets: its own ``figures`` classmethod if it defines one, else the builder registered for
its name in ``PAGES`` below, else one generic page per table (value against sequences, a line per group).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from coopetition.analysis.registry import get, names
from coopetition.plots import ablation, circuit, clamp, llc, patching, probes, progress, scorecard, strategies
from coopetition.plots.common import ensure_plotlyjs, steps_label, subtitle, write_figure
from coopetition.plots.generic import generic_figure
from coopetition.plots.index import Entry, write_index

Page = tuple[Entry, Callable[[], go.Figure]]


def _strategies(f: dict[str, pd.DataFrame]) -> list[Page]:
    return [(Entry("strategies.html", "Strategies", strategies.CAPTION), lambda: strategies.figure(f["strategies"]))]


def _ablation(f: dict[str, pd.DataFrame]) -> list[Page]:
    return [(Entry("ablation.html", "Head ablation", ablation.CAPTION), lambda: ablation.figure(f["ablation"]))]


def _patching(f: dict[str, pd.DataFrame]) -> list[Page]:
    t = f["patching"]
    return [(Entry("patching_positions.html", "Activation patching by position", patching.CAPTION_POSITIONS),
             lambda: patching.positions_figure(t)),
            (Entry("patching_heads.html", "Per-head patching over training", patching.CAPTION_HEADS),
             lambda: patching.heads_figure(t)),
            (Entry("patching_attribution.html", "Attribution vs exact patching", patching.CAPTION_ATTRIBUTION),
             lambda: patching.attribution_figure(t))]


def _probes(f: dict[str, pd.DataFrame]) -> list[Page]:
    return [(Entry("probes.html", "Linear probes", probes.CAPTION), lambda: probes.figure(f["probes"]))]


def _progress(f: dict[str, pd.DataFrame]) -> list[Page]:
    pages = [(Entry("progress.html", "Progress measures", progress.CAPTION), lambda: progress.figure(f["progress"]))]
    attention = f.get("progress_attention")
    for evaluator in ([] if attention is None or not len(attention) else attention["evaluator"].unique()):
        pages.append((Entry(f"attention_{evaluator}.html", f"Mean attention patterns ({evaluator})",
                            progress.CAPTION_ATTENTION),
                      lambda e=evaluator: progress.attention_figure(attention, e)))
    return pages


def _clamp(f: dict[str, pd.DataFrame]) -> list[Page]:
    return [(Entry(f"clamp_{e}.html", f"Activation clamping ({e})", clamp.CAPTION),
             lambda e=e: clamp.figure(f["clamp"], e)) for e in clamp.evaluators(f["clamp"])]


def _scorecard(f: dict[str, pd.DataFrame]) -> list[Page]:
    return [(Entry("scorecard.html", "Scorecard: paper vs measured", scorecard.CAPTION),
             lambda: scorecard.figure(f["scorecard"]))]


def _llc(f: dict[str, pd.DataFrame]) -> list[Page]:
    return [(Entry("llc.html", "Local learning coefficient", llc.CAPTION),
             lambda: llc.figure(f["llc"], f.get("strategies"))),
            (Entry("llc_traces.html", "LLC diagnostics: SGLD loss traces", llc.CAPTION_TRACES),
             lambda: llc.traces_figure(f["llc_trace"], f["llc"]))]


def _circuit(f: dict[str, pd.DataFrame]) -> list[Page]:
    t, curves = f["circuit"], f.get("strategies")
    pages = [(Entry(f"circuit_{p}.html", f"Circuit over training ({p})", circuit.CAPTION),
              lambda p=p: circuit.figure(t, p, curves)) for p in circuit.pairs(t)]
    return pages + [(Entry("circuit_agreement.html", "Edge attribution vs path patching", circuit.CAPTION_AGREEMENT),
                     lambda: circuit.agreement_figure(t))]


PAGES: dict[str, Callable[[dict[str, pd.DataFrame]], list[Page]]] = {
    "strategies": _strategies, "ablation": _ablation, "patching": _patching, "probes": _probes,
    "progress": _progress, "clamp": _clamp, "circuit": _circuit, "scorecard": _scorecard, "llc": _llc}


def pages_for(name: str, frames: dict[str, pd.DataFrame]) -> list[Page]:
    """The pages of one analysis from its tables (empty when its first table has no rows); a registered page builder
    also sees its companions' tables."""
    cls = get(name)
    tables = {t: frames.get(t) for t in cls.tables}
    first = next(iter(tables.values()), None)
    if first is None or not len(first):
        return []
    if cls.figures is not None:
        return [(Entry(f"{name}_{i}.html" if i else f"{name}.html", title, caption), lambda fig=fig: fig)
                for i, (title, caption, fig) in enumerate(cls.figures(tables))]
    if name in PAGES:
        beside = {t: frames[t] for c in cls.companions for t in get(c).tables if frames.get(t) is not None}
        return PAGES[name]({**beside, **tables})
    return [(Entry(f"{table}.html", f"{cls.title or name}: {table}", cls.caption),
             lambda table=table, frame=frame: generic_figure(frame, table))
            for table, frame in tables.items() if frame is not None and len(frame)]


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
            if entry.file == "strategies.html":
                headline = fig
    line = (f"{len(steps)} steps, {steps[0]}..{steps[-1]}" if steps else "no rows") + f" — {Path(shown or out).resolve()}"
    tables = [f"{t}.csv" for name in analyses for t in get(name).tables if t in frames]
    written["index.html"] = write_index(out, entries, tables, headline, line)
    return written


def replot(out: Path) -> dict[str, Path]:
    """Rebuild every figure and ``index.html`` from the CSV tables already in ``out`` (the analyses recorded in
    ``analysis.json``, or every registered analysis whose tables are there)."""
    out = Path(out)
    record = out / "analysis.json"
    analyses = tuple(json.loads(record.read_text())["analysis"]["analyses"]) if record.is_file() else names()
    analyses = tuple(a for a in analyses if a in names() and all((out / f"{t}.csv").is_file() for t in get(a).tables))
    from coopetition.analysis.tables import read_analysis_table

    frames = {t: read_analysis_table(out, t) for a in analyses for t in get(a).tables}  # typed, even header-only
    run = Path(str(json.loads(record.read_text()).get("run", ""))).name or None if record.is_file() else None
    return write_figures(out, frames, analyses, run=run)
