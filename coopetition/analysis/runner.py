"""The compute engine of ``analyze``: every requested analysis over the selected checkpoints, one shared baseline pass
per checkpoint and sequence set, tidy rows out (``compute``), written as tables with ``analysis.json`` saying exactly
what ran (``write_tables``, ``write_record``). The pipeline (``coopetition.pipeline``) calls these and draws the
figures; nothing here knows about figures.

The analysed network is the one that ran: the run's model with the run's own interventions (grafts spliced from the
run's kept source checkpoints, clamps on), plus any added with ``AnalysisConfig.interventions``. Analyses come from
the registry (``analysis.base``); each checkpoint is loaded once and handed to every analysis. Compute time is
accumulated per analysis (``AnalysisResult.seconds``; the shared passes under ``forward``) for the benchmark.

With ``config.workers`` > 1 the checkpoints are spread over worker processes (``workers.py``), each running the
same per-checkpoint code; rows are merged in step order. With a ``FanOut`` (``fanout.py``) they become submitit jobs
(local processes or Slurm), which write their results into the cache for this process to merge.

Results are cached per checkpoint and analysis (``cache.py``, default ``OUT_cache`` beside the output folder): a checkpoint whose
entry exists under the same settings is read back, not recomputed, so a repeated ``analyze`` or one after ``zoom``
computes only what is new, and the tables (built from the entries in step order) equal a from-scratch analysis.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from tqdm.auto import tqdm

from coopetition.analysis.base import Analysis, Context
from coopetition.analysis.cache import Store
from coopetition.analysis.config import AnalysisConfig
from coopetition.analysis.execution import Timer, build_context, cache_keys, checkpoint_rows, sha256_of
from coopetition.analysis.registry import get
from coopetition.store.run import Run
from coopetition.analysis.selection import Selection, parse_spec, resolve
from coopetition.errors import ConfigError, DataError
from coopetition.store.checkpoint import CheckpointInfo
from coopetition.store.atomic import atomic_write, atomic_write_text
from coopetition.store.provenance import now_iso, package_versions


if TYPE_CHECKING:
    from coopetition.analysis.fanout import FanOut


class SelectionWarning(UserWarning):
    """A requested checkpoint step was snapped to the nearest existing one."""


def _evaluators(run: Run, config: AnalysisConfig) -> tuple[str, ...]:
    available = tuple(run.evaluator_specs())
    if config.evaluators is None:
        return available
    unknown = [e for e in config.evaluators if e not in available]
    if unknown:
        raise ConfigError(f"unknown evaluator {unknown[0]!r}; this run has {', '.join(available)}")
    return tuple(config.evaluators)


@dataclass
class Computed:
    """Everything ``compute`` found: the rows of every requested table and what the record needs."""

    run: Run
    spec: str
    selection: Selection
    evaluators: tuple[str, ...]
    config: AnalysisConfig
    out: Path
    rows: dict[str, list[dict]]
    timer: Timer
    cache: dict
    computed: dict[str, int]
    reused: dict[str, int]
    # DataFrames already built from ``rows`` (the tables a ``rows_from_tables`` analysis read), reused when written
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def classes(self) -> list[type[Analysis]]:
        return [get(name) for name in self.config.analyses]


def compute(run_dir: Path, spec: str, config: AnalysisConfig, out_dir: Path | None = None,
            progress_bar: bool = True, cache_dir: Path | None = None, use_cache: bool = True,
            fan_out: "FanOut | None" = None) -> Computed:
    """The rows of ``config.analyses`` on the checkpoints ``spec`` selects (nothing is written but cache entries).

    Per-checkpoint results are read from and written to the cache (``cache_dir``, default ``OUT_cache`` beside the
    output folder, i.e. ``RUN/analysis_cache`` for the default output;
    ``use_cache=False``: neither). ``fan_out``: run the checkpoints still to compute as submitit jobs (needs the
    cache, through which the jobs hand their results back).

    Everything the user could get wrong (SPEC, run dir, evaluator names, device, added interventions and their
    graft sources, an output folder that is not an analysis output) is checked, and the network built, before any
    checkpoint is computed.
    """
    parse_spec(spec)
    run = Run.open(Path(run_dir))
    selection = resolve(spec, [c.step for c in run.checkpoints])
    evaluators = _evaluators(run, config)
    run.check_added(config.interventions)
    if torch.device(config.device).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {config.device!r} requested but no CUDA device is available")
    timer = Timer()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads or threads)
    try:
        # the network, sequences and model analyses are built only if some checkpoint must be computed here
        context = Context(run, config, evaluators, timer=timer)
        classes = [get(name) for name in config.analyses]
        plain = [cls(context) for cls in classes if not cls.needs_model]
        for note in selection.notes:
            warnings.warn(note, SelectionWarning, stacklevel=3)
        out = Path(out_dir) if out_dir is not None else Path(run_dir) / "analysis"
        _check_replaceable(out)
        store = _open_store(out, cache_dir, use_cache, fan_out)
        rows: dict[str, list[dict]] = defaultdict(list)
        for analysis in plain:
            for table, new in timer.run(analysis.name, analysis.run_rows, selection.steps).items():
                rows[table] += new
        computed: dict[str, int] = {}
        reused: dict[str, int] = {}
        if config.needs_model:
            computed, reused = _model_analyses(context, [c for c in classes if c.needs_model], selection.steps, rows,
                                               timer, progress_bar, store, fan_out)
        frames: dict[str, pd.DataFrame] = {}
        _rows_from_tables(Context(run, config, evaluators), classes, selection.steps, rows, timer, frames)
    finally:
        torch.set_num_threads(threads)
    cache = {"dir": None if store is None else str(store.root.resolve()), "computed": computed, "reused": reused}
    return Computed(run, spec, selection, evaluators, config, out, rows, timer, cache, computed, reused, frames)


def _rows_from_tables(context: Context, classes: list[type[Analysis]], steps: tuple[int, ...],
                      rows: dict[str, list[dict]], timer: Timer, frames: dict[str, pd.DataFrame]) -> None:
    """Each analysis that overrides ``rows_from_tables`` (in the config's order, where what an analysis needs comes
    first) rebuilds its rows step by step from its own rows and its needs' tables at that step. The needed tables'
    DataFrames are kept in ``frames`` for ``write_tables`` (a 201-checkpoint clamp table is ~1M rows)."""
    sequences = {c.step: c.sequences for c in context.run.checkpoints}
    for cls in classes:
        if cls.rows_from_tables.__func__ is Analysis.rows_from_tables.__func__:
            continue

        def by_step(table: str, cls=cls) -> dict[int, pd.DataFrame]:
            if table not in frames:
                columns = list(get(_owner(table, classes)).tables[table])
                frames[table] = pd.DataFrame(rows.get(table, []), columns=columns)
            frame = frames[table]
            return {int(step): part for step, part in frame.groupby("step", sort=False)}

        needed = {t: by_step(t) for need in cls.needs for t in get(need).tables}
        own: dict[int, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for table in cls.tables:
            for row in rows.get(table, []):
                own[row["step"]][table].append(row)
        new: dict[str, list[dict]] = defaultdict(list)
        for step in steps:
            tables = {t: found.get(step) for t, found in needed.items()}
            out = timer.run(cls.name, cls.rows_from_tables, context, step, sequences[step], dict(own[step]), tables)
            for table, found in out.items():
                new[table] += found
        for table in cls.tables:
            rows[table] = new.get(table, [])
            frames.pop(table, None)  # rebuilt: a frame of the old rows must not be written


def _owner(table: str, classes: list[type[Analysis]]) -> str:
    return next(c.name for c in classes if table in c.tables)


def write_tables(out: Path, computed: Computed) -> tuple[dict[str, Path], dict[str, pd.DataFrame], tuple[str, ...]]:
    """Every requested table as ``out/{name}.csv`` (``out`` may be the temporary folder swapped in later), plus
    ``skipped_checkpoints.csv``; returns ``{table: its final path}``, ``{table: DataFrame}`` and the skipped
    checkpoints."""
    tables, frames = {}, {}
    skipped = computed.run.report_skipped(out)
    for analysis in computed.classes:
        for name, columns in analysis.tables.items():
            tables[name] = computed.out / f"{name}.csv"
            frames[name] = _write_table(Path(out) / f"{name}.csv", computed.rows[name], list(columns),
                                        computed.frames.get(name))
    return tables, frames, skipped


def _open_store(out: Path, cache_dir: Path | None, use_cache: bool, fan_out) -> Store | None:
    """The cache folder: ``cache_dir``, or ``OUT_cache`` beside the output folder (``RUN/analysis_cache`` for the
    default output, so an analysis written elsewhere leaves the run untouched). A folder that cannot hold it
    (read-only) means no cache, with a warning, unless jobs must hand their results back through it."""
    if not use_cache:
        if fan_out is not None:
            raise ConfigError("--executor needs the analysis cache (the jobs hand their results back through it); "
                              "drop --no-cache")
        return None
    import os

    root = Path(cache_dir) if cache_dir is not None else out.parent / f"{out.name}_cache"
    # created on the first write (a refused request writes nothing); here only checked
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    problem = None
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        problem = "not a directory"
    elif existing is None or not os.access(existing, os.W_OK | os.X_OK):
        problem = "not writable"
    if problem is not None:
        if fan_out is not None or cache_dir is not None:
            raise ConfigError(f"cannot use the analysis cache {root}: {problem}")
        warnings.warn(f"no analysis cache: {root} is {problem}", stacklevel=3)
        return None
    return Store(root)


def _check_replaceable(out: Path) -> None:
    """The output folder is replaced whole, so it must be absent, empty, or an earlier analysis output (it holds
    ``analysis.json``): ``--out .`` or ``--out RUN`` must never swap away a folder of someone else's files."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "analysis.json").is_file():
        raise ConfigError(f"--out {out} is a non-empty folder that is not an analysis output; "
                          "give a new or empty folder")


