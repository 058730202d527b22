"""Where a training step's time goes: ``torch.profiler`` op table of the trainer's step (hooked model) next to the
plain-PyTorch baseline's, same shape and data, one op per line (self CPU ms per step).

    python bench/train_profile.py [--shape quick] [--batch 128] [--threads 1] [--steps 30] [--rows 25]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_vs_plain import _steps  # noqa: E402

from coopetition.presets import get_preset  # noqa: E402
from coopetition.store.build import derive_sizes, load_run_bank, training_pool  # noqa: E402


def op_table(step, n: int) -> dict[str, tuple[float, int]]:
    """``{op: (self CPU ms per step, calls per step)}`` over ``n`` profiled steps."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    out = defaultdict(lambda: (0.0, 0))
    for event in prof.key_averages():
        out[event.key] = (event.self_cpu_time_total / 1e3 / n, event.count // n)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="quick")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = get_preset(args.shape)
    bank = load_run_bank(config)
    steps = _steps(config, derive_sizes(config, bank), bank.features, training_pool(config, bank), args.batch, False)
    for step in steps.values():
        for _ in range(10):
            step()
    tables = {name: op_table(step, args.steps) for name, step in steps.items()}
    hooked, plain = tables["hooked"], tables["plain"]
    print(f"{args.shape} batch {args.batch} threads {args.threads}: self CPU ms/step (calls/step), hooked | plain")
    for name in sorted(set(hooked) | set(plain), key=lambda k: -max(hooked[k][0], plain[k][0]))[:args.rows]:
        print(f"{name[:60]:60s} {hooked[name][0]:7.2f} ({hooked[name][1]:3d}) | {plain[name][0]:7.2f} "
              f"({plain[name][1]:3d})")
    for name, table in tables.items():
        print(f"total self CPU ms/step {name}: {sum(v[0] for v in table.values()):.2f}, "
              f"ops/step: {sum(v[1] for v in table.values())}")


if __name__ == "__main__":
    main()
