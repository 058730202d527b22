"""Find-the-preset helper: run one preset with overrides, or print the strategy curves of finished/partial runs.

    python bench/explore.py run OUT_DIR quick train.lr=3e-4 bank.classes=6400 ...
    python bench/explore.py show RUN_DIR [RUN_DIR ...]
"""

import sys
from pathlib import Path

import pandas as pd

from coopetition.config import apply_override, config_from_dict
from coopetition.presets import get_preset
from coopetition.train.loop import train


def run(out: str, preset: str, overrides: list[str]) -> None:
    data = get_preset(preset).to_dict()
    for item in overrides:
        data = apply_override(data, item)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "overrides.txt").write_text(" ".join([preset, *overrides]))
    train(config_from_dict(data), Path(out) / "run", overwrite=True, progress=False)


def show(run_dir: Path, every: int = 1) -> None:
    frame = pd.read_csv(run_dir / "run" / "eval.csv")
    table = frame[frame.metric == "in_context_acc"].pivot(index="step", columns="evaluator", values="value")
    losses = frame[frame.metric == "loss"].pivot(index="step", columns="evaluator", values="value")
    table["icl_loss"], table["ciwl_loss"] = losses["icl"], losses["ciwl"]
    print("==", (run_dir / "overrides.txt").read_text())
    cols = ["train", "icl", "flip", "ciwl", "iwl", "icl_loss", "ciwl_loss"]
    print(table[cols].iloc[::every].round(2).to_string())


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "run":
        run(rest[0], rest[1], rest[2:])
    else:
        step = int(rest[0]) if rest[0].isdigit() else 1
        for name in rest[1:] if rest[0].isdigit() else rest:
            show(Path(name), step)
