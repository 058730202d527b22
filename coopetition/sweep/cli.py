"""``coopetition sweep run|status|aggregate SWEEP.toml``: grids of runs through submitit (docs/sweeps.md).

``run`` validates every point first (one bad value: one line, exit 2, nothing written or submitted), then starts the
points that have no run, continues partial ones from their last checkpoint and skips finished ones — running it
again is how a sweep resumes. Exit code 1 when a run failed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from coopetition.sweep.spec import CLUSTERS


def add_parser(subparsers) -> None:
    """Add ``sweep`` (with ``run``, ``status`` and ``aggregate``) to an argparse subparsers object."""
    p = subparsers.add_parser("sweep", help="run a grid of trainings through submitit (local or Slurm), aggregate",
                              description=__doc__)
    sub = p.add_subparsers(dest="sweep_command", required=True)
    run = sub.add_parser("run", help="start, resume or skip every point of the grid")
    run.add_argument("--dry-run", action="store_true", help="print the expanded points and what would happen")
    run.add_argument("--cluster", choices=CLUSTERS, help="replace the sweep file's executor.cluster")
    run.add_argument("--wait", action="store_true", help="Slurm: wait for the jobs, then aggregate "
                                                          "(local and debug always wait)")
    run.set_defaults(func=run_run)
    status = sub.add_parser("status", help="one line per point: state, progress, last flip/ciwl accuracy")
    status.set_defaults(func=run_status)
    agg = sub.add_parser("aggregate", help="aggregate.csv, summary.csv (across seeds) and sweep.html")
    agg.add_argument("--band", choices=("std", "minmax"), default="std", help="shaded band (default: std)")
    agg.add_argument("--include-partial", action="store_true", help="also aggregate unfinished runs")
    agg.set_defaults(func=run_aggregate)
    for command in (run, status, agg):
        command.add_argument("sweep", type=Path, help="the sweep file (TOML)")
        command.add_argument("--out", type=Path, help="sweep folder (default: the file's out, else "
                                                      "checkpoints/sweeps/NAME)")


def _spec(args: argparse.Namespace):
    from coopetition.sweep.spec import read_sweep

    return read_sweep(args.sweep, out=args.out, cluster=getattr(args, "cluster", None))


def run_run(args: argparse.Namespace) -> int:
    from coopetition.sweep.run import run_sweep, sweep_status

    spec = _spec(args)
    steps = run_sweep(spec, dry_run=args.dry_run, wait=args.wait)
    if args.dry_run:
        print(f"{len(steps)} points; cluster {_cluster_note(spec.executor.cluster)}; out {spec.out}")
        print(table(["point", "action", "state", "run dir"],
                    [[s.point.name, s.action, s.state.label, str(s.point.run_dir)] for s in steps]))
        return 0
    states = [state for _, state in sweep_status(spec)]
    failed = sum(s.state == "failed" for s in states)
    if all(s.state == "done" for s in states):
        return run_aggregate(argparse.Namespace(**vars(args), band="std", include_partial=False))
    waiting = sum(s.state in ("queued", "running") for s in states)
    print(f"{sum(s.state == 'done' for s in states)} of {len(states)} runs done, {waiting} queued or running, "
          f"{failed} failed; `coopetition sweep status {args.sweep}` follows them")
    return 1 if failed else 0


def _cluster_note(requested: str) -> str:
    from coopetition.errors import ConfigError
    from coopetition.sweep.submit import resolve_cluster

    try:
        resolved = resolve_cluster(requested)
    except ConfigError as err:
        return f"{requested} (a real run would stop: {err})"
    return f"{resolved} (auto)" if requested == "auto" else resolved


def run_status(args: argparse.Namespace) -> int:
    from coopetition.sweep.run import sweep_status
    from coopetition.sweep.state import SHOWN

    spec = _spec(args)
    rows = []
    for point, state in sweep_status(spec):
        accuracy = [f"{state.accuracy[e]:.3f}" if e in state.accuracy else "-" for e in SHOWN]
        rows.append([point.name, str(point.run_dir), state.label, *accuracy, state.detail])
    print(table(["point", "run dir", "state", *SHOWN, "detail"], rows))
    return 0


def run_aggregate(args: argparse.Namespace) -> int:
    from coopetition.sweep.aggregate import aggregate_sweep

    result = aggregate_sweep(_spec(args), include_partial=args.include_partial, band=args.band)
    note = f" (left out, unfinished: {', '.join(result.skipped)})" if result.skipped else ""
    print(f"aggregated {result.runs} runs{note}: {result.table}, {result.summary}, {result.figure}")
    return 0


def table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns; trailing empty columns trimmed."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)
