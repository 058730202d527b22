"""Benchmark ``coopetition analyze`` at scale: per-analysis CPU seconds per checkpoint (this tree against an older
one), the incremental re-run, and a whole many-checkpoint analysis.

    python bench/analyze_scale.py per-analysis RUN --spec 0: [--old /path/to/old/tree] [--analyses clamp,probes]
                                               [--repeat 2]
    python bench/analyze_scale.py incremental RUN --spec 0:2000:100 [--analyses ...]
    python bench/analyze_scale.py full RUN --spec 0: [--workers auto] [--no-cache]

``per-analysis``: each analysis alone (its own baseline passes, as when it is the only one requested), in a fresh
child process per measurement (``PYTHONPATH`` = this tree, or ``--old``'s), this tree and the old one alternating, so
load changes hit both alike. It prints the child's process CPU seconds per checkpoint for the analysis itself and for
the whole call (loading, baseline passes, figures included); CPU time, not wall time, because on a shared machine
wall time measures the other jobs. The cache is off for this tree (the old one has none).

``incremental``: the same ``analyze`` twice into fresh caches and output folders: the first computes everything, the
second reads every result back. Prints wall and CPU seconds of both, their ratio, and how many (analysis, checkpoint)
results each computed.

``full``: one ``analyze`` of every default analysis over ``--spec`` (the issue's 201-checkpoint quick run: 2,000 steps,
a checkpoint every 10), wall and CPU seconds (this process and its workers) and the 1-minute load average before and
after. On an idle 2-core machine this is the measured figure; on a loaded one read the CPU seconds, and the projection
it prints (CPU seconds / cores) is labelled as one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
DEFAULT = ("ablation", "patching", "probes", "progress", "clamp", "scorecard")

CHILD = r"""
import inspect, json, sys, time, warnings
from pathlib import Path
import torch
torch.set_num_threads(1)
from coopetition.analysis.config import AnalysisConfig
try:
    from coopetition.pipeline import analyze  # this tree
except ImportError:
    from coopetition.analysis.runner import analyze  # an older tree (--old)
run, spec, name, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
kwargs = {"use_cache": False} if "use_cache" in inspect.signature(analyze).parameters else {}
warnings.simplefilter("ignore")
cpu = time.process_time()
result = analyze(run, spec, AnalysisConfig(analyses=(name,), workers=1), out, progress_bar=False, **kwargs)
print(json.dumps({"n": len(result.steps), "cpu": time.process_time() - cpu, "parts": result.cpu_seconds}))
"""


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def child(tree: Path, run: Path, spec: str, name: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        # cwd = the tree: "python -c" puts the working directory first on sys.path, ahead of PYTHONPATH
        done = subprocess.run([sys.executable, "-c", CHILD, str(run), spec, name, str(Path(tmp) / "out")], env=env,
                              capture_output=True, text=True, check=True, cwd=tree)
    return json.loads(done.stdout.strip().splitlines()[-1])


def per_analysis(args) -> None:
    trees = [("new", HERE)] + ([("old", Path(args.old))] if args.old else [])
    print(f"load {os.getloadavg()[0]:.1f}; CPU-s per checkpoint (process time of a child per measurement)")
    print(f"{'analysis':<11} {'tree':<4} {'analysis CPU-s':>15} {'whole call CPU-s':>17}")
    for name in args.analyses.split(","):
        for repeat in range(args.repeat):
            for label, tree in (trees if repeat % 2 == 0 else trees[::-1]):
                got = child(tree, args.run, args.spec, name)
                n = got["n"]
                print(f"{name:<11} {label:<4} {got['parts'].get(name, 0.0) / n:>15.3f} {got['cpu'] / n:>17.3f}",
                      flush=True)


def incremental(args) -> None:
    from coopetition.analysis.config import AnalysisConfig
    from coopetition.pipeline import analyze

    config = AnalysisConfig(analyses=tuple(args.analyses.split(",")) if args.analyses else None)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        rows = []
        for label in ("first", "second"):
            start, cpu = time.perf_counter(), cpu_seconds()
            result = analyze(args.run, args.spec, config, Path(tmp) / label, progress_bar=False, cache_dir=cache)
            rows.append((label, time.perf_counter() - start, cpu_seconds() - cpu, sum(result.computed.values()),
                         sum(result.reused.values()), len(result.steps)))
    print(f"load {os.getloadavg()[0]:.1f}")
    for label, wall, cpu, computed, reused, n in rows:
        print(f"{label:<7} {n} checkpoints: wall {wall:7.1f} s, CPU {cpu:7.1f} s; computed {computed}, reused {reused}")
    print(f"second / first: wall {rows[1][1] / rows[0][1]:.3f}, CPU {rows[1][2] / rows[0][2]:.3f}")


def full(args) -> None:
    from coopetition.analysis.config import AnalysisConfig
    from coopetition.pipeline import analyze

    workers = None if args.workers == "auto" else int(args.workers)
    config = AnalysisConfig(workers=workers)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), cpu_seconds()
        result = analyze(args.run, args.spec, config, Path(tmp) / "out", progress_bar=False,
                         use_cache=args.cache, cache_dir=Path(tmp) / "cache" if args.cache else None)
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    n = len(result.steps)
    cores = os.cpu_count() or 1
    print(f"{n} checkpoints, every default analysis, workers {config.n_workers(n)}: wall {wall:.1f} s, CPU {cpu:.1f} s "
          f"({cpu / n:.2f} CPU-s per checkpoint); load {load:.1f} -> {os.getloadavg()[0]:.1f}")
    print("per part (worker CPU-s, summed): " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                         sorted(result.cpu_seconds.items(), key=lambda kv: -kv[1])))
    print(f"projection, not a measurement: {cpu:.0f} CPU-s over {cores} idle cores = {cpu / cores / 60:.1f} min wall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("per-analysis", "incremental", "full"))
    parser.add_argument("run", type=Path)
    parser.add_argument("--spec", default="0:")
    parser.add_argument("--analyses", default=None)
    parser.add_argument("--old", help="an older tree (git archive) to compare against, per-analysis mode")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--cache", action="store_true", help="full: with a fresh cache (its writing counted)")
    args = parser.parse_args()
    if args.mode == "per-analysis":
        args.analyses = args.analyses or ",".join(DEFAULT)
        per_analysis(args)
    elif args.mode == "incremental":
        incremental(args)
    else:
        full(args)


if __name__ == "__main__":
    main()
