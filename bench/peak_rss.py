"""Peak resident memory of ``coopetition train`` and ``coopetition analyze`` (run on demand; one figure per line).

    python bench/peak_rss.py [--steps 200] [--threads 1] [--keep DIR]

Trains a short ``quick`` run (the preset's model, bank and eval sets; ``--steps`` steps, checkpoints at 0, half
and the end) into a temporary directory, then analyzes all of its checkpoints with every analysis. Each command
runs in a child of a fresh wrapper process, which reports ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the child's
peak RSS; Linux counts KiB). The baseline of importing torch, TransformerLens and the trainer is printed too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WRAPPER = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_mib(command: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of ``command`` run as a grandchild."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True, check=True)
    code, kib = out.stdout.split()
    if code != "0":
        raise RuntimeError(f"{' '.join(command)} exited {code}: {out.stderr[-2000:]}")
    return int(kib) / 1024, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", default=None, help="write the run here instead of a temporary directory")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "coopetition"]
    print(f"1-min load average: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.keep or tmp) / "run"
        base, _ = peak_rss_mib([sys.executable, "-c", "import torch, transformer_lens, coopetition.train.loop"])
        print(f"python + torch + transformer_lens import peak RSS MiB: {base:.0f}")
        train = [*cli, "train", "--preset", "quick", "--run-dir", str(run), "--steps", str(args.steps),
                 "--checkpoints", f"every:{max(1, args.steps // 2)}", "--threads", str(args.threads),
                 "--no-progress", "--overwrite"]
        rss, wall = peak_rss_mib(train)
        print(f"train (quick, {args.steps} steps) peak RSS MiB: {rss:.0f}")
        print(f"train (quick, {args.steps} steps) wall s: {wall:.1f}")
        analyze = [*cli, "analyze", str(run), "--checkpoint-range", "0:", "--threads", str(args.threads),
                   "--no-progress"]
        rss, wall = peak_rss_mib(analyze)
        print(f"analyze (3 checkpoints, all analyses) peak RSS MiB: {rss:.0f}")
        print(f"analyze (3 checkpoints, all analyses) wall s: {wall:.1f}")
    print(f"1-min load average: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
