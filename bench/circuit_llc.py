"""CPU seconds per checkpoint of the ``circuit`` and ``llc`` analyses, before and after their speed-ups, in one
process (the machine is shared: process CPU time, not wall time, and the variants alternate so load hits both).

    python bench/circuit_llc.py circuit RUN --steps 1000,1500,2000 [--repeat 2]
    python bench/circuit_llc.py llc RUN --steps 1000,1500,2000 [--old /path/to/old/tree]   (needs devinterp)

``circuit``: per checkpoint, ``circuit_rows`` on every patching pair with the exact effects from one ``PathPatch``
variant per edge through ``Intervened.run_variants`` (``variants``, the method before) and from
``paths.patched_logits`` (``fast``, the default now), alternating; prints CPU-s per checkpoint of each, their ratio,
and how far the two tables are apart: the largest absolute difference of an exact effect, next to the difference the
slow method has with itself when only its chunking changes (``max_rows`` 2048 vs 512), i.e. its own rounding.

``llc``: per checkpoint, a child ``analyze --analyses llc`` of this tree and of ``--old`` (e.g. a ``git archive``
of the commit before), alternating; prints the analysis's CPU-s per checkpoint of each and both estimates (mean +-
std across the 4 chains), and their difference in combined standard errors of the two means (docs/llc.md).

Set ``OMP_NUM_THREADS=1``; torch runs one thread here.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch


def setup(run_path: Path, analysis: str, **settings):
    """(context, analysis instance, checkpoint infos by step) as ``analyze`` builds them for one worker."""
    from coopetition.analysis.config import AnalysisConfig
    from coopetition.analysis.execution import build_context
    from coopetition.store.run import Run

    run = Run.open(run_path)
    config = AnalysisConfig(analyses=(analysis,), workers=1, threads=1, **settings)
    context, analyses = build_context(run, tuple(run.evaluator_specs()), config)
    return context, next(a for a in analyses if a.name == analysis), {c.step: c for c in run.checkpoints}


def cpu(fn, *args, **kwargs):
    start = time.process_time()
    out = fn(*args, **kwargs)
    return out, time.process_time() - start


def bench_circuit(args) -> None:
    from coopetition.analysis.circuit import circuit_rows
    from coopetition.store.run import load_checkpoint

    context, analysis, infos = setup(args.run, "circuit")
    print(f"load {os.getloadavg()[0]:.1f}; circuit on {len(analysis.pairs)} pairs, {args.steps}")
    totals = {"variants": 0.0, "fast": 0.0}
    worst, own = 0.0, {"variants": 0.0, "fast": 0.0}
    for step in args.steps:
        load_checkpoint(context.model, infos[step], "cpu")
        for repeat in range(args.repeat):
            tables = {}
            for method in (("variants", "fast") if repeat % 2 == 0 else ("fast", "variants")):
                with torch.no_grad():
                    rows, seconds = cpu(lambda: [r for p in analysis.pairs for r in circuit_rows(
                        context.forward, p, 2048, method)])
                totals[method] += seconds / args.repeat
                tables[method] = rows
                print(f"step {step:>6} {method:<8} {seconds:7.2f} CPU-s", flush=True)
        exact = float64_rows(context, analysis.pairs)

        def gap(a, b):
            return max(abs(x["effect"] - y["effect"]) for x, y in zip(a, b) if x["method"] == "exact")
        worst = max(worst, gap(tables["variants"], tables["fast"]))
        for method in own:
            own[method] = max(own[method], gap(tables[method], exact))
    n = len(args.steps)
    print(f"CPU-s per checkpoint: variants (before) {totals['variants'] / n:.2f}, fast (after) "
          f"{totals['fast'] / n:.2f}, ratio {totals['variants'] / totals['fast']:.1f}")
    print(f"largest |exact effect| difference: fast vs variants {worst:.2e}; against the variants method in float64: "
          f"variants {own['variants']:.2e}, fast {own['fast']:.2e}")


def float64_rows(context, pairs) -> list[dict]:
    """The slow method on a float64 copy of the network and the pairs: the float32 tables' common reference."""
    import copy
    from dataclasses import replace

    from coopetition.analysis.circuit import circuit_rows
    from coopetition.interventions import Intervened

    network = copy.deepcopy(context.network).double()
    forward = Intervened(network)

    def wide(data):
        return replace(data, exemplars=data.exemplars.double())
    wide_pairs = [replace(p, clean=wide(p.clean), corrupt=wide(p.corrupt)) for p in pairs]
    with torch.no_grad():
        return [r for p in wide_pairs for r in circuit_rows(forward, p, 2048, "variants")]