def _write_table(path: Path, rows: list[dict], columns: list[str], frame: pd.DataFrame | None = None) -> pd.DataFrame:
    if frame is None or list(frame.columns) != columns:
        frame = pd.DataFrame(rows, columns=columns)
    atomic_write(path, lambda tmp: _as_text(frame).to_csv(tmp, index=False))
    return frame


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its float columns as the text ``to_csv(float_format="%.6g")`` writes (``%.6g``, NaN empty),
    formatted by one list comprehension per column: pandas formats each value through several Python calls, ~8 s
    of a 201-checkpoint re-run's ~3.5M values. The same bytes (``tests/test_analysis_incremental.py``)."""
    floats = [c for c in frame.columns if frame[c].dtype.kind == "f"]
    if not floats:
        return frame
    text = frame.copy(deep=False)
    for column in floats:
        text[column] = ["" if v != v else "%.6g" % v for v in frame[column].tolist()]
    return text


def write_record(out: Path, computed: Computed) -> None:
    """``analysis.json``: what was analysed and how (the shared settings and every requested analysis's own), so
    the folder can be reproduced and trusted."""
    import json

    run, spec, selection, evaluators = computed.run, computed.spec, computed.selection, computed.evaluators
    config, timer, cache = computed.config, computed.timer, computed.cache
    record = {
        "run": str(Path(run.path).resolve()),
        "checkpoint_range": spec,
        "steps": list(selection.steps),
        "notes": list(selection.notes),
        "evaluators": list(evaluators),
        "analysis": config.to_dict(),
        "run_interventions": [i.spec for i in run.config.interventions],
        "added_interventions": [i.spec for i in config.interventions],
        "sources": [{k: getattr(e, k) for k in ("role", "spec", "file", "sha256", "step")}
                    for e in run.manifest().sources],
        "seconds": {k: round(v, 3) for k, v in timer.seconds.items()},
        "cache": cache,  # where per-checkpoint results live; per analysis, checkpoints computed now / read back
        "versions": package_versions(),
        "created": now_iso(),
    }
    atomic_write_text(out / "analysis.json", json.dumps(record, indent=2) + "\n")


