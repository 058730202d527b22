"""Command-line pieces for ``coopetition train`` and ``coopetition analyze`` (wired in ``coopetition.cli``):
``--intervene SPEC`` (repeatable) and ``--init-from RUN@STEP``, turned into ``section.field=value`` overrides."""

from __future__ import annotations

import argparse
import json

from coopetition.interventions.base import parse_spec
from coopetition.interventions.graft import CheckpointRef

INTERVENE_HELP = ("intervention active in every training step and evaluation, e.g. ablate:0:1,0:4, preserve:patterns, "
                  "induction:1:3:0.8, prev_token:0:2:1.0:labels, graft_out:RUN@STEP:0 (repeatable; replaces the "
                  "config's list; see docs/interventions.md)")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--intervene", action="append", default=[], metavar="SPEC", help=INTERVENE_HELP)
    parser.add_argument("--init-from", dest="init_from", metavar="RUN@STEP",
                        help="start from another run's checkpoint weights with a fresh optimizer (STEP may be 'last')")


def add_analyze_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--intervene", action="append", default=[], metavar="SPEC",
                        help="intervention applied on top of the run's own (repeatable; see docs/interventions.md)")


def specs_from_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The ``--intervene`` specs, syntax-checked (architecture checks happen when the config is built)."""
    specs = tuple(getattr(args, "intervene", None) or ())
    for spec in specs:
        parse_spec(spec)
    return specs


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """``["interventions=[...]", "train.init_from=\\"RUN@STEP\\""]`` for the flags that were given."""
    overrides = []
    specs = specs_from_args(args)
    if specs:
        overrides.append(f"interventions={json.dumps(list(specs))}")
    init_from = getattr(args, "init_from", None)
    if init_from:
        CheckpointRef.parse(init_from)
        overrides.append(f"train.init_from={json.dumps(init_from)}")
    return overrides
