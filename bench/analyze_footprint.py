"""What ``coopetition analyze`` pulls in: the package modules it imports (and their lines), and the lines of code
per layer of the package. The architecture's before/after figures (docs/architecture.md) come from here.

    python bench/analyze_footprint.py RUN [SPEC]          # analyses RUN into a temporary folder (default SPEC: -1:)
    PYTHONPATH=/tmp/old python bench/analyze_footprint.py RUN   # another checkout (``git worktree add``)

The analysis runs in this process through the CLI's entry point (``coopetition.cli.main``), with the default
analyses on one checkpoint and few sequences (the import set does not depend on how much is computed); then every
``coopetition`` module in ``sys.modules`` is counted with the lines of its file.
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path


def lines(path: Path) -> int:
    return sum(1 for _ in path.open(encoding="utf-8"))


def main() -> None:
    run, spec = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "-1:"
    from coopetition.cli import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        code = cli(["analyze", run, "--checkpoint-range", spec, "--out", f"{tmp}/out", "--no-cache", "--no-progress",
                    "--n-seqs", "8", "--patch-seqs", "4", "--probe-seqs", "32", "--workers", "1"])
    if code:
        raise SystemExit(f"analyze failed with exit code {code}")
    package = Path(sys.modules["coopetition"].__file__).parent
    loaded = sorted(name for name, module in sys.modules.items()
                    if (name == "coopetition" or name.startswith("coopetition.")) and getattr(module, "__file__", None))
    total = sum(lines(Path(sys.modules[n].__file__)) for n in loaded)
    print(f"coopetition analyze imported {len(loaded)} package modules, {total:,} lines ({package})")
    per_layer: Counter = Counter()
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).parts
        per_layer[parts[0] if len(parts) > 1 else path.stem] += lines(path)
    print("lines of code per part of the package:")
    for part in ("store", "analysis", "interventions", "pipeline", "plots", "train", "task", "model"):
        if part in per_layer:
            print(f"  {part:<14} {per_layer[part]:>6,}")
    print(f"  {'(all)':<14} {sum(per_layer.values()):>6,}")


if __name__ == "__main__":
    main()