def _model_analyses(context: Context, model: list[type[Analysis]], steps: tuple[int, ...],
                    rows: dict[str, list[dict]], timer: Timer, progress_bar: bool, store: Store | None,
                    fan_out) -> tuple[dict, dict]:
    """Rows of every model analysis at ``steps``: cached entries where they exist, the rest computed (here, in
    worker processes, or as submitit jobs) and cached as each checkpoint finishes. Appended in step order, then
    analysis order, as a from-scratch single process would. ``context`` is filled (network, sequences) only if
    something is computed here."""
    infos = {c.step: c for c in context.run.checkpoints}
    keys = cache_keys(context, model)
    found: dict[tuple[int, str], dict[str, list[dict]]] = {}
    todo: list[tuple[CheckpointInfo, tuple[str, ...]]] = []
    sha = {step: sha256_of(infos[step]) for step in steps} if store is not None else {}
    for step in steps:
        info = infos[step]
        missing = []
        for analysis in model:
            entry = None if store is None else store.load(analysis.name, keys[analysis.name], sha[step], step,
                                                          analysis.tables)
            if entry is None:
                missing.append(analysis.name)
            else:
                found[step, analysis.name] = entry
        if missing:
            todo.append((info, tuple(missing)))
    reused = {a.name: sum((s, a.name) in found for s in steps) for a in model}
    computed = {a.name: sum(a.name in names for _, names in todo) for a in model}

    def keep(info: CheckpointInfo, result: dict[str, dict[str, list[dict]]]) -> None:
        for name, tables in result.items():
            if store is not None:
                store.save(name, keys[name], sha[info.step], info.step, tables)
            found[info.step, name] = tables

    if todo and fan_out is not None:
        from coopetition.analysis.fanout import run_jobs

        run_jobs(fan_out, context, todo, store.root, progress_bar)
        for info, names in todo:
            for name in names:
                analysis = next(a for a in model if a.name == name)
                entry = store.load(name, keys[name], sha[info.step], info.step, analysis.tables)
                if entry is None:
                    raise DataError(f"the jobs finished without a result for {name} at step {info.step} "
                                    f"(see the job logs in {fan_out.folder_for(store.root)})")
                found[info.step, name] = entry
    elif todo:
        context, analyses = build_context(context.run, context.evaluators, context.config, timer)
        workers = context.config.n_workers(len(todo))
        if workers == 1:
            results = (checkpoint_rows(context, analyses, info, names) for info, names in todo)
            _collect(results, todo, keep, progress_bar)
        else:
            from coopetition.analysis import workers as pool

            with pool.start(context, analyses, workers) as executor:
                # every checkpoint is submitted, so the workers exist, before the progress bar starts its own thread
                _collect(pool.checkpoint_rows_in(executor, todo, timer), todo, keep, progress_bar)
    for step in steps:
        for analysis in model:
            for table, new in found[step, analysis.name].items():
                rows[table] += new
    return computed, reused


def _collect(results: Iterator[dict], todo: list, keep, progress_bar: bool) -> None:
    """Hand each checkpoint's results to ``keep`` (which caches them) as they arrive, in order."""
    bar = tqdm(total=len(todo), desc="analyze", unit="ckpt", disable=not progress_bar, dynamic_ncols=True)
    for (info, _), result in zip(todo, results):
        keep(info, result)
        bar.update()
        bar.set_postfix(step=info.step)
    bar.close()
