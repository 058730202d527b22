"""``analyze``: every requested analysis over the selected checkpoints, one shared baseline pass per checkpoint and
sequence set, tidy tables out, figures built from those tables, and ``analysis.json`` saying exactly what ran.

The analysed network is the one that ran: the run's model with the run's own interventions (grafts spliced from the
run's kept source checkpoints, clamps on), plus any added with ``AnalysisConfig.interventions``. Analyses come from
the registry (``analysis.base``); each checkpoint is loaded once and handed to every analysis. Compute time is
accumulated per analysis (``AnalysisResult.seconds``; the shared passes under ``forward``) for the benchmark.

With ``config.workers`` > 1 the checkpoints are spread over worker processes (``workers.py``), each running the
same per-checkpoint code; rows are merged in step order.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from coopetition.analysis.base import Analysis, Context
from coopetition.analysis.config import AnalysisConfig
from coopetition.analysis.execution import Timer, build_context, checkpoint_rows
from coopetition.analysis.loading import LoadedRun
from coopetition.analysis.selection import Selection, parse_spec, resolve
from coopetition.errors import ConfigError
from coopetition.store.atomic import atomic_directory, atomic_write, atomic_write_text

from coopetition.store.rundir import RunReader, now_iso, package_versions


class SelectionWarning(UserWarning):
    """A requested checkpoint step was snapped to the nearest existing one."""


@dataclass(frozen=True)
class AnalysisResult:
    """What was written, and where the time went: ``seconds`` (wall) and ``cpu_seconds`` (this process, all
    threads) per analysis; the shared baseline passes are ``forward``, checkpoint loading ``load``. With worker
    processes both are summed over the workers (worker-seconds, not elapsed time)."""

    out_dir: Path
    steps: tuple[int, ...]
    tables: dict[str, Path]
    figures: dict[str, Path]
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()  # corrupt checkpoints left out (listed in skipped_checkpoints.csv)


def _evaluators(run: LoadedRun, config: AnalysisConfig) -> tuple[str, ...]:
    available = tuple(run.evaluator_specs())
    if config.evaluators is None:
        return available
    unknown = [e for e in config.evaluators if e not in available]
    if unknown:
        raise ConfigError(f"unknown evaluator {unknown[0]!r}; this run has {', '.join(available)}")
    return tuple(config.evaluators)


def analyze(run_dir: Path, spec: str, config: AnalysisConfig, out_dir: Path | None = None,
            progress_bar: bool = True) -> AnalysisResult:
    """Run ``config.analyses`` on the checkpoints ``spec`` selects; write tables, figures, ``analysis.json`` and
    ``index.html``.

    Everything the user could get wrong (SPEC, run dir, evaluator names, device, added interventions and their
    graft sources) is checked, and the network built, before the output folder (default ``RUN/analysis``) is
    created.
    """
    from coopetition.plots import write_figures

    parse_spec(spec)
    run = LoadedRun.open(Path(run_dir))
    selection = resolve(spec, [c.step for c in run.checkpoints])
    evaluators = _evaluators(run, config)
    run.check_added(config.interventions)
    if torch.device(config.device).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {config.device!r} requested but no CUDA device is available")
    timer = Timer()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads or threads)
    try:
        context, analyses = build_context(run, evaluators, config, timer)
        eval_log = run.eval_table() if any(not a.needs_model for a in analyses) else None
        for note in selection.notes:
            warnings.warn(note, SelectionWarning, stacklevel=2)
        out = Path(out_dir) if out_dir is not None else Path(run_dir) / "analysis"
        _check_replaceable(out)
        rows: dict[str, list[dict]] = defaultdict(list)
        for analysis in (a for a in analyses if not a.needs_model):
            assert eval_log is not None
            for table, new in timer.run(analysis.name, analysis.run_rows, selection.steps).items():
                rows[table] += new
        if any(a.needs_model for a in analyses):
            _model_analyses(context, analyses, selection.steps, rows, timer, progress_bar)
    finally:
        torch.set_num_threads(threads)
    # Everything is computed; now the folder is written whole into a temporary sibling and swapped in, so an
    # interrupted analyze leaves the previous complete output (or none), never new tables beside old figures.
    tables, frames = {}, {}
    with atomic_directory(out) as tmp:
        skipped = run.report_skipped(tmp)
        for analysis in analyses:
            for name, columns in analysis.tables.items():
                tables[name] = out / f"{name}.csv"
                frames[name] = _write_table(tmp / f"{name}.csv", rows[name], list(columns))
        written = timer.run("figures", write_figures, tmp, frames, config.analyses, shown=out, run=Path(run_dir).name)
        _write_record(tmp, run, spec, selection, evaluators, config, timer)
    figures = {name: out / path.name for name, path in written.items()}
    return AnalysisResult(out, selection.steps, tables, figures, dict(timer.seconds), dict(timer.cpu), skipped)


def _check_replaceable(out: Path) -> None:
    """The output folder is replaced whole, so it must be absent, empty, or an earlier analysis output (it holds
    ``analysis.json``): ``--out .`` or ``--out RUN`` must never swap away a folder of someone else's files."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "analysis.json").is_file():
        raise ConfigError(f"--out {out} is a non-empty folder that is not an analysis output; "
                          "give a new or empty folder")


def _write_table(path: Path, rows: list[dict], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))
    return frame


def _write_record(out: Path, run: LoadedRun, spec: str, selection: Selection, evaluators: tuple[str, ...],
                  config: AnalysisConfig, timer: Timer) -> None:
    """``analysis.json``: what was analysed and how, so the folder can be reproduced and trusted."""
    import json

    record = {
        "run": str(Path(run.path).resolve()),
        "checkpoint_range": spec,
        "steps": list(selection.steps),
        "notes": list(selection.notes),
        "evaluators": list(evaluators),
        "analysis": config.to_dict(),
        "run_interventions": [i.spec for i in run.config.interventions],
        "added_interventions": [i.spec for i in config.interventions],
        "sources": [{k: e[k] for k in ("role", "spec", "file", "sha256", "step")} for e in RunReader(run.path).sources()],
        "seconds": {k: round(v, 3) for k, v in timer.seconds.items()},
        "versions": package_versions(),
        "created": now_iso(),
    }
    atomic_write_text(out / "analysis.json", json.dumps(record, indent=2) + "\n")


def _model_analyses(context: Context, analyses: list[Analysis], steps: tuple[int, ...], rows: dict[str, list[dict]],
                    timer: Timer, progress_bar: bool) -> None:
    infos = {c.step: c for c in context.run.checkpoints}
    workers = context.config.n_workers(len(steps))
    if workers == 1:
        _merge((checkpoint_rows(context, analyses, infos[step]) for step in steps), steps, rows, progress_bar)
    else:
        from coopetition.analysis import workers as pool

        with pool.start(context, analyses, workers) as executor:
            # every checkpoint is submitted, so the workers exist, before the progress bar starts its own thread
            _merge(pool.checkpoint_rows_in(executor, [infos[s] for s in steps], timer), steps, rows, progress_bar)


def _merge(results: Iterator[dict[str, list[dict]]], steps: tuple[int, ...], rows: dict[str, list[dict]],
           progress_bar: bool) -> None:
    """Append each checkpoint's rows, in step order, to the tables."""
    bar = tqdm(total=len(steps), desc="analyze", unit="ckpt", disable=not progress_bar, dynamic_ncols=True)
    for step, found in zip(steps, results):
        for table, new in found.items():
            rows[table] += new
        bar.update()
        bar.set_postfix(step=step)
    bar.close()
