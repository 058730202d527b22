"""Checkpoints analysed in parallel worker processes (``AnalysisConfig.workers``).

Workers are single-threaded (one torch thread each: the parallelism is across checkpoints). On Linux with a CPU
device they are forked, like torch's own DataLoader workers: a spawned worker re-imports torch and
TransformerLens, about 7 CPU-seconds each, which on a 2-core machine ate most of the gain on a 31-checkpoint run;
torch resets its thread pool in a forked child. With CUDA, or elsewhere, they are spawned (CUDA cannot be forked).
Each builds the run's model and sequences once, then analyses the checkpoints it is handed one at a time with the
same code as a single process (``runner._checkpoint_rows``). Results come back in step order (``Executor.map``),
so the tables equal a single process's row for row. Across checkpoints this beat batching them with
``torch.func.vmap`` over stacked weights (measured in docs/analyze.md, "Performance").
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor

import torch

from coopetition.analysis.config import AnalysisConfig
from coopetition.analysis.loading import LoadedRun
from coopetition.analysis.runner import _checkpoint_rows, _Setup, _Timer
from coopetition.store.checkpoint import CheckpointInfo

_SETUP: _Setup | None = None  # the worker process's own model and sequences, built once by _init


def _init(run: LoadedRun, evaluators: tuple[str, ...], config: AnalysisConfig) -> None:
    global _SETUP
    torch.set_num_threads(1)
    _SETUP = _Setup.build(run, evaluators, config)


def _analyse(info: CheckpointInfo) -> tuple[dict[str, list[dict]], dict[str, float], dict[str, float]]:
    timer = _Timer()
    rows = _checkpoint_rows(_SETUP, info, timer)
    return dict(rows), dict(timer.seconds), dict(timer.cpu)


def start(run: LoadedRun, evaluators: tuple[str, ...], config: AnalysisConfig, workers: int) -> Executor:
    """A pool of ``workers`` processes, each holding the run's model (use as a context manager). ``run`` is the
    parent's, already opened and verified: workers analyse exactly the checkpoints it lists."""
    method = "fork" if sys.platform == "linux" and torch.device(config.device).type == "cpu" else "spawn"
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=_init,
                               initargs=(run, evaluators, config))


def checkpoint_rows(executor: Executor, infos: list[CheckpointInfo], timer: _Timer) -> Iterator[dict]:
    """``{table: rows}`` per checkpoint, in the order of ``infos``, all submitted at once (now, not on first
    ``next``); worker time is added to ``timer`` (so its seconds are summed over workers, not elapsed)."""
    results = executor.map(_analyse, infos)

    def rows() -> Iterator[dict]:
        for found, seconds, cpu in results:
            timer.add(seconds, cpu)
            yield found
    return rows()
