"""``analyze``: every requested analysis over the selected checkpoints, one shared clean pass per checkpoint and
evaluator, tidy tables out, figures built from those tables.

Per checkpoint the model is loaded once; per evaluator one ``run_with_cache`` pass feeds ablation (mean/resample
sources, preserved patterns and values), patching (the clean or corrupted side of a pair, when it is an evaluator's
own sequences), and progress measures; probes get one pass on their own probe sets. Compute time is accumulated
per analysis (``AnalysisResult.seconds``; the shared passes under ``forward``) for the benchmark.

With ``config.workers`` > 1 the checkpoints are spread over worker processes (``workers.py``), each running the
same per-checkpoint code; rows are merged in step order.
"""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from coopetition.analysis import ablation, patching, probes, progress, strategies
from coopetition.analysis.config import AnalysisConfig
from coopetition.analysis.loading import EvalData, LoadedRun, load_checkpoint
from coopetition.analysis.pairs import PatchPair, build_pairs
from coopetition.analysis.selection import parse_spec, resolve
from coopetition.errors import ConfigError
from coopetition.model import ICLTransformer
from coopetition.model.hooked import ActivationCache
from coopetition.store.atomic import atomic_write
from coopetition.store.checkpoint import CheckpointInfo
from coopetition.store.rundir import RunReader

TABLES = {
    "strategies": ["step", "sequences", "evaluator", "metric", "value"],
    "ablation": ["step", "sequences", "evaluator", "unit", "method", "metric", "value", "delta"],
    "patching": ["step", "sequences", "pair", "kind", "component", "layer", "head", "position", "metric", "value"],
    "probes": ["step", "sequences", "evaluator", "target", "layer", "position", "metric", "value"],
    "progress": ["step", "sequences", "evaluator", "measure", "layer", "head", "value"],
    "progress_attention": ["step", "sequences", "evaluator", "layer", "head", "query_pos", "key_pos", "value"],
}


class SelectionWarning(UserWarning):
    """A requested checkpoint step was snapped to the nearest existing one."""


@dataclass(frozen=True)
class AnalysisResult:
    """What was written, and where the time went: ``seconds`` (wall) and ``cpu_seconds`` (this process, all
    threads) per analysis; the shared clean passes are ``forward``, checkpoint loading ``load``. With worker
    processes both are summed over the workers (worker-seconds, not elapsed time)."""

    out_dir: Path
    steps: tuple[int, ...]
    tables: dict[str, Path]
    figures: dict[str, Path]
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()  # corrupt checkpoints left out (listed in skipped_checkpoints.csv)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    def run(self, name: str, fn: Callable, *args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[name] += time.perf_counter() - start
            self.cpu[name] += time.process_time() - cpu

    def add(self, seconds: dict[str, float], cpu: dict[str, float]) -> None:
        """Fold in another timer's totals (a worker process's)."""
        for name, value in seconds.items():
            self.seconds[name] += value
        for name, value in cpu.items():
            self.cpu[name] += value


def _evaluators(run: LoadedRun, config: AnalysisConfig) -> tuple[str, ...]:
    available = tuple(run.evaluator_specs())
    if config.evaluators is None:
        return available
    unknown = [e for e in config.evaluators if e not in available]
    if unknown:
        raise ConfigError(f"unknown evaluator {unknown[0]!r}; this run has {', '.join(available)}")
    return tuple(config.evaluators)


ANALYSIS_TABLES = {"strategies": ("strategies",), "ablation": ("ablation",), "patching": ("patching",),
                   "probes": ("probes",), "progress": ("progress", "progress_attention")}


def _write_table(path: Path, rows: list[dict], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))
    return frame


def analyze(run_dir: Path, spec: str, config: AnalysisConfig, out_dir: Path | None = None,
            progress_bar: bool = True) -> AnalysisResult:
    """Run ``config.analyses`` on the checkpoints ``spec`` selects; write tables, figures and ``index.html``.

    Everything the user could get wrong (SPEC, run dir, evaluator names, device) is checked before the output
    folder (default ``RUN/analysis``) is created.
    """
    from coopetition.plots import write_figures

    parse_spec(spec)
    run = LoadedRun.open(Path(run_dir))
    selection = resolve(spec, [c.step for c in run.checkpoints])
    evaluators = _evaluators(run, config)
    if torch.device(config.device).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {config.device!r} requested but no CUDA device is available")
    eval_log = RunReader(run.path).eval_table() if config.wants("strategies") else None
    for note in selection.notes:
        warnings.warn(note, SelectionWarning, stacklevel=2)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    skipped = run.report_skipped(out)
    timer = _Timer()
    rows: dict[str, list[dict]] = {name: [] for name in TABLES}
    if eval_log is not None:
        table = timer.run("strategies", strategies.strategies_table, eval_log, selection.steps[0],
                          selection.steps[-1], evaluators)
        rows["strategies"] = table.to_dict("records")
    if config.needs_model:
        threads = torch.get_num_threads()
        torch.set_num_threads(config.threads or threads)
        try:
            _model_analyses(run, selection.steps, evaluators, config, rows, timer, progress_bar)
        finally:
            torch.set_num_threads(threads)
    tables, frames = {}, {}
    for name in (t for a in config.analyses for t in ANALYSIS_TABLES[a]):
        tables[name] = out / f"{name}.csv"
        frames[name] = _write_table(tables[name], rows[name], TABLES[name])
    figures = timer.run("figures", write_figures, out, frames)
    return AnalysisResult(out, selection.steps, tables, figures, dict(timer.seconds), dict(timer.cpu), skipped)


