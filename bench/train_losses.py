"""The loss trace of a short seeded ``quick`` run, to check that a speed change left training bit-identical.

    python bench/train_losses.py [STEPS] [THREADS]            # prints one figure per line, then the trace's sha256
    PYTHONPATH=/tmp/old python bench/train_losses.py          # the same for another checkout (``git archive``)

Two checkouts train identically iff the final-weights sha256 lines agree (the trace is rounded by the CSV writer) (same thread count: intra-op parallel
reductions can round differently with another number of threads).
"""

import hashlib
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
from safetensors.torch import load_file

from coopetition.presets import get_preset
from coopetition.train.loop import train


def _final_checkpoint(run: Path, step: int) -> Path:
    """The weights file of ``step`` (``step_<n>.safetensors`` outside any ``resume`` folder)."""
    return next(p for p in sorted(run.rglob(f"*{step}.safetensors"))
                if "resume" not in p.as_posix()[len(run.as_posix()):] and "step" in p.name)


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    config = get_preset("quick")
    config = replace(config, train=replace(config.train, steps=steps, log_every=10, threads=threads,
                                           checkpoint_schedule=f"every:{steps}", eval_schedule=f"every:{steps}"))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = train(config, Path(tmp) / "run", progress=False)
        wall = time.perf_counter() - started
        losses = pd.read_csv(Path(tmp) / "run" / "train.csv").query("metric == 'loss'").value.tolist()
        final = load_file(_final_checkpoint(Path(tmp) / "run", steps))  # the weights, whatever the file's header
    weights = hashlib.sha256()
    for name in sorted(final):
        if name.rsplit(".", 1)[-1] not in ("mask", "IGNORE", "rotary_sin", "rotary_cos"):  # fixed buffers that the
            weights.update(final[name].numpy().tobytes())  # HookedTransformer-based release also stored
    trace = ",".join(f"{v!r}" for v in losses)
    for step in range(10, steps + 1, max(10, steps // 4 // 10 * 10)):
        print(f"train loss at step {step}: {losses[step // 10 - 1]!r}")
    print(f"final train-set eval loss: {result.final_eval[('train', 'loss')]!r}")
    print(f"wall time for {steps} steps incl. 2 evals and 2 checkpoints: {wall:.2f} s ({threads} threads)")
    print(f"loss trace sha256: {hashlib.sha256(trace.encode()).hexdigest()[:16]}")
    print(f"final weights sha256: {weights.hexdigest()[:16]}")


if __name__ == "__main__":
    main()
