"""What ``coopetition.train.allocator.keep_freed_memory`` buys: training steps with glibc's default thresholds
against the raised ones, each in its own child process (the setting cannot be undone in-process), alternating.

    python bench/malloc_ab.py                                  # quick-b256, 1 thread, 3 rounds x 150 steps
    python bench/malloc_ab.py --preset quick --threads 2 --rounds 4

Per block it prints user and system CPU ms per step, minor page faults per step and wall ms per step; then the
ratio of the medians (raised / default) of CPU and wall time. One figure per line.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path


def child(preset: str, threads: int, steps: int, tuned: bool) -> None:
    import torch

    from coopetition.presets import get_preset
    from coopetition.train import loop

    if not tuned:  # build_training raises the thresholds; this arm keeps glibc's defaults
        loop.keep_freed_memory = lambda: False
    torch.set_num_threads(threads)
    config = get_preset(preset)
    run = loop.build_training(replace(config, train=replace(config.train, threads=threads)), None)
    for _ in range(30):  # warm-up
        run.step()
    before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        run.step()
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - wall
    print(json.dumps({"user_ms": (after.ru_utime - before.ru_utime) / steps * 1e3,
                      "sys_ms": (after.ru_stime - before.ru_stime) / steps * 1e3,
                      "minflt": (after.ru_minflt - before.ru_minflt) / steps, "wall_ms": wall / steps * 1e3}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="quick-b256")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=("default", "raised"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.preset, args.threads, args.steps, args.child == "raised")
        return
    results: dict[str, list[dict]] = {"default": [], "raised": []}
    for _ in range(args.rounds):
        for arm in results:
            out = subprocess.run([sys.executable, __file__, "--child", arm, "--preset", args.preset, "--threads",
                                  str(args.threads), "--steps", str(args.steps)], capture_output=True, text=True,
                                 check=True, cwd=Path(__file__).resolve().parent.parent)
            figures = json.loads(out.stdout.strip().splitlines()[-1])
            results[arm].append(figures)
            print(f"{args.preset} threads {args.threads} {arm}: user {figures['user_ms']:.1f} ms/step, "
                  f"sys {figures['sys_ms']:.1f} ms/step, {figures['minflt']:.0f} minor faults/step, "
                  f"wall {figures['wall_ms']:.1f} ms/step")
    for key, label in (("cpu", "CPU (user+sys)"), ("wall_ms", "wall")):
        def median(arm: str) -> float:
            rows = results[arm]
            return statistics.median(r["user_ms"] + r["sys_ms"] if key == "cpu" else r[key] for r in rows)
        print(f"{args.preset} threads {args.threads} raised/default {label} per step: "
              f"{median('raised') / median('default'):.3f}")


if __name__ == "__main__":
    main()