LLC_CHILD = r"""
import inspect, json, sys, time, warnings
from pathlib import Path
import pandas as pd
import torch
torch.set_num_threads(1)
from coopetition.analysis.config import AnalysisConfig
try:
    from coopetition.pipeline import analyze  # this tree
except ImportError:
    from coopetition.analysis.runner import analyze  # an older tree (--old)
run, spec, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
kwargs = {"use_cache": False} if "use_cache" in inspect.signature(analyze).parameters else {}
warnings.simplefilter("ignore")
result = analyze(run, spec, AnalysisConfig(analyses=("llc",), workers=1, threads=1), out, progress_bar=False, **kwargs)
table = pd.read_csv(out / "llc.csv")
summary = table[table.chain == -1][["step", "llc_mean", "llc_std", "init_loss"]].to_dict("records")
print(json.dumps({"n": len(result.steps), "llc_cpu": result.cpu_seconds["llc"], "summary": summary}))
"""


def llc_child(tree: Path, run: Path, steps: list[int]) -> dict:
    import json
    import subprocess
    import sys
    import tempfile

    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-c", LLC_CHILD, str(run), ",".join(map(str, steps)),
                               str(Path(tmp) / "out")], env=env, capture_output=True, text=True, check=True, cwd=tree)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_llc(args) -> None:
    """This tree against ``--old`` (a ``git archive`` of the tree before), each a child ``analyze --analyses llc``,
    alternating per checkpoint; the analysis's own CPU seconds (``AnalysisResult.cpu_seconds``)."""
    here = Path(__file__).resolve().parent.parent
    trees = [("new", here)] + ([("old", Path(args.old))] if args.old else [])
    print(f"load {os.getloadavg()[0]:.1f}; llc CPU-s per checkpoint (analysis part of a child analyze per checkpoint)")
    cpu_sum = {label: 0.0 for label, _ in trees}
    found = {label: {} for label, _ in trees}
    for i, step in enumerate(args.steps):
        for label, tree in (trees if i % 2 == 0 else trees[::-1]):
            got = llc_child(tree, args.run, [step])
            cpu_sum[label] += got["llc_cpu"]
            row = got["summary"][0]
            found[label][step] = row
            print(f"step {step:>6} {label:<4} {got['llc_cpu']:7.2f} CPU-s  llc {row['llc_mean']:.4f} +- "
                  f"{row['llc_std']:.4f}  L(w*) {row['init_loss']:.6f}", flush=True)
    n = len(args.steps)
    print("CPU-s per checkpoint: " + ", ".join(f"{label} {cpu_sum[label] / n:.2f}" for label, _ in trees))
    if args.old:
        for step in args.steps:
            new, old = found["new"][step], found["old"][step]
            # the stated error of a mean over 4 chains: the std across chains / sqrt(chains), of each, combined
            se = ((new["llc_std"] ** 2 + old["llc_std"] ** 2) / 4) ** 0.5
            diff = new["llc_mean"] - old["llc_mean"]
            print(f"step {step:>6}: new - old = {diff:+.4f} ({diff / old['llc_mean']:+.1%}; {abs(diff) / se:.2f} "
                  f"combined standard errors; chain std old {old['llc_std']:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("analysis", choices=("circuit", "llc"))
    parser.add_argument("run", type=Path)
    parser.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 1500, 2000])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--old", help="llc: an older tree (git archive) to compare against")
    args = parser.parse_args()
    torch.set_num_threads(1)
    (bench_circuit if args.analysis == "circuit" else bench_llc)(args)


if __name__ == "__main__":
    main()
