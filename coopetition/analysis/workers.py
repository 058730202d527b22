"""Checkpoints analysed in parallel worker processes (``AnalysisConfig.workers``).

Workers are single-threaded (one torch thread each: the parallelism is across checkpoints). On Linux with a CPU
device they are forked, like torch's own DataLoader workers, and inherit the parent's already-built network,
sequences and analyses: a spawned worker re-imports torch and TransformerLens, about 7 CPU-seconds each, which on a
2-core machine ate most of the gain on a 31-checkpoint run; torch resets its thread pool in a forked child. With
CUDA, or elsewhere, they are spawned (CUDA cannot be forked) and build their own. Each analyses the checkpoints it
is handed one at a time with the same code as a single process (``execution.checkpoint_rows``). Results come back in
step order (``Executor.map``), so the tables equal a single process's row for row. Across checkpoints this beat
batching them with ``torch.func.vmap`` over stacked weights (measured in docs/analyze.md, "Performance").
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor

import torch

from coopetition.analysis.base import Analysis, Context
from coopetition.analysis.config import AnalysisConfig
from coopetition.store.run import Run
from coopetition.analysis.execution import Timer, build_context, checkpoint_rows
from coopetition.store.checkpoint import CheckpointInfo

# the worker process's network, sequences and analyses: inherited from the parent (fork) or built by _build (spawn)
_STATE: tuple[Context, list[Analysis]] | None = None


def _inherit() -> None:
    torch.set_num_threads(1)


def _build(run: Run, evaluators: tuple[str, ...], config: AnalysisConfig) -> None:
    global _STATE
    torch.set_num_threads(1)
    _STATE = build_context(run, evaluators, config)


def _analyse(task: tuple[CheckpointInfo, tuple[str, ...]]) -> tuple[dict, dict[str, float], dict[str, float]]:
    context, analyses = _STATE
    context.timer = timer = Timer()
    rows = checkpoint_rows(context, analyses, *task)
    return rows, dict(timer.seconds), dict(timer.cpu)


def start(context: Context, analyses: list[Analysis], workers: int) -> Executor:
    """A pool of ``workers`` processes holding the run's network (use as a context manager). ``context`` is the
    parent's, already built and verified: workers analyse exactly the checkpoints it lists."""
    global _STATE
    if sys.platform == "linux" and torch.device(context.config.device).type == "cpu":
        _STATE = (context, analyses)  # forked children see it as it is now
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_inherit)
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_build,
                               initargs=(context.run, context.evaluators, context.config))


def checkpoint_rows_in(executor: Executor, tasks: list[tuple[CheckpointInfo, tuple[str, ...]]],
                       timer: Timer) -> Iterator[dict]:
    """``{analysis: {table: rows}}`` per ``(checkpoint, analyses)`` task, in order, all submitted at once (now, not
    on first ``next``); worker time is added to ``timer`` (so its seconds are summed over workers, not elapsed)."""
    results = executor.map(_analyse, tasks)

    def rows() -> Iterator[dict]:
        for found, seconds, cpu in results:
            timer.add(seconds, cpu)
            yield found
    return rows()
