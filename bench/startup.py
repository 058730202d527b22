"""Start-up cost of the CLI: CPU seconds (user + sys of the child, less noisy than wall on a shared machine) and wall
seconds of

- ``coopetition --help``;
- a bad-input error (``train --steps -3``: exit 2, one line);
- ``train --preset quick --steps 0``: everything a run does before its first step (bank, eval sets, model, the
  step-0 evaluation and checkpoint), i.e. the time to reach step 1;
- ``import transformer_lens`` and ``import coopetition.model.tl`` (TransformerLens's three core classes) alone.

    python bench/startup.py [REPEATS]                       # this checkout, this interpreter
    PYTHONPATH=/tmp/old python bench/startup.py             # another checkout (``git archive``)

Each figure is the fastest of REPEATS (default 3) runs, one per line.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(args: list[str], expect: int = 0) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != expect:
        raise SystemExit(f"{args}: exit {result.returncode}\n{result.stderr[-2000:]}")
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        cases = {
            "--help": (["-m", "coopetition", "--help"], 0),
            "bad input (train --steps -3)": (["-m", "coopetition", "train", "--preset", "quick", "--steps", "-3",
                                              "--run-dir", str(Path(tmp) / "bad")], 2),
            "train to first step (--steps 0)": (["-m", "coopetition", "train", "--preset", "quick", "--steps", "0",
                                                 "--run-dir", "RUN", "--no-progress"], 0),
            "import transformer_lens": (["-c", "import transformer_lens"], 0),
            "import coopetition.model.tl": (["-c", "import coopetition.model.tl"], 0),
        }
        for name, (args, expect) in cases.items():
            best = (float("inf"), float("inf"))
            for i in range(repeats):
                run_args = [str(Path(tmp) / f"run{i}") if a == "RUN" else a for a in args]
                if "coopetition.model.tl" in " ".join(run_args):
                    try:
                        import importlib.util
                        if importlib.util.find_spec("coopetition.model.tl") is None:
                            break
                    except ModuleNotFoundError:
                        break
                best = min(best, timed(run_args, expect))
            if best[0] < float("inf"):
                print(f"{name}: {best[0]:.2f} CPU-s, {best[1]:.2f} s wall")


if __name__ == "__main__":
    main()
