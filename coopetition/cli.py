"""The ``coopetition`` command. It only parses, validates and calls the library; user mistakes become one line on
stderr and exit code 2 (``CoopetitionError``), never a traceback."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from coopetition.errors import ConfigError, CoopetitionError, CoopetitionWarning

# Flags that set one config field each (the full set is reachable with --set section.field=value).
SHORTCUTS: dict[str, tuple[str, type]] = {
    "lr": ("train.lr", float),
    "steps": ("train.steps", int),
    "batch_size": ("train.batch_size", int),
    "weight_decay": ("train.weight_decay", float),
    "device": ("train.device", str),
    "threads": ("train.threads", int),
    "checkpoints": ("train.checkpoint_schedule", str),
    "evals": ("train.eval_schedule", str),
    "classes": ("bank.classes", int),
    "exemplars": ("bank.exemplars", int),
    "bank": ("bank.source", str),
    "seed": ("seeds.init", int),
    "train_seed": ("seeds.train", int),
    "eval_seed": ("seeds.eval", int),
    "eval_sets": ("eval.import_path", str),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and exit 2) rather than the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def one_line(message: str) -> str:
    """Control characters from user input (a newline in a value) are escaped, so an error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))


# Every subcommand: its one-line help for the top-level listing, and where its full parser is built. The full parser
# of a subcommand imports what its help and checks need (the intervention and analysis registries, hence torch); only
# the subcommand being run gets one, so ``coopetition --help`` and a mistake in one subcommand never pay for the
# others. tests/test_cli.py checks that each line here equals the help its builder gives.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train a model with dense checkpoints and the strategy evaluators", "coopetition.cli:add_train_parser"),
    "presets": ("list the named configs", "coopetition.cli:add_presets_parser"),
    "analyze": ("dissect a run across checkpoints (ablation, patching, clamping, ...)",
                "coopetition.pipeline.cli:add_parser"),
    "bank": ("build an image bank (Omniglot features, rendered glyphs) or inspect any bank",
             "coopetition.images.cli:add_parser"),
    "sweep": ("run a grid of trainings through submitit (local or Slurm), aggregate", "coopetition.sweep.cli:add_parser"),
    "toy": ("minimal mathematical models of strategy coopetition (C25) and IH24", "coopetition.toy.cli:add_parser"),
    "zoom": ("re-train a window of a run to add dense checkpoints and eval rows", "coopetition.zoom.cli:add_parser"),
}


def build_parser(command: str | None = None, *, lazy: bool = False) -> argparse.ArgumentParser:
    """The ``coopetition`` parser. By default every subcommand's full parser is built (for tests and docs). With
    ``lazy=True`` only ``command``'s is (``None``: none), the others are placeholders with their one-line help,
    which is all the top-level ``--help`` and an unknown-command error show."""
    parser = OneLineParser(prog="coopetition", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for name, (help_line, builder) in COMMANDS.items():
        if lazy and name != command:
            sub.add_parser(name, help=help_line)
            continue
        module, function = builder.split(":")
        getattr(importlib.import_module(module), function)(sub)
    return parser


def command_of(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names: its first word that is not an option (the top level has only ``--help``)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def add_train_parser(sub) -> None:
    from coopetition.interventions import cli as intervention_cli
    from coopetition.presets import DEFAULT_PRESET

    train = sub.add_parser("train", help=COMMANDS["train"][0],
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=f"interventions (--intervene):\n{intervention_cli.registry_help()}")
    train.add_argument("--run-dir", type=Path, help="where the run is written (required unless --resume RUN)")
    source = train.add_mutually_exclusive_group()
    source.add_argument("--preset", help="named config (see `coopetition presets`); default: "
                                         f"{DEFAULT_PRESET} (a --config file is layered on it too)")
    source.add_argument("--config", type=Path, help="TOML or JSON config file (sections as in config.json)")
    mode = train.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace an existing run dir")
    mode.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN",
                      help="continue RUN (or --run-dir) from its last complete checkpoint, optimizer and RNG state")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                       help="override any config field, e.g. --set task.mixture.0.burstiness=2 (repeatable)")
    for flag, (path, kind) in SHORTCUTS.items():
        train.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=kind, help=f"sets {path}")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    intervention_cli.add_train_arguments(train)
    train.set_defaults(func=run_train)


def add_presets_parser(sub) -> None:
    presets = sub.add_parser("presets", help=COMMANDS["presets"][0])
    presets.add_argument("--show", metavar="NAME", help="print one preset's full config as JSON")
    presets.set_defaults(func=run_presets)


