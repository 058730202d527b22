"""One training-time evaluation (every evaluator of a preset's suite) with this tree's metrics against an older
tree's ``task/metrics.py``, in the same process, alternating; checks the two give the same bits.

    python bench/eval_speed.py --old OLD_TREE [--preset quick-b256] [--threads 1] [--repeats 5] [--run RUN --step N]

``OLD_TREE`` is a checkout of the earlier code (e.g. ``git archive <commit> | tar x -C /tmp/old``). The model is the
preset's initialisation, or a trained run's checkpoint with ``--run``. One figure per line; wall and process CPU
time both (the machine is shared: the fastest repeat is the figure).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

import torch

import coopetition.train.evaluate as evaluation
from coopetition.interventions import intervene
from coopetition.presets import get_preset
from coopetition.store.build import derive_sizes, load_run_bank, model_for
from coopetition.store.evalsets import eval_sets_for
from coopetition.train.allocator import keep_freed_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="an older source tree (its coopetition/task/metrics.py)")
    parser.add_argument("--preset", default="quick-b256")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--step", type=int, default=None)
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    spec = importlib.util.spec_from_file_location("old_metrics", args.old / "coopetition/task/metrics.py")
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    new = evaluation.query_metrics

    config = get_preset(args.preset)
    bank = load_run_bank(config)
    if args.run is not None:
        from coopetition.store.run import Run

        forward = Run.open(args.run).network_at(args.step)  # the run's network with its own interventions
        model = forward.model
    else:
        model = model_for(config, derive_sizes(config, bank))
        forward = intervene([], model)
    prepared = evaluation.prepare_eval_sets(eval_sets_for(config, bank), bank.features)
    variants = {"old": old.query_metrics, "new": new}
    results, wall, cpu = {}, {k: [] for k in variants}, {k: [] for k in variants}
    for repeat in range(args.repeats + 1):
        for name in (variants if repeat % 2 else list(reversed(variants))):
            evaluation.query_metrics = variants[name]
            w, c = time.perf_counter(), time.process_time()
            results[name] = evaluation.evaluate(model, prepared, config.eval.batch_size, forward)
            if repeat:  # the first round warms up
                wall[name].append(time.perf_counter() - w)
                cpu[name].append(time.process_time() - c)
    evaluation.query_metrics = new
    n_seqs = sum(e.n for e in prepared)
    print(f"preset {args.preset}, {len(prepared)} evaluators, {n_seqs} sequences, threads {args.threads}, "
          f"1-min load average {os.getloadavg()[0]:.2f}")
    print(f"same values old vs new: {results['old'] == results['new']}")
    for name in variants:
        print(f"{name} one evaluation: wall {min(wall[name]):.3f} s, process CPU {min(cpu[name]):.3f} s")
    print(f"old/new ratio: wall {min(wall['old']) / min(wall['new']):.2f}, "
          f"CPU {min(cpu['old']) / min(cpu['new']):.2f}")


if __name__ == "__main__":
    main()
