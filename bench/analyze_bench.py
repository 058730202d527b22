"""Benchmark ``coopetition analyze``: checkpoints per second for every analysis.

    python bench/analyze_bench.py RUN [--checkpoint-range 0:] [--analyses ablation,patching] [--separately]
                                      [--threads 1,2] [--workers 1,2] [--repeat 2] [--json FILE]

Every combination of ``--threads`` x ``--workers`` is run ``--repeat`` times, interleaved (t1w1, t1w2, t2w1, ...
then again), so that a change in the machine's load hits every variant alike. With ``--separately`` each analysis
in ``--analyses`` runs alone (its own clean passes, as when it is the only one requested); otherwise they run
together, sharing them, as the CLI does.

Per run it prints wall seconds of the ``analyze`` call, CPU seconds (this process plus its worker processes), the
1-minute load average before and after (on a shared machine wall time is not CPU time), and per analysis:

- ``ckpt/s``: checkpoints / (wall seconds of the call minus figure writing): the end-to-end rate, setup and
  worker start-up included. For ``strategies`` (no forward passes) it is checkpoints / its own seconds.
- the runner's own per-part wall and CPU seconds (with workers: summed over the workers).

It only calls the public ``analyze``, so it also runs against an older checkout (``PYTHONPATH=/old/tree``): pass
``--workers 1`` and no ``--max-rows`` there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

from coopetition.analysis.config import AnalysisConfig
from coopetition.pipeline import analyze


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the worker processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def one_run(run: Path, spec: str, analyses: tuple[str, ...], threads: int, workers: int, max_rows: int | None,
            out: Path) -> dict:
    options = {"analyses": analyses, "threads": threads}
    if workers != 1 or "workers" in {f.name for f in dataclasses.fields(AnalysisConfig)}:
        options["workers"] = workers
    if max_rows is not None:
        options["max_rows"] = max_rows
    load_before = os.getloadavg()[0]
    start, cpu = time.perf_counter(), cpu_seconds()
    result = analyze(run, spec, AnalysisConfig(**options), out, progress_bar=False)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    n = len(result.steps)
    model_wall = wall - result.seconds.get("figures", 0.0) - result.seconds.get("strategies", 0.0)
    rates = {}
    for name in analyses:
        seconds = result.seconds.get("strategies", 0.0) if name == "strategies" else model_wall
        rates[name] = n / seconds if seconds > 0 else float("inf")
    return {"analyses": ",".join(analyses), "threads": threads, "workers": workers, "max_rows": max_rows,
            "checkpoints": n, "wall": wall, "cpu": cpu, "load_before": load_before, "load_after": os.getloadavg()[0],
            "ckpt_per_s": rates, "parts_wall": result.seconds, "parts_cpu": result.cpu_seconds}


def report(r: dict) -> None:
    rates = ", ".join(f"{k} {v:.3g}" for k, v in r["ckpt_per_s"].items())
    print(f"\n[{r['analyses']}] threads {r['threads']} workers {r['workers']} max_rows {r['max_rows'] or 'default'}: "
          f"{r['checkpoints']} checkpoints, {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU, "
          f"load {r['load_before']:.1f} -> {r['load_after']:.1f}")
    print(f"  ckpt/s (wall): {rates}")
    parts = sorted(r["parts_wall"].items(), key=lambda kv: -kv[1])
    print("  parts (wall s / CPU s): " + ", ".join(f"{k} {v:.1f}/{r['parts_cpu'].get(k, float('nan')):.1f}"
                                                 for k, v in parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--checkpoint-range", default="0:")
    parser.add_argument("--analyses", default="strategies,ablation,patching,probes,progress,clamp,scorecard",
                        help="default: every analysis analyze runs by default (circuit and llc are opt-in)")
    parser.add_argument("--separately", action="store_true", help="each analysis alone")
    parser.add_argument("--threads", default="1", help="comma list of torch thread counts")
    parser.add_argument("--workers", default="1", help="comma list of worker-process counts")
    parser.add_argument("--max-rows", type=int, help="sequences per batched forward (default: the config's)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    out = args.out or Path(tempfile.mkdtemp(prefix="analyze_bench_"))
    analyses = tuple(a.strip() for a in args.analyses.split(",") if a.strip())
    groups = [(a,) for a in analyses] if args.separately else [analyses]
    print(f"torch {torch.__version__}, cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}; "
          f"outputs in {out}")
    results = []
    for repeat in range(args.repeat):
        for group in groups:
            for threads in (int(t) for t in args.threads.split(",")):
                for workers in (int(w) for w in args.workers.split(",")):
                    r = one_run(args.run, args.checkpoint_range, group, threads, workers, args.max_rows,
                                out / f"{'_'.join(group)}_t{threads}_w{workers}_{repeat}")
                    report(r)
                    results.append(r)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
