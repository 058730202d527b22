"""Where a whole ``coopetition train`` run's wall time goes: optimizer steps, evaluations, checkpoint writes, table
writes and the rest (setup, progress bar, loss logging), measured by wrapping the loop's own functions in timers.

    python bench/train_split.py                                 # the quick preset, all its steps
    python bench/train_split.py --set train.steps=3000 --set train.threads=1
    python bench/train_split.py --run-dir checkpoints/quick          # keep the run (a new directory)

It trains exactly as ``coopetition train`` does (into a temporary directory unless ``--run-dir``): the wrappers only
read the clock around each call, so the run is the same one. One figure per line.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

import coopetition.train.loop as loop
from coopetition.config import apply_override, config_from_dict
from coopetition.presets import get_preset
from coopetition.store.writer import RunWriter
from coopetition.train.step import TrainStep

SPENT: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def timed(name: str, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - start
            CALLS[name] += 1
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--run-dir", type=Path, default=None, help="keep the run here (must not exist)")
    args = parser.parse_args()
    data = get_preset(args.preset).to_dict()
    for item in args.set:
        data = apply_override(data, item)
    config = config_from_dict(data)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)

    loop.evaluate = timed("evaluation", loop.evaluate)
    loop._checkpoint = timed("checkpoint writes", loop._checkpoint)
    RunWriter.write_table = timed("table writes", RunWriter.write_table)
    TrainStep.__call__ = timed("optimizer steps", TrainStep.__call__)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        loop.train(config, args.run_dir or Path(tmp) / "run", progress=False)
        total = time.perf_counter() - start
    # checkpoint writes include their own train.csv write; count it once, under checkpoints
    inner = SPENT["optimizer steps"] + SPENT["evaluation"] + SPENT["checkpoint writes"] + SPENT["table writes"]
    print(f"preset {args.preset} {' '.join(args.set)} threads {torch.get_num_threads()}")
    for name in ("optimizer steps", "evaluation", "checkpoint writes", "table writes"):
        print(f"{name}: {SPENT[name]:.1f} s over {CALLS[name]} calls ({100 * SPENT[name] / total:.0f}%)")
    print(f"rest (setup, logging, bar): {total - inner:.1f} s")
    print(f"total wall: {total:.1f} s")


if __name__ == "__main__":
    main()
