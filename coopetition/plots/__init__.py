"""Figures for ``coopetition analyze``, built only from the tables it writes (``replot`` rebuilds them from the
CSVs in an output folder). Every HTML file references one shared ``plotly.min.js`` in the same folder, so the folder
opens offline and stays small."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from coopetition.plots import ablation, patching, probes, progress, strategies
from coopetition.plots.common import ensure_plotlyjs, write_figure
from coopetition.plots.index import Entry, write_index

TABLE_NAMES = ("strategies", "ablation", "patching", "probes", "progress", "progress_attention")


def _figures(frames: dict[str, pd.DataFrame]) -> list[tuple[Entry, object]]:
    """(entry, figure builder) for every figure the non-empty tables allow."""
    has = {name: frame for name, frame in frames.items() if frame is not None and len(frame)}
    out = []
    if "strategies" in has:
        out.append((Entry("strategies.html", "Strategies", strategies.CAPTION),
                    lambda: strategies.figure(has["strategies"])))
    if "ablation" in has:
        out.append((Entry("ablation.html", "Head ablation", ablation.CAPTION),
                    lambda: ablation.figure(has["ablation"])))
    if "patching" in has:
        out += [(Entry("patching_positions.html", "Activation patching by position", patching.CAPTION_POSITIONS),
                 lambda: patching.positions_figure(has["patching"])),
                (Entry("patching_heads.html", "Per-head patching over training", patching.CAPTION_HEADS),
                 lambda: patching.heads_figure(has["patching"])),
                (Entry("patching_attribution.html", "Attribution vs exact patching", patching.CAPTION_ATTRIBUTION),
                 lambda: patching.attribution_figure(has["patching"]))]
    if "probes" in has:
        out.append((Entry("probes.html", "Linear probes", probes.CAPTION), lambda: probes.figure(has["probes"])))
    if "progress" in has:
        out.append((Entry("progress.html", "Progress measures", progress.CAPTION),
                    lambda: progress.figure(has["progress"])))
    if "progress_attention" in has:
        for evaluator in has["progress_attention"]["evaluator"].unique():
            out.append((Entry(f"attention_{evaluator}.html", f"Mean attention patterns ({evaluator})",
                              progress.CAPTION_ATTENTION),
                        lambda e=evaluator: progress.attention_figure(has["progress_attention"], e)))
    return out


def write_figures(out: Path, frames: dict[str, pd.DataFrame]) -> dict[str, Path]:
    """Write every figure the tables allow plus ``index.html``; returns ``{file name: path}``."""
    out = Path(out)
    ensure_plotlyjs(out)
    written: dict[str, Path] = {}
    entries = []
    headline = None
    for entry, build in _figures(frames):
        fig = build()
        written[entry.file] = write_figure(fig, out / entry.file)
        entries.append(entry)
        if entry.file == "strategies.html":
            headline = fig
    steps = sorted({int(s) for f in frames.values() if f is not None and len(f) for s in f["step"].unique()})
    subtitle = (f"{len(steps)} steps, {steps[0]}..{steps[-1]}" if steps else "no rows") + f" — {out.resolve()}"
    tables = [f"{name}.csv" for name in TABLE_NAMES if name in frames]
    written["index.html"] = write_index(out, entries, tables, headline, subtitle)
    return written


def replot(out: Path) -> dict[str, Path]:
    """Rebuild every figure and ``index.html`` from the CSV tables already in ``out``."""
    out = Path(out)
    frames = {name: pd.read_csv(out / f"{name}.csv") for name in TABLE_NAMES if (out / f"{name}.csv").is_file()}
    return write_figures(out, frames)
