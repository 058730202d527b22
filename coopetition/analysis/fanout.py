"""``analyze --executor local|slurm``: the checkpoints still to compute become submitit jobs, as ``sweep``'s runs do.

The checkpoints left after the cache lookup are cut into ``jobs`` contiguous chunks (in step order); each chunk is
one job (one Slurm array task, or one local process) that opens the run, builds the same context as a single
process (``execution.build_context``) and writes each checkpoint's results into the shared analysis cache
(``cache.py``) as it finishes. The parent waits for the jobs and then merges exactly as for a cached re-run: the
tables are built from the cache entries in step order, so they are byte-identical to a single process's. Nothing
comes back through submitit's pickles; a job that failed leaves its checkpoints absent, and the parent says which
and where the job's log is. The cache must be on a file system the jobs share (the run folder on a cluster).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coopetition.errors import ConfigError

if TYPE_CHECKING:
    from coopetition.analysis.base import Context
    from coopetition.store.checkpoint import CheckpointInfo

EXECUTORS = ("local", "slurm")
POLL_SECONDS = 0.5
GRACE_SECONDS = 120


@dataclass(frozen=True)
class FanOut:
    """Where and how the jobs run. ``executor``: ``local`` (processes on this machine) or ``slurm``; ``jobs``: how
    many chunks of checkpoints (at most one per checkpoint); ``partition`` (Slurm), ``time_min`` (per job), ``mem_gb``,
    ``cpus`` (per job; also the torch threads the job uses); ``folder``: submitit's logs (default
    ``CACHE/jobs``)."""

    executor: str = "local"
    jobs: int = 2
    partition: str | None = None
    time_min: int = 60
    mem_gb: float = 4.0
    cpus: int = 1
    folder: Path | None = None

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        for name, low in (("jobs", 1), ("time_min", 1), ("cpus", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"--{name.replace('_min', '')} must be >= {low}, got {getattr(self, name)}")
        if not 0 < self.mem_gb < float("inf"):
            raise ConfigError(f"--mem must be > 0 GB, got {self.mem_gb}")

    def folder_for(self, cache_root: Path) -> Path:
        return Path(self.folder) if self.folder is not None else Path(cache_root) / "jobs"


def chunks(items: list, n: int) -> list[list]:
    """``items`` in ``min(n, len(items))`` contiguous, near-equal chunks, in order."""
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (i < extra)
        out.append(items[start:end])
        start = end
    return out


def make_executor(fan_out: FanOut, folder: Path):
    """A submitit executor for ``fan_out`` (Slurm needs ``sbatch`` and ``srun`` on PATH)."""
    import shutil

    import submitit

    if fan_out.executor == "slurm":
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise ConfigError(f"--executor slurm needs Slurm's {' and '.join(missing)} on PATH (not found here); "
                              "use --executor local")
    params: dict[str, Any] = {"name": "coopetition-analyze", "timeout_min": fan_out.time_min,
                              "cpus_per_task": fan_out.cpus, "mem_gb": fan_out.mem_gb}
    if fan_out.executor == "slurm":
        params["slurm_array_parallelism"] = fan_out.jobs
        if fan_out.partition is not None:
            params["slurm_partition"] = fan_out.partition
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=fan_out.executor)
        executor.update_parameters(**params)
    except (NameError, ValueError, AssertionError, TypeError, RuntimeError) as err:
        raise ConfigError(f"--executor {fan_out.executor}: {str(err).strip().splitlines()[-1]}") from None
    return executor


def run_jobs(fan_out: FanOut, context: Context, todo: list[tuple[CheckpointInfo, tuple[str, ...]]],
             cache_root: Path, progress_bar: bool = True) -> list[Any]:
    """Submit one job per chunk of ``todo`` and wait for all of them (results land in the cache)."""
    from dataclasses import replace

    from coopetition.analysis.execution import sha256_of

    folder = fan_out.folder_for(cache_root)
    executor = make_executor(fan_out, folder)
    config = replace(context.config, threads=fan_out.cpus, workers=1)
    run_dir = str(Path(context.run.path).resolve())
    args = [(run_dir, context.evaluators, config, [(info.step, sha256_of(info), names) for info, names in chunk],
             str(Path(cache_root).resolve())) for chunk in chunks(todo, fan_out.jobs)]
    if fan_out.executor == "slurm":
        with executor.batch():
            jobs = [executor.submit(analyse_chunk, *a) for a in args]
    else:
        jobs = [executor.submit(analyse_chunk, *a) for a in args]
    if progress_bar:
        print(f"analyze: {len(todo)} checkpoints in {len(jobs)} {fan_out.executor} jobs "
              f"({', '.join(str(j.job_id) for j in jobs)}); logs in {folder}")
    # a job the scheduler lost (never started, killed without a result file) must not hang this process: jobs are
    # killed after time_min, so waiting longer than that plus a grace period means they are not coming back
    deadline = time.monotonic() + 60 * fan_out.time_min + GRACE_SECONDS
    try:
        while not all(job.done() for job in jobs):
            if time.monotonic() > deadline:
                for job in jobs:
                    job.cancel(check=False)
                break
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        for job in jobs:
            job.cancel(check=False)
        raise
    return jobs


def analyse_chunk(run_dir: str, evaluators: tuple[str, ...], config, tasks: list[tuple[int, str, tuple[str, ...]]],
                  cache_root: str) -> int:
    """One job: analyse ``tasks`` (step, manifest sha256, analyses) of the run and cache each result. Returns the
    number of checkpoints done. A checkpoint whose sha256 no longer matches (the run changed) is left out."""
    import torch

    from coopetition.analysis.cache import Store
    from coopetition.analysis.execution import build_context, cache_keys, checkpoint_rows, sha256_of
    from coopetition.store.run import Run

    torch.set_num_threads(config.threads or 1)
    run = Run.open(Path(run_dir))
    context, analyses = build_context(run, tuple(evaluators), config)
    keys = cache_keys(context, [a for a in analyses if a.needs_model])
    store = Store(Path(cache_root))
    infos = {c.step: c for c in run.checkpoints}
    done = 0
    for step, sha256, names in tasks:
        info = infos.get(step)
        if info is None or sha256_of(info) != sha256:
            continue
        for name, tables in checkpoint_rows(context, analyses, info, names).items():
            store.save(name, keys[name], sha256, step, tables)
        done += 1
    return done
