"""``coopetition analyze RUN --checkpoint-range SPEC``: dissect a run's checkpoints; tables, figures, index.html.

The command only parses, validates and calls ``coopetition.pipeline.analyze``; a bad run dir, SPEC, analysis,
evaluator, setting or intervention is a one-line error with exit code 2, and nothing is written. The lists of
analyses and interventions in ``--help`` come from their registries, and each analysis's flags from its
``Settings`` (``--{flag_prefix}-{field}``).
"""

from __future__ import annotations

import argparse
import re
import sys
import types
import typing
import warnings
from dataclasses import MISSING, Field
from pathlib import Path

from coopetition.analysis.base import REGISTRY, Analysis
from coopetition.analysis.config import AnalysisConfig
from coopetition.analysis.registry import names
from coopetition.analysis.fanout import EXECUTORS, FanOut
from coopetition.errors import ConfigError
from coopetition.interventions import cli as intervention_cli


def _names(text: str, what: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise ConfigError(f"--{what} is empty; give a comma-separated list")
    return names


def _workers(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def add_parser(subparsers) -> None:
    """Add the ``analyze`` subcommand to an argparse subparsers object (sets ``func``)."""
    listing = "\n".join(f"  {n:<11} {REGISTRY[n].caption}" for n in names())
    p = subparsers.add_parser("analyze", help="dissect a run across checkpoints (ablation, patching, clamping, ...)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=f"analyses:\n{listing}\n\ninterventions (--intervene):\n"
                                     f"{intervention_cli.registry_help(analysis=True)}")
    p.add_argument("run", type=Path, help="run directory written by `coopetition train`")
    p.add_argument("--checkpoint-range", dest="spec", required=True, metavar="SPEC",
                   help="steps: A:B (inclusive), A:B:K (every K-th), :B, A:, -20: (last 20), or a comma list; "
                        "a step that is not a checkpoint snaps to the nearest")
    opt_in = [n for n in names() if not REGISTRY[n].by_default]
    p.add_argument("--analyses", default=None,
                   help=f"comma list from {', '.join(names())} (default: all"
                        + (f" but {', '.join(opt_in)})" if opt_in else ")"))
    p.add_argument("--evaluators", help="comma list of the run's evaluators (default: all)")
    p.add_argument("--out", type=Path, help="output folder (default: RUN/analysis)")
    p.add_argument("--device", default="cpu", help="torch device for the forward passes (default: cpu)")
    d = AnalysisConfig()
    p.add_argument("--n-seqs", type=int, default=d.n_seqs, help=f"sequences per evaluator (default: {d.n_seqs})")
    p.add_argument("--threads", type=int, default=d.threads,
                   help=f"torch CPU threads; 1 suits a busy machine (default: {d.threads})")
    p.add_argument("--workers", type=_workers, default=d.workers,
                   help="worker processes over checkpoints, or 'auto' (one per core, >= 4 checkpoints each) "
                        f"(default: {d.workers or 'auto'})")
    intervention_cli.add_analyze_arguments(p)
    for name in names():
        add_settings_arguments(p, REGISTRY[name])
    p.add_argument("--seed", type=int, default=d.seed, help=f"resample permutation and probe data (default: {d.seed})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    c = p.add_argument_group("cache and fan-out (results are cached per checkpoint; see docs/analyze.md)")
    c.add_argument("--cache-dir", type=Path, help="per-checkpoint result cache (default: OUT_cache beside the output folder, "
                        "RUN/analysis_cache for the default --out)")
    c.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    c.add_argument("--executor", choices=EXECUTORS,
                   help="run the checkpoints still to compute as submitit jobs: local processes or Slurm "
                        "(default: in this process and its --workers)")
    f = FanOut()
    c.add_argument("--jobs", type=int, default=f.jobs, help=f"--executor: jobs (chunks of checkpoints) (default: {f.jobs})")
    c.add_argument("--partition", help="--executor slurm: the partition (default: the cluster's)")
    c.add_argument("--time", type=int, default=f.time_min, dest="time_min",
                   help=f"--executor: minutes per job (default: {f.time_min})")
    c.add_argument("--mem", type=float, default=f.mem_gb, dest="mem_gb",
                   help=f"--executor: GB of memory per job (default: {f.mem_gb:g})")
    c.add_argument("--cpus", type=int, default=f.cpus,
                   help=f"--executor: CPUs per job, also its torch threads (default: {f.cpus})")
    # SPECs such as "-20:" start with "-"; let argparse take them as values, not as unknown options.
    p._negative_number_matcher = re.compile(r"^-\d[\d:,\s-]*$")
    p.set_defaults(func=run_analyze)


def _comma_list(kind: type):
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma list of {kind.__name__}s, got {text!r}") from None
    return parse


def _flag_type(hint) -> tuple[type, str]:
    """``(argparse type, kind)`` of a settings field's type: int, float, str, bool, ``X | None`` or
    ``tuple[X, ...]`` (a comma list)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args and len(args) == 2:
        return _flag_type(next(a for a in args if a is not type(None)))[0], "optional"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in (int, float, str):
        return _comma_list(args[0]), "list"
    if hint is bool:
        return bool, "bool"
    if hint in (int, float, str):
        return hint, "scalar"
    raise TypeError(f"settings field type {hint!r} has no flag; use int, float, str, bool, X | None or tuple[X, ...]")


def _default_text(f: Field, value) -> str:
    if "default" in f.metadata:
        return str(f.metadata["default"])
    if isinstance(value, tuple):
        return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def flag(cls: type[Analysis], field: str) -> str:
    """The flag of one settings field: ``--{flag_prefix}-{field with - for _}``."""
    return f"--{cls.prefix()}-{field.replace('_', '-')}"


def _dest(cls: type[Analysis], field: str) -> str:
    return f"setting:{cls.name}:{field}"


def add_settings_arguments(p: argparse.ArgumentParser, cls: type[Analysis]) -> None:
    """One flag per field of ``cls.Settings`` (none for an analysis that reads another's settings), its help the
    field's ``metadata["help"]`` and default."""
    hints = typing.get_type_hints(cls.Settings)
    for f in cls.setting_fields():
        kind, shape = _flag_type(hints[f.name])
        default = f.default if f.default is not MISSING else f.default_factory()
        help_text = f.metadata.get("help", f"{cls.name}: {f.name}")
        if shape == "bool":
            p.add_argument(flag(cls, f.name), dest=_dest(cls, f.name), action=argparse.BooleanOptionalAction
                           if default else "store_true", default=default, help=help_text)
            continue
        p.add_argument(flag(cls, f.name), dest=_dest(cls, f.name), type=kind, default=default,
                       metavar=f.name.upper(), help=f"{help_text} (default: {_default_text(f, default)})")


def settings_from_args(args: argparse.Namespace) -> dict[str, dict]:
    """``{analysis: {field: value}}`` of every analysis's flags (``AnalysisConfig`` keeps the requested ones)."""
    out: dict[str, dict] = {}
    for name in names():
        cls = REGISTRY[name]
        for f in cls.setting_fields():
            out.setdefault(name, {})[f.name] = getattr(args, _dest(cls, f.name))
    return out


def config_from_args(args: argparse.Namespace) -> AnalysisConfig:
    return AnalysisConfig(
        analyses=_names(args.analyses, "analyses") if args.analyses is not None else None,
        interventions=intervention_cli.interventions_from_args(args),
        evaluators=_names(args.evaluators, "evaluators") if args.evaluators is not None else None,
        n_seqs=args.n_seqs, threads=args.threads, seed=args.seed, device=args.device, workers=args.workers,
        settings=settings_from_args(args))


def run_analyze(args: argparse.Namespace) -> int:
    from coopetition.analysis.runner import SelectionWarning
    from coopetition.pipeline.run import analyze

    config = config_from_args(args)
    fan_out = None
    if args.executor is not None:
        fan_out = FanOut(args.executor, args.jobs, args.partition, args.time_min, args.mem_gb, args.cpus)
    default_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, SelectionWarning):
            print(f"coopetition: warning: {message}", file=sys.stderr)
        else:
            default_show(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", SelectionWarning)
        warnings.showwarning = show
        result = analyze(args.run, args.spec, config, args.out, progress_bar=not args.no_progress,
                         cache_dir=args.cache_dir, use_cache=not args.no_cache, fan_out=fan_out)
    n = len(result.steps)
    print(f"analysed {n} checkpoint{'s' if n != 1 else ''} (steps {result.steps[0]}..{result.steps[-1]}); "
          f"{len(result.tables)} tables and {len(result.figures)} pages in {result.out_dir} "
          f"(open {result.out_dir / 'index.html'})"
          + (f"; computed {sum(result.computed.values())}, reused {sum(result.reused.values())} "
             "(analysis, checkpoint) results" if result.computed or result.reused else "")
          + (f"; skipped {len(result.skipped)} corrupt checkpoint(s), see skipped_checkpoints.csv"
             if result.skipped else ""))
    return 0
