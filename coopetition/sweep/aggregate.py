"""One tidy table for the whole sweep and its summary across seeds.

``aggregate.csv``: every run's ``eval.csv`` rows with ``point``, ``group`` and one column per grid axis added.
``summary.csv``: per (group, non-seed grid values, step, sequences, evaluator, metric): ``mean``, ``std`` (sample,
ddof 1; empty for one seed), ``min``, ``max`` and ``n`` (runs that reached that step) across the seed axes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from coopetition.errors import DataError
from coopetition.store.atomic import atomic_write
from coopetition.store.reader import RunReader
from coopetition.sweep.expand import SEED_AXES, Point, expand
from coopetition.sweep.ledger import jobs_by_point, read_ledger
from coopetition.sweep.spec import SweepSpec
from coopetition.sweep.state import point_state

KEYS = ["step", "sequences", "evaluator", "metric"]
STATS = ["mean", "std", "min", "max", "n"]


@dataclass(frozen=True)
class Aggregate:
    table: Path
    summary: Path
    figure: Path
    runs: int
    skipped: tuple[str, ...]  # points left out (not done, or no eval.csv yet)


def aggregate_sweep(spec: SweepSpec, include_partial: bool = False, band: str = "std") -> Aggregate:
    """Write ``aggregate.csv``, ``summary.csv`` and ``sweep.html`` into the sweep folder. Only finished runs count
    unless ``include_partial`` (a mean over fewer seeds at late steps would mislead)."""
    from coopetition.sweep.figure import write_figure_from_summary

    jobs = jobs_by_point(read_ledger(spec.out))
    points, skipped = [], []
    for point in expand(spec):
        state = point_state(point, jobs.get(point.name, []), spec.logs)
        usable = (point.run_dir / "eval.csv").is_file() and (include_partial or state.state == "done")
        (points if usable else skipped).append(point if usable else point.name)
    if not points:
        raise DataError(f"no finished run in {spec.out} to aggregate"
                        f"{'' if include_partial else ' (--include-partial takes unfinished ones)'}")
    axes = list(spec.grid)
    table = aggregate_table(points, axes)
    summary = summary_table(table, [a for a in axes if a not in SEED_AXES])
    paths = spec.out / "aggregate.csv", spec.out / "summary.csv"
    for frame, path in zip((table, summary), paths):
        atomic_write(path, lambda tmp, frame=frame: frame.to_csv(tmp, index=False, float_format="%.6g"))
    figure = write_figure_from_summary(paths[1], spec.out / "sweep.html", band, title=f"sweep {spec.name}")
    return Aggregate(paths[0], paths[1], figure, len(points), tuple(skipped))


def aggregate_table(points: list[Point], axes: list[str]) -> pd.DataFrame:
    frames = []
    for point in points:
        frame = RunReader(point.run_dir).eval_table()  # bounded, checked columns: runs are shared input
        for axis in reversed(axes):
            frame.insert(0, axis, _cell(point.values[axis]))
        frame.insert(0, "group", point.group)
        frame.insert(0, "point", point.name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def summary_table(table: pd.DataFrame, group_axes: list[str]) -> pd.DataFrame:
    keys = ["group", *group_axes, *KEYS]
    stats = table.groupby(keys, sort=False, dropna=False)["value"].agg(["mean", "std", "min", "max", "count"])
    return stats.rename(columns={"count": "n"}).reset_index().sort_values(keys, kind="stable", ignore_index=True)


def _cell(value):
    """Scalars stay typed; lists and tables become compact JSON (groupby needs hashable cells)."""
    return value if isinstance(value, (int, float, str, bool)) else json.dumps(value, separators=(",", ":"))
