"""``coopetition zoom RUN --window A:B|EVENT±W --checkpoints SCHEDULE [--evals SCHEDULE]``: re-train a window of a
finished run to add dense checkpoints and eval rows (docs/zoom.md).

Validates everything (the run, the window, the schedules) before taking the run's lock; a mistake is one line and
exit code 2 with nothing written. A run still being written (its lock is held) is refused the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    """Add the ``zoom`` subcommand to an argparse subparsers object (sets ``func``)."""
    p = subparsers.add_parser("zoom", help="re-train a window of a run to add dense checkpoints and eval rows",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run directory written by `coopetition train`")
    p.add_argument("--window", required=True, metavar="A:B|EVENT±W",
                   help="steps A:B (inclusive; 2k, 500kseq allowed) or an event with a width: icl_peak, "
                        "icl_eval_peak, crossover, phase_change, e.g. icl_peak±2000 (or icl_peak+-2000)")
    p.add_argument("--checkpoints", required=True, metavar="SCHEDULE",
                   help="checkpoint schedule in the train grammar (every:100, at:..., log:N, upsample:A:B:K), "
                        "restricted to the window")
    p.add_argument("--evals", metavar="SCHEDULE", help="eval schedule, likewise (default: at the checkpoints)")
    p.add_argument("--threads", type=int, help="torch CPU threads for the re-training (default: the run's "
                                                "train.threads); a count that changes the bits is refused")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_zoom)


def run_zoom(args: argparse.Namespace) -> int:
    from coopetition.errors import ConfigError
    from coopetition.store.lock import is_locked
    from coopetition.store.run import Run
    from coopetition.train.zoom import zoom
    from coopetition.zoom.window import parse_window, window_steps

    run = Run.open(args.run, verify=False)  # zoom verifies what it loads, and every checkpoint it passes
    if is_locked(args.run):
        raise ConfigError(f"run dir {args.run} is still being written (training, resuming or zooming); "
                          f"zoom it once that has finished")
    config, have = run.config, list(run.steps)
    if not have:
        raise ConfigError(f"run dir {args.run} has no checkpoint yet")
    tc = config.train
    window = parse_window(args.window, run.eval_table(), tc.batch_size, max(have))
    ckpts = window_steps(args.checkpoints, window, tc.steps, tc.batch_size, "--checkpoints")
    evals = window_steps(args.evals, window, tc.steps, tc.batch_size, "--evals") if args.evals else ckpts
    if args.threads is not None and not 1 <= args.threads <= 1024:
        raise ConfigError(f"--threads must be in [1, 1024], got {args.threads}")
    result = zoom(args.run, ckpts, evals, progress=not args.no_progress, threads=args.threads)
    plan = result.plan
    if plan.empty:
        print(f"nothing to do: {args.run} already has every checkpoint and eval step of {window.label}")
        return 0
    origin = "the seeds" if plan.start == 0 else f"the resume state at step {plan.start}"
    print(f"zoomed {args.run} ({window.label}): {len(plan.checkpoints)} new checkpoints, {len(plan.evals)} new "
          f"eval steps; re-trained steps {plan.start}..{plan.end} from {origin}, {len(plan.verify)} existing "
          f"checkpoints reproduced bit for bit; {result.bytes_written / 1e6:.2f} MB written in "
          f"{result.wall_seconds:.0f} s")
    return 0