def resolve_config(args: argparse.Namespace):
    """Preset or file, then shortcut flags, then --set overrides (later wins)."""
    from coopetition.config import apply_override, config_from_dict, merge, read_config_file
    from coopetition.presets import DEFAULT_PRESET, get_preset

    data: dict[str, Any] = get_preset(args.preset or DEFAULT_PRESET).to_dict()
    if args.config:
        data = merge(data, read_config_file(args.config))
    for flag, (path, _) in SHORTCUTS.items():
        value = getattr(args, flag)
        if value is not None:
            data = apply_override(data, f"{path}={json.dumps(value)}")
    from coopetition.interventions.cli import init_from_arg, interventions_from_args

    interventions, init_from = interventions_from_args(args), init_from_arg(args)  # parsed once, here
    if interventions:
        data = {**data, "interventions": [i.spec for i in interventions]}
    if init_from is not None:
        data = {**data, "train": {**data["train"], "init_from": str(init_from)}}
    for assignment in args.overrides:
        data = apply_override(data, assignment)
    return config_from_dict(data)


def run_train(args: argparse.Namespace) -> int:
    if isinstance(args.resume, str):  # --resume RUN
        if args.run_dir is not None and args.run_dir != Path(args.resume):
            raise ConfigError(f"--resume {args.resume} and --run-dir {args.run_dir} name different runs")
        args.run_dir, args.resume = Path(args.resume), True
    if args.run_dir is None:
        raise ConfigError("the following arguments are required: --run-dir (or --resume RUN)")
    if args.resume:
        settings = _run_time_settings(args)  # a result-changing flag is refused before the run is read
        from coopetition.train.loop import resume_config

        config = resume_config(args.run_dir)
        if settings:
            from dataclasses import replace

            config = replace(config, train=replace(config.train, **settings))
    else:
        config = resolve_config(args)  # a config mistake is reported before the training code (torch) is imported
    from coopetition.train.loop import train

    result = train(config, args.run_dir, overwrite=args.overwrite, resume=args.resume,
                   progress=not args.no_progress)
    if args.resume and result.start_step == result.steps:
        print(f"{result.run_dir} was already complete at step {result.steps}; nothing to train")
    print(f"run written to {result.run_dir} ({result.steps} steps, {result.wall_seconds:.0f} s)")
    if result.final_eval:
        print(summary_table(result.final_eval))
    return 0


def summary_table(final_eval: dict[tuple[str, str], float],
                  metrics: tuple[str, ...] = ("in_context_acc", "acc", "loss")) -> str:
    """The last eval step as a small table: one row per evaluator, a column per metric it has."""
    evaluators = list(dict.fromkeys(e for e, _ in final_eval))
    shown = [m for m in metrics if any((e, m) in final_eval for e in evaluators)]
    width = max(len("evaluator"), *map(len, evaluators))
    cells = {m: max(len(m), 6) for m in shown}
    lines = [f"{'evaluator':<{width}}  " + "  ".join(f"{m:>{cells[m]}}" for m in shown)]
    for e in evaluators:
        lines.append(f"{e:<{width}}  " + "  ".join(
            f"{final_eval[(e, m)]:>{cells[m]}.4f}" if (e, m) in final_eval else f"{'-':>{cells[m]}}" for m in shown))
    return "\n".join(lines)


RUN_TIME = ("threads", "device")  # change how fast a run goes, not what it computes: allowed with --resume


def _run_time_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``--resume`` keeps the recorded config; only run-time settings (``--threads``, ``--device``; progress is not
    config) may be given, and they are recorded in the manifest's ``sessions``. A flag that would change the result
    is refused, named. Returns ``{train field: value}`` of the run-time settings given."""
    given = [f"--{f.replace('_', '-')}" for f in SHORTCUTS if f not in RUN_TIME and getattr(args, f) is not None]
    given += ["--preset"] * bool(args.preset) + ["--config"] * bool(args.config) + ["--set"] * bool(args.overrides)
    given += ["--intervene"] * bool(args.intervene) + ["--init-from"] * bool(args.init_from)
    if given:
        raise ConfigError(f"--resume continues a run with its recorded config; {', '.join(given)} would change its "
                          f"results: drop {'it' if len(given) == 1 else 'them'} (run-time settings --threads and "
                          f"--device are allowed)")
    return {f: getattr(args, f) for f in RUN_TIME if getattr(args, f) is not None}


def run_presets(args: argparse.Namespace) -> int:
    from coopetition.presets import PRESETS, get_preset

    if args.show:
        print(json.dumps(get_preset(args.show).to_dict(), indent=2))
        return 0
    width = max(map(len, PRESETS))
    for name, (_, summary) in PRESETS.items():
        print(f"{name:<{width}}  {summary}")
    return 0


def _one_line_warnings(show):
    """Our own warnings (a skipped corrupt checkpoint, a resume fallback) print as one line; others as usual."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, CoopetitionWarning):
            print(f"coopetition: warning: {one_line(str(message))}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser(command_of(argv), lazy=True)  # may load analysis plug-ins (analysis.registry)
    except CoopetitionError as err:
        print(f"coopetition: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    show = warnings.showwarning
    warnings.showwarning = _one_line_warnings(show)
    try:
        return args.func(args)
    except CoopetitionError as err:
        print(f"coopetition: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("coopetition: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show


if __name__ == "__main__":
    sys.exit(main())
