"""Where a point stands: done, running, queued, failed, partial (step k of n) or not started.

Progress comes from the run dir (its manifest lists complete checkpoints and resume states, its OS lock marks a live
writer); job fate comes from the ledger's records and, for jobs whose outcome the submitter did not see (Slurm
without ``--wait``), from submitit (Slurm's accounting) and the job's JSON outcome file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coopetition.bounded import read_json
from coopetition.errors import DataError
from coopetition.store.lock import is_locked
from coopetition.store.manifest import Manifest
from coopetition.store.reader import RunReader
from coopetition.sweep.expand import Point

SHOWN = ("flip", "ciwl")  # evaluators whose last in-context accuracy the status table shows
SLURM_WAITING = ("PENDING", "REQUEUED", "CONFIGURING", "RESIZING", "SUSPENDED")
SLURM_RUNNING = ("RUNNING", "COMPLETING")


@dataclass(frozen=True)
class PointState:
    state: str  # done | running | queued | failed | partial | not started
    step: int | None  # last complete checkpoint (None: none yet)
    steps: int  # train.steps of the point
    resumable: bool  # the manifest lists a resume state: `train(..., resume=True)` can continue it
    detail: str = ""  # why it failed
    accuracy: dict[str, float] = field(default_factory=dict)  # evaluator -> in_context_acc at the last eval

    @property
    def label(self) -> str:
        if self.state in ("partial", "failed", "running") and self.step is not None:
            return f"{self.state} (step {self.step} of {self.steps})"
        return self.state


def point_state(point: Point, jobs: list[dict[str, Any]], logs: Path) -> PointState:
    run = point.run_dir
    steps = point.config["train"]["steps"]
    manifest = _manifest(run)
    step = max((e.step for e in manifest.checkpoints), default=None)
    resumable = bool(manifest.resume)
    accuracy = last_accuracy(run)
    fate = job_fate(jobs[-1], logs) if jobs else ""
    locked = is_locked(run)
    if step == steps and not locked:
        return PointState("done", step, steps, resumable, accuracy=accuracy)
    if fate in ("queued", "running") or locked:
        return PointState("running" if locked else fate, step, steps, resumable, accuracy=accuracy)
    if fate.startswith("failed"):
        return PointState("failed", step, steps, resumable, fate.removeprefix("failed: "), accuracy)
    if _has_config(run):
        return PointState("partial", step, steps, resumable, accuracy=accuracy)
    return PointState("not started", None, steps, False)


def _has_config(run: Path) -> bool:
    try:
        RunReader.open(run)
    except DataError:
        return False
    return True


def _manifest(run: Path) -> Manifest:
    """What the run has committed; nothing for no run, or one whose manifest cannot be read (resume will say why)."""
    try:
        return RunReader.open(run).manifest()
    except DataError:
        return Manifest()


def last_accuracy(run: Path) -> dict[str, float]:
    """Each evaluator's last in-context accuracy; nothing when eval.csv is absent or unreadable (bounded read)."""
    try:
        table = RunReader(run).eval_table()
    except DataError:
        return {}
    table = table[(table["metric"] == "in_context_acc") & (table["step"] == table["step"].max())]
    return {str(e): float(v) for e, v in zip(table["evaluator"], table["value"])}


def job_fate(job: dict[str, Any], logs: Path) -> str:
    """'queued', 'running', 'failed: WHY', 'cancelled', 'done' or '' (no news: trust the run dir)."""
    if job.get("outcome"):
        return job["outcome"]
    if job["cluster"] == "slurm":
        state = _slurm_state(job["job_id"], logs)
        if state in SLURM_WAITING:
            return "queued"
        if state in SLURM_RUNNING:
            return "running"
        if state not in ("COMPLETED", "UNKNOWN", ""):
            return f"failed: Slurm state {state}"
    return _result_file_fate(job["job_id"], logs) if job["cluster"] != "debug" else ""


def _slurm_state(job_id: str, logs: Path) -> str:
    import submitit

    try:
        return submitit.SlurmJob(folder=logs, job_id=job_id).state.split()[0]
    except Exception:  # no sacct here, or the job is gone from accounting: the run dir decides
        return ""


def _result_file_fate(job_id: str, logs: Path) -> str:
    """The job's JSON outcome (``job.run_point`` writes it); submitit's own result pickle is never opened here."""
    from submitit.core.utils import JobPaths

    from coopetition.sweep.job import OUTCOME_FILE

    path = JobPaths(logs, job_id).folder / OUTCOME_FILE
    try:
        outcome = read_json(path, "job outcome")
    except DataError:  # no outcome yet (still running, or killed before it could write one), or not ours
        return ""
    if not isinstance(outcome, dict):
        return ""
    return "done" if outcome.get("outcome") == "success" else f"failed: {last_line(str(outcome.get('error', '')))}"


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text
