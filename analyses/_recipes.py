"""What every recipe in ``analyses/`` shares: derive run configs from presets, train each (skipping runs that are
already complete with the same config), gather their eval tables, and write tables and figures.

Recipes call the library only; this file is glue, not science.
"""

from __future__ import annotations

import argparse
import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from coopetition.config import RunConfig
from coopetition.errors import CoopetitionError
from coopetition.store.run import Run
from coopetition.train.loop import train

LN2 = math.log(2)


def common_arguments(parser: argparse.ArgumentParser, out: str, steps: int) -> None:
    parser.add_argument("--out", type=Path, default=Path(out), help="where runs, tables and figures go")
    parser.add_argument("--steps", type=int, default=steps, help="training steps per run")
    parser.add_argument("--eval-every", type=int, default=250, help="evaluation interval in steps")
    parser.add_argument("--eval-seqs", type=int, default=1000, help="sequences per evaluator")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained in parallel (one thread each)")
    parser.add_argument("--progress", action="store_true", help="progress bars")


def variant(base: RunConfig, args: argparse.Namespace, name: str, interventions: tuple[str, ...] = (),
            **train_changes) -> RunConfig:
    """``base`` resized for a recipe: its steps, eval cadence and eval size, one thread, checkpoints every
    ``4 * eval_every`` steps (``train_changes`` override any of these)."""
    changes = dict(steps=args.steps, eval_schedule=f"every:{args.eval_every}", threads=1,
                   checkpoint_schedule=f"every:{args.eval_every * 4}")
    train_config = replace(base.train, **{**changes, **train_changes})
    return replace(base, train=train_config, eval=replace(base.eval, n_seqs=args.eval_seqs),
                   interventions=tuple(interventions), preset=f"{base.preset}/{name}")


def _complete(config: RunConfig, run_dir: Path) -> bool:
    try:
        run = Run.open(run_dir, verify=False)
    except CoopetitionError:
        return False
    same = json.loads(json.dumps(run.config.to_dict())) == json.loads(json.dumps(config.to_dict()))
    return same and config.train.steps in run.steps and (run_dir / "eval.csv").exists()


def _train_one(item: tuple[RunConfig, Path, bool]) -> Path:
    config, run_dir, progress = item
    if not _complete(config, run_dir):
        train(config, run_dir, overwrite=True, progress=progress)
    return run_dir


def train_all(runs: dict[str, tuple[RunConfig, Path]], jobs: int, progress: bool) -> None:
    """Train every run not already complete (same config, final checkpoint present)."""
    items = [(config, path, progress) for config, path in runs.values()]
    if jobs <= 1:
        for item in items:
            _train_one(item)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(_train_one, items))


def eval_long(runs: dict[str, Path], **columns: dict[str, object]) -> pd.DataFrame:
    """Every run's eval.csv stacked, with a ``run`` column and any per-run columns given as ``{run: value}``."""
    frames = []
    for name, path in runs.items():
        frame = Run.open(path, verify=False).eval_table().assign(run=name)
        for column, values in columns.items():
            frame[column] = values[name]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def first_step(table: pd.DataFrame, evaluator: str, metric: str, below: float | None = None,
               above: float | None = None) -> pd.Series:
    """Per run, the first evaluated step whose value is below (or above) the threshold; NaN if never."""
    rows = table[(table.evaluator == evaluator) & (table.metric == metric)]
    hit = rows.value < below if below is not None else rows.value > above
    return rows[hit].groupby("run").step.min().reindex(rows.run.unique())


def write_table(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, float_format="%.6g")


def line_figure(table: pd.DataFrame, evaluator: str, metric: str, title: str, x: str = "sequences",
                colour_by: str = "run", hlines: dict[str, float] | None = None, y_range=None) -> go.Figure:
    rows = table[(table.evaluator == evaluator) & (table.metric == metric)]
    fig = go.Figure()
    for name, part in rows.groupby(colour_by, sort=False):
        part = part.sort_values(x)
        fig.add_trace(go.Scatter(x=part[x], y=part.value, mode="lines", name=str(name)))
    for label, y in (hlines or {}).items():
        fig.add_hline(y=y, line_dash="dot", annotation_text=label)
    fig.update_layout(title=title, xaxis_title=x.replace("_", " "), yaxis_title=f"{evaluator} {metric}",
                      template="plotly_white", yaxis_range=y_range)
    return fig


def write_figure(fig: go.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs=True, full_html=True)


def source_run(preset: RunConfig, run_dir: Path, steps: int, progress: bool) -> Path:
    """A source run shared between recipes (the main or CIWL-only run): an existing run at ``run_dir`` is used as
    it is (never retrained or overwritten); otherwise ``preset`` is trained there for ``steps``."""
    if (run_dir / "config.json").exists():
        return run_dir
    train(replace(preset, train=replace(preset.train, steps=steps, threads=1)), run_dir, progress=progress)
    return run_dir


def checkpoint_steps(run_dir: Path) -> list[int]:
    return list(Run.open(run_dir, verify=False).steps)
