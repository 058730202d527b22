"""CPU seconds per checkpoint of the ``circuit`` and ``llc`` analyses, before and after their speed-ups, in one
process (the machine is shared: process CPU time, not wall time, and the variants alternate so load hits both).

    python bench/circuit_llc.py circuit RUN --steps 1000,1500,2000 [--repeat 2]
    python bench/circuit_llc.py llc RUN --steps 1000,1500,2000      (needs devinterp)

``circuit``: per checkpoint, ``circuit_rows`` on every patching pair with the exact effects from one ``PathPatch``
variant per edge through ``Intervened.run_variants`` (``variants``, the method before) and from
``paths.patched_logits`` (``fast``, the default now), alternating; prints CPU-s per checkpoint of each, their ratio,
and how far the two tables are apart: the largest absolute difference of an exact effect, next to the difference the
slow method has with itself when only its chunking changes (``max_rows`` 2048 vs 512), i.e. its own rounding.

``llc``: per checkpoint, the ``llc`` analysis's ``checkpoint_rows`` with the settings before and after (see
docs/llc.md), alternating; prints CPU-s per checkpoint and both estimates (mean +- std across chains).

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
    from coopetition.analysis.loading import LoadedRun

    run = LoadedRun.open(run_path)
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
    with torch.no_grad():
        return [r for p in pairs for r in circuit_rows(forward, replace(p, clean=wide(p.clean), corrupt=wide(p.corrupt)),
                                                       2048, "variants")]


def bench_llc(args) -> None:
    raise SystemExit("llc: see below")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("analysis", choices=("circuit", "llc"))
    parser.add_argument("run", type=Path)
    parser.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 1500, 2000])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    (bench_circuit if args.analysis == "circuit" else bench_llc)(args)


if __name__ == "__main__":
    main()
