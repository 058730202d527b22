"""Command-line pieces for ``coopetition train`` and ``coopetition analyze`` (wired in ``coopetition.cli``):
``--intervene SPEC`` (repeatable, parsed here, once, into intervention objects) and ``--init-from RUN@STEP``. The
help text is generated from the registry, so a new intervention class shows up without editing this file."""

from __future__ import annotations

import argparse

from coopetition.interventions.base import REGISTRY, CheckpointRef, Intervention, parse_spec


def registry_help(analysis: bool = False) -> str:
    """One line per registered intervention: its usage (``graft_in``/``graft_out`` share one)."""
    lines, seen = [], set()
    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        if cls.usage in seen or (not analysis and not cls.training):
            continue
        seen.add(cls.usage)
        lines.append(f"  {cls.usage}" + (f" -- {cls.summary}" if cls.summary else ""))
    return "\n".join(lines)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--intervene", action="append", default=[], metavar="SPEC",
                        help="intervention active in every training step and evaluation (repeatable; replaces the "
                             "config's list; see docs/interventions.md and the list below)")
    parser.add_argument("--init-from", dest="init_from", metavar="RUN@STEP",
                        help="start from another run's checkpoint weights with a fresh optimizer (STEP may be 'last')")


def add_analyze_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--intervene", action="append", default=[], metavar="SPEC",
                        help="intervention applied at every analysed checkpoint on top of the run's own (repeatable; "
                             "same grammar as train; see the list below)")


def interventions_from_args(args: argparse.Namespace) -> tuple[Intervention, ...]:
    """The ``--intervene`` specs as objects (architecture checks happen against the run's model config)."""
    return tuple(parse_spec(spec) for spec in (getattr(args, "intervene", None) or ()))


def init_from_arg(args: argparse.Namespace) -> CheckpointRef | None:
    text = getattr(args, "init_from", None)
    return CheckpointRef.parse(text) if text else None
