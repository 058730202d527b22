"""Benchmark ``coopetition analyze``: checkpoints per second for every analysis.

    python bench/analyze_bench.py RUN [--checkpoint-range 0:] [--out DIR] [--threads 1] [--separately]

Runs the full analysis once (all analyses sharing their clean passes, as the CLI does) and prints, per analysis,
wall seconds, CPU seconds of this process, and checkpoints/s (wall). ``--separately`` also runs each analysis alone
(with its own clean passes) for isolated throughput. The 1-minute load average before and after is printed
because on a shared machine wall time is not CPU time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

from coopetition.analysis.config import ANALYSES, AnalysisConfig
from coopetition.analysis.runner import analyze


def report(label: str, result, wall: float) -> None:
    n = len(result.steps)
    print(f"\n{label}: {n} checkpoints, {wall:.1f} s wall (whole call)")
    print(f"  {'part':<12} {'wall s':>8} {'cpu s':>8} {'ckpt/s':>8}")
    for part, seconds in sorted(result.seconds.items(), key=lambda kv: -kv[1]):
        cpu = result.cpu_seconds.get(part, float("nan"))
        rate = n / seconds if seconds > 0 else float("inf")
        print(f"  {part:<12} {seconds:8.1f} {cpu:8.1f} {rate:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--checkpoint-range", default="0:")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--separately", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    out = args.out or Path(tempfile.mkdtemp(prefix="analyze_bench_"))
    print(f"load average before: {os.getloadavg()[0]:.2f}  (cores: {os.cpu_count()}, threads: {args.threads})")
    start = time.perf_counter()
    result = analyze(args.run, args.checkpoint_range, AnalysisConfig(threads=args.threads), out, progress_bar=False)
    report("all analyses", result, time.perf_counter() - start)
    if args.separately:
        for name in ANALYSES:
            start = time.perf_counter()
            alone = analyze(args.run, args.checkpoint_range, AnalysisConfig(analyses=(name,), threads=args.threads),
                            out / name, progress_bar=False)
            report(f"{name} alone", alone, time.perf_counter() - start)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}; outputs in {out}")


if __name__ == "__main__":
    main()
