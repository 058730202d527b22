"""``coopetition analyze RUN --checkpoint-range SPEC``: dissect a run's checkpoints; tables, figures, index.html.

The command only parses, validates and calls ``coopetition.analysis.runner.analyze``; a bad run dir, SPEC,
analysis, evaluator or intervention is a one-line error with exit code 2, and nothing is written. The lists of
analyses and interventions in ``--help`` come from their registries.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from dataclasses import replace
from pathlib import Path

from coopetition.analysis.base import REGISTRY
from coopetition.analysis.registry import names
from coopetition.analysis.config import AnalysisConfig
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
    p.add_argument("--patch-seqs", type=int, default=d.patch_seqs,
                   help=f"sequences per patching pair (default: {d.patch_seqs})")
    p.add_argument("--probe-seqs", type=int, default=d.probe_seqs,
                   help=f"probe sequences per evaluator (default: {d.probe_seqs})")
    p.add_argument("--probe-classes", type=int, default=d.probe_classes,
                   help=f"classes per probe set: identity probes are this-way (default: {d.probe_classes})")
    p.add_argument("--probe-steps", type=int, default=d.probe_steps,
                   help=f"LBFGS iterations per probe fit (default: {d.probe_steps})")
    p.add_argument("--threads", type=int, default=d.threads,
                   help=f"torch CPU threads; 1 suits a busy machine (default: {d.threads})")
    p.add_argument("--workers", type=_workers, default=d.workers,
                   help="worker processes over checkpoints, or 'auto' (one per core, >= 4 checkpoints each) "
                        f"(default: {d.workers or 'auto'})")
    intervention_cli.add_analyze_arguments(p)
    p.add_argument("--clamp-strengths", default=",".join(f"{x:g}" for x in d.clamp_strengths),
                   help="clamped attention strengths S of the clamp analysis (default: 0,0.1,...,1)")
    p.add_argument("--clamp-exact", action="store_true",
                   help="clamp: one pass per strength everywhere (default: last-layer induction clamps are read "
                        "out of their S = 0 and S = 1 passes, the same up to float rounding)")
    llc = d.llc
    p.add_argument("--llc-lr", type=float, default=llc.lr, help=f"llc: SGLD step size (default: {llc.lr:g})")
    p.add_argument("--llc-gamma", type=float, default=llc.gamma,
                   help=f"llc: localisation strength gamma (default: {llc.gamma:g})")
    p.add_argument("--llc-nbeta", type=float, default=llc.nbeta,
                   help="llc: inverse temperature n*beta (default: m / log m, m = the SGLD batch size)")
    p.add_argument("--llc-chains", type=int, default=llc.chains, help=f"llc: SGLD chains (default: {llc.chains})")
    p.add_argument("--llc-draws", type=int, default=llc.draws, help=f"llc: draws per chain (default: {llc.draws})")
    p.add_argument("--llc-burnin", type=int, default=llc.burnin,
                   help=f"llc: steps discarded before the first draw (default: {llc.burnin})")
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


def _strengths(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--clamp-strengths must be a comma list of numbers in [0, 1], got {text!r}") from None


def config_from_args(args: argparse.Namespace) -> AnalysisConfig:
    return AnalysisConfig(
        analyses=_names(args.analyses, "analyses") if args.analyses is not None else None,
        interventions=intervention_cli.interventions_from_args(args),
        clamp_strengths=_strengths(args.clamp_strengths), clamp_exact=args.clamp_exact,
        evaluators=_names(args.evaluators, "evaluators") if args.evaluators is not None else None,
        n_seqs=args.n_seqs, patch_seqs=args.patch_seqs, probe_seqs=args.probe_seqs,
        probe_classes=args.probe_classes, probe_steps=args.probe_steps, threads=args.threads, seed=args.seed,
        device=args.device, workers=args.workers,
        llc=replace(AnalysisConfig().llc, lr=args.llc_lr, gamma=args.llc_gamma, nbeta=args.llc_nbeta,
                    chains=args.llc_chains, draws=args.llc_draws, burnin=args.llc_burnin))


def run_analyze(args: argparse.Namespace) -> int:
    from coopetition.analysis.runner import SelectionWarning, analyze

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
