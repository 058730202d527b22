"""Running analyses on one checkpoint, shared by ``analyze`` (one process) and its worker processes: the per-run
context, the per-checkpoint rows, and a timer of where the time goes."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict

import torch

from coopetition.analysis.base import Analysis, Checkpoint, Context
from coopetition.analysis.cache import run_identity, settings_key
from coopetition.analysis.config import AnalysisConfig
from coopetition.store.run import Run, load_checkpoint
from coopetition.analysis.registry import get
from coopetition.store.checkpoint import CheckpointInfo


class Timer:
    """Wall and CPU seconds per named part (an analysis, "forward", "load"), summed over calls."""

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


def build_context(run: Run, evaluators: tuple[str, ...], config: AnalysisConfig,
                  timer: Timer | None = None) -> tuple[Context, list[Analysis]]:
    """The run's network (if any requested analysis needs it), its sequences, and one instance per analysis."""
    context = Context(run, config, evaluators, timer=timer)
    if config.needs_model:
        device = torch.device(config.device)
        context.bank = run.bank()
        context.forward = run.intervened(context.bank, device, config.interventions)
        context.data = run.eval_data(context.bank, evaluators, config.n_seqs, device)
    return context, [get(name)(context) for name in config.analyses]


def checkpoint_rows(context: Context, analyses: list[Analysis], info: CheckpointInfo,
                    only: tuple[str, ...] | None = None) -> dict[str, dict[str, list[dict]]]:
    """The model analyses of one checkpoint (those named in ``only``, default all): ``{analysis: {table: rows}}``,
    rows stamped with step/sequences. Each analysis's rows are its own (the cache stores them apart)."""
    out: dict[str, dict[str, list[dict]]] = {}
    context.timed("load", load_checkpoint, context.model, info, context.config.device)
    checkpoint = Checkpoint(info.step, info.sequences, context)
    stamp = {"step": info.step, "sequences": info.sequences}
    with torch.no_grad():
        for analysis in (a for a in analyses if a.needs_model and (only is None or a.name in only)):
            found = context.timed(analysis.name, analysis.checkpoint_rows, checkpoint)
            rows: dict[str, list[dict]] = defaultdict(list)
            for table, new in found.items():
                rows[table] += [{**stamp, **r} for r in new]
            out[analysis.name] = dict(rows)
    return out


def cache_keys(context: Context, model: list) -> dict[str, str]:
    """The settings key of each model analysis (``cache.settings_key``) from ``analysis_settings``."""
    run = context.run
    identity = run_identity([i.spec for i in run.config.interventions],
                            [vars(e) for e in run.manifest().sources])
    return {a.name: settings_key(a.name, analysis_settings(context.config, a), context.evaluators,
                                 {**identity, "inputs": a.cache_inputs(run)})
            for a in model}


def analysis_settings(config: AnalysisConfig, analysis: type[Analysis]) -> dict:
    """What of ``config`` can change ``analysis``'s rows: the shared fields and its own settings only (another
    analysis's settings never invalidate its cache entries)."""
    own = config.settings.get(analysis.settings_name())
    return {**config.shared_dict(), "settings": asdict(own) if own is not None else {}}


def sha256_of(info: CheckpointInfo) -> str:
    """The checkpoint's sha256 as its manifest records it (the file was checked against it when the run was
    opened); computed from the file for a manifest without one."""
    if info.sha256 is not None:
        return info.sha256
    from coopetition.store.checkpoint import file_sha256

    return file_sha256(info.path)
