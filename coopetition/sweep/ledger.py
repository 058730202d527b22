"""``OUT/sweep.json``: the expanded points, their run dirs and resolved configs, and every submitit job each point
has had (id, cluster, action, outcome). Rewritten atomically after every change; the run dirs stay the truth about
progress, this file is the truth about jobs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from coopetition.errors import DataError
from coopetition.store.atomic import atomic_write_text
from coopetition.store.provenance import now_iso
from coopetition.sweep.expand import SEED_AXES, Point
from coopetition.sweep.spec import SweepSpec

LEDGER = "sweep.json"


def read_ledger(out: Path) -> dict[str, Any] | None:
    path = out / LEDGER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON: {err}") from None


def build_ledger(spec: SweepSpec, points: list[Point], previous: dict[str, Any] | None) -> dict[str, Any]:
    """The ledger for the current expansion; points already known keep their job history."""
    history = {p["name"]: p.get("jobs", []) for p in (previous or {}).get("points", [])}
    return {
        "name": spec.name, "sweep_file": str(spec.path.resolve()), "out": str(spec.out.resolve()),
        "created": (previous or {}).get("created", now_iso()), "updated": now_iso(),
        "grid": spec.grid, "seed_axes": [a for a in spec.grid if a in SEED_AXES],
        "executor": dataclasses.asdict(spec.executor),
        "points": [{"name": p.name, "values": p.values, "run_dir": str(p.run_dir.relative_to(spec.out)),
                    "config": p.config, "jobs": history.get(p.name, [])} for p in points],
    }


def write_ledger(out: Path, ledger: dict[str, Any]) -> None:
    ledger["updated"] = now_iso()
    atomic_write_text(out / LEDGER, json.dumps(ledger, indent=1) + "\n")


def jobs_by_point(ledger: dict[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    return {p["name"]: p.get("jobs", []) for p in (ledger or {}).get("points", [])}


def add_job(ledger: dict[str, Any], name: str, record: dict[str, Any]) -> dict[str, Any]:
    """Append a job record to a point's history and return it (mutate it to record the outcome)."""
    point = next(p for p in ledger["points"] if p["name"] == name)
    point["jobs"].append(record)
    return record
