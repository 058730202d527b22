"""``run_sweep``: expand and validate every point, decide per point (skip done or running ones, resume partial ones,
start the rest), record the plan in ``sweep.json``, submit through submitit and, when waiting, aggregate at the end.

Running a sweep again is how it resumes: the run dirs say what is complete.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coopetition.config import config_from_dict
from coopetition.errors import ConfigError, DataError
from coopetition.store.reader import RunReader
from coopetition.sweep.expand import Point, expand
from coopetition.sweep.ledger import add_job, build_ledger, jobs_by_point, read_ledger, write_ledger
from coopetition.sweep.spec import SweepSpec
from coopetition.sweep.state import PointState, point_state
from coopetition.sweep.submit import Task, make_executor, resolve_cluster, submit_and_watch

ACTIONS = {"done": "skip", "running": "skip", "queued": "skip", "not started": "start"}


@dataclass(frozen=True)
class Step:
    point: Point
    state: PointState
    action: str  # skip | start | resume | restart


def plan(spec: SweepSpec, points: list[Point]) -> list[Step]:
    """What ``run`` would do with each point. A run dir holding a different config is a ConfigError."""
    jobs = jobs_by_point(read_ledger(spec.out))
    steps = []
    for point in points:
        check_same_config(point)
        state = point_state(point, jobs.get(point.name, []), spec.logs)
        action = ACTIONS.get(state.state) or ("resume" if state.resumable else "restart")
        if action == "restart" and not (point.run_dir / "config.json").is_file():
            action = "start"
        steps.append(Step(point, state, action))
    return steps


def check_same_config(point: Point) -> None:
    path = point.run_dir / "config.json"
    if not path.is_file():
        return
    recorded = RunReader(point.run_dir).config().get("config")  # bounded, inside the run; a bad one: DataError
    if not isinstance(recorded, dict):
        raise DataError(f"{path} has no 'config' section; move that run dir away")
    try:
        recorded = config_from_dict(recorded).to_dict()
    except ConfigError:
        pass
    wanted, have = _flat(json.loads(json.dumps(point.config))), _flat(json.loads(json.dumps(recorded)))
    differing = sorted(k for k in wanted.keys() | have.keys() if wanted.get(k) != have.get(k))
    if differing:
        key = differing[0]
        raise ConfigError(f"{point.run_dir} was trained with {key} = {have.get(key)!r}, the sweep now asks for "
                          f"{wanted.get(key)!r}; move that run dir away or give the sweep another out folder")


def run_sweep(spec: SweepSpec, dry_run: bool = False, wait: bool = False,
              say: Callable[[str], None] = print) -> list[Step]:
    """Run (or, with ``dry_run``, only plan) the sweep; returns the plan. Local and debug clusters always wait;
    Slurm returns once the job array is submitted unless ``wait``."""
    points = expand(spec)
    steps = plan(spec, points)
    if dry_run:
        return steps
    cluster = resolve_cluster(spec.executor.cluster)
    tasks = [Task(s.point, s.action) for s in steps if s.action != "skip"]
    if not tasks:
        say(f"nothing to run: all {len(steps)} points are done or running")
        return steps
    executor = make_executor(spec, cluster)  # the last check that can fail: nothing is written before it
    ledger = build_ledger(spec, points, read_ledger(spec.out))
    write_ledger(spec.out, ledger)
    say(f"{len(tasks)} of {len(steps)} runs to {cluster} ({', '.join(_counts(tasks))}); "
        f"logs in {spec.logs.parent}")

    def on_submit(task: Task, record: dict[str, Any]) -> None:
        add_job(ledger, task.point.name, record)
        write_ledger(spec.out, ledger)

    def on_finish(task: Task, record: dict[str, Any]) -> None:
        for job in jobs_by_point(ledger)[task.point.name]:
            if job["job_id"] == record["job_id"]:
                job.update(record)
        write_ledger(spec.out, ledger)

    submit_and_watch(spec, executor, tasks, wait, on_submit, on_finish, say)
    return steps


def _counts(tasks: list[Task]) -> list[str]:
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task.action] = counts.get(task.action, 0) + 1
    return [f"{n} {action}" for action, n in counts.items()]


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): data}


def sweep_status(spec: SweepSpec) -> list[tuple[Point, PointState]]:
    """Every point of the sweep file with its state (nothing is written)."""
    jobs = jobs_by_point(read_ledger(spec.out))
    return [(p, point_state(p, jobs.get(p.name, []), spec.logs)) for p in expand(spec)]
