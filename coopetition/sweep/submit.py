"""submitit plumbing: pick the cluster, build the executor from ``[executor]``, submit runs and watch them.

Slurm gets one job array (``executor.batch()``) throttled by ``slurm_array_parallelism``; the local executor
starts one process per run, at most ``max_parallel`` at a time (it has no throttle of its own, so the submitter stays
alive and feeds it); the debug executor runs each job in this process when it is waited on.
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coopetition.errors import ConfigError
from coopetition.store.provenance import now_iso
from coopetition.sweep.expand import Point
from coopetition.sweep.job import run_point
from coopetition.sweep.spec import SweepSpec
from coopetition.sweep.state import last_line

POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Task:
    """A point to run and how: ``start`` (fresh), ``resume`` (from its last checkpoint) or ``restart`` (replace a
    partial run that has no resume state)."""

    point: Point
    action: str

    def arguments(self, threads: int) -> tuple[Any, ...]:
        return (self.point.config, str(self.point.run_dir.resolve()), self.action == "resume",
                self.action == "restart" or (self.action == "start" and self.point.run_dir.exists()), threads)


def resolve_cluster(requested: str) -> str:
    """``auto`` is submitit's choice (Slurm where ``srun`` is on PATH, else local); ``slurm`` needs Slurm's
    ``sbatch`` and ``srun``."""
    import submitit

    if requested == "auto":
        return submitit.AutoExecutor.which()
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if requested == "slurm" and missing:
        raise ConfigError(f"cluster 'slurm' needs Slurm's {' and '.join(missing)} on PATH (not found here); "
                          "use --cluster local, or cluster = \"auto\" in the sweep file")
    return requested


def make_executor(spec: SweepSpec, cluster: str):
    import submitit

    ex = spec.executor
    params: dict[str, Any] = {"name": f"sweep-{spec.name}", "timeout_min": ex.timeout_min,
                              "cpus_per_task": ex.cpus_per_task, "gpus_per_node": ex.gpus_per_node,
                              "mem_gb": ex.mem_gb}
    if cluster == "slurm":
        params |= {f"slurm_{key}": value for key, value in ex.slurm.items()}
        params.setdefault("slurm_array_parallelism", ex.max_parallel)
    try:
        executor = submitit.AutoExecutor(folder=spec.logs, cluster=cluster)
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    except (NameError, ValueError, AssertionError, TypeError, RuntimeError) as err:
        raise ConfigError(f"[executor]: {last_line(str(err))}") from None
    return executor


Record = Callable[[Task, dict[str, Any]], None]


def submit_and_watch(spec: SweepSpec, executor, tasks: list[Task], wait: bool, on_submit: Record,
                     on_finish: Record, say: Callable[[str], None]) -> None:
    """Submit ``tasks``; with ``wait`` (always for local and debug) watch them to the end. ``on_submit`` gets each
    job's record (job_id, cluster, action, submitted) and ``on_finish`` the same record with its ``outcome``."""
    cluster = executor.cluster
    threads = spec.executor.threads
    if cluster == "local":
        _feed_local(executor, tasks, spec.executor.max_parallel, threads, on_submit, on_finish, say)
        return
    with executor.batch():
        jobs = [executor.submit(run_point, *task.arguments(threads)) for task in tasks]
    for task, job in zip(tasks, jobs):
        on_submit(task, _record(job, cluster, task))
    if wait or cluster == "debug":
        _watch(list(zip(tasks, jobs)), cluster, on_finish, say)


def _record(job, cluster: str, task: Task) -> dict[str, Any]:
    return {"job_id": str(job.job_id), "cluster": cluster, "action": task.action, "submitted": now_iso()}


def _feed_local(executor, tasks: list[Task], max_parallel: int, threads: int, on_submit: Record,
                on_finish: Record, say: Callable[[str], None]) -> None:
    queue, active = deque(tasks), {}
    try:
        while queue or active:
            while queue and len(active) < max_parallel:
                task = queue.popleft()
                job = executor.submit(run_point, *task.arguments(threads))
                record = _record(job, "local", task)
                on_submit(task, record)
                active[job.job_id] = (task, job, record)
            time.sleep(POLL_SECONDS)
            for job_id, (task, job, record) in list(active.items()):
                if job.done():
                    _finish(task, job, record, on_finish, say)
                    del active[job_id]
    except KeyboardInterrupt:
        for task, job, record in active.values():
            job.cancel(check=False)
            on_finish(task, record | {"outcome": "cancelled"})
        raise


def _watch(pairs: list, cluster: str, on_finish: Record, say: Callable[[str], None]) -> None:
    records = {id(job): {"job_id": str(job.job_id), "cluster": cluster, "action": task.action}
               for task, job in pairs}
    remaining = list(pairs)
    while remaining:
        for task, job in list(remaining):
            if cluster == "debug" or job.done():  # debug: exception() runs the job here (done() would start pdb)
                _finish(task, job, records[id(job)], on_finish, say)
                remaining.remove((task, job))
        if remaining:
            time.sleep(POLL_SECONDS)


def error_line(error: BaseException) -> str:
    """One line for a failed job: the job's own exception, not submitit's wrapper (which ends with log paths)."""
    text = str(error)
    separator = "----------------------"
    if text.count(separator) >= 2:  # FailedJobError: "... with trace:\n---\nTRACEBACK\n---\nYou can check ..."
        return last_line(text.split(separator)[1])
    return f"{type(error).__name__}: {last_line(text)}"


def _finish(task: Task, job, record: dict[str, Any], on_finish: Record, say: Callable[[str], None]) -> None:
    error = job.exception()
    outcome = "done" if error is None else f"failed: {error_line(error)}"
    on_finish(task, record | {"outcome": outcome, "finished": now_iso()})
    say(f"{task.point.name}: {outcome}")