class _CleanPasses:
    """One ``run_with_cache`` pass per checkpoint and sequence set; a set that is the first n sequences of an
    evaluator's set (a patching pair's own side) reuses that evaluator's pass, sliced."""

    def __init__(self, model: ICLTransformer, data: dict[str, EvalData], timer: _Timer) -> None:
        self.model, self.data, self.timer = model, data, timer
        self.passes: dict[tuple[str, int], tuple[Tensor, ActivationCache]] = {}

    def __call__(self, d: EvalData) -> tuple[Tensor, ActivationCache]:
        key = (d.name, d.n)
        if key not in self.passes:
            full = self.data.get(d.name)
            if full is not None and full.n > d.n:
                logits, cache = self(full)
                self.passes[key] = logits[: d.n], cache.apply_slice_to_batch_dim((0, d.n))
            else:
                self.passes[key] = self.timer.run("forward", self.model.run_with_cache, d.exemplars,
                                                  d.context_labels)
        return self.passes[key]


@dataclass
class _Setup:
    """What every checkpoint of a run shares: the model (weights swapped per checkpoint) and the sequences."""

    evaluators: tuple[str, ...]
    config: AnalysisConfig
    model: ICLTransformer
    data: dict[str, EvalData]
    pairs: list[PatchPair]
    probe_sets: dict[str, EvalData]

    @classmethod
    def build(cls, run: LoadedRun, evaluators: tuple[str, ...], config: AnalysisConfig) -> "_Setup":
        device = torch.device(config.device)
        bank = run.bank()
        model = run.build_model(bank, device)
        data = run.eval_data(bank, evaluators, config.n_seqs, device)
        pairs = (build_pairs({k: d.head(config.patch_seqs) for k, d in data.items()}) if config.wants("patching")
                 else [])
        probe_sets = (run.probe_data(bank, evaluators, config.probe_classes, config.probe_seqs, config.seed, device)
                      if config.wants("probes") else {})
        return cls(evaluators, config, model, data, pairs, probe_sets)


def _checkpoint_rows(setup: _Setup, info: CheckpointInfo, timer: _Timer) -> dict[str, list[dict]]:
    """Every requested model analysis of one checkpoint: ``{table: rows}``, rows stamped with step/sequences."""
    model, data, config = setup.model, setup.data, setup.config
    rows: dict[str, list[dict]] = defaultdict(list)
    timer.run("load", load_checkpoint, model, info, config.device)
    stamp = {"step": info.step, "sequences": info.sequences}
    clean_pass = _CleanPasses(model, data, timer)
    resid_names = [name for _, name in patching.resid_points(model.cfg.n_layers)]
    with torch.no_grad():
        for name in setup.evaluators:
            _, cache = clean_pass(data[name])
            if config.wants("ablation"):
                found = timer.run("ablation", ablation.ablation_rows, model, data[name], cache, config.seed,
                                  config.max_rows)
                rows["ablation"] += [{**stamp, "evaluator": name, **r} for r in found]
            if config.wants("progress"):
                found = timer.run("progress", progress.progress_rows, model, data[name], cache)
                rows["progress"] += [{**stamp, "evaluator": name, **r} for r in found]
                found = timer.run("progress", progress.attention_rows, model, cache)
                rows["progress_attention"] += [{**stamp, "evaluator": name, **r} for r in found]
            if config.wants("probes"):
                probe_set = setup.probe_sets[name]
                _, probe_cache = timer.run("probes", model.run_with_cache, probe_set.exemplars,
                                           probe_set.context_labels, names_filter=resid_names)
                found = timer.run("probes", probes.probe_rows, model, probe_set, probe_cache, config.probe_steps,
                                  config.probe_l2, config.seed)
                rows["probes"] += [{**stamp, "evaluator": name, **r} for r in found]
        for pair in setup.pairs:
            clean_logits, clean_cache = clean_pass(pair.clean)
            corrupt_logits, corrupt_cache = clean_pass(pair.corrupt)
            found = timer.run("patching", patching.patching_rows, model, pair, clean_cache, clean_logits,
                              corrupt_cache, corrupt_logits, config.max_rows)
            rows["patching"] += [{**stamp, "pair": pair.name, **r} for r in found]
    return rows


def _model_analyses(run: LoadedRun, steps: tuple[int, ...], evaluators: tuple[str, ...], config: AnalysisConfig,
                    rows: dict[str, list[dict]], timer: _Timer, progress_bar: bool) -> None:
    infos = {c.step: c for c in run.checkpoints}
    workers = config.n_workers(len(steps))
    if workers == 1:
        setup = _Setup.build(run, evaluators, config)
        _merge((_checkpoint_rows(setup, infos[step], timer) for step in steps), steps, rows, progress_bar)
    else:
        from coopetition.analysis import workers as pool

        with pool.start(run, evaluators, config, workers) as executor:
            # every checkpoint is submitted, so the workers exist, before the progress bar starts its own thread
            _merge(pool.checkpoint_rows(executor, [infos[s] for s in steps], timer), steps, rows, progress_bar)


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
