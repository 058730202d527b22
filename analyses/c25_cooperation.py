"""C25 Fig 4a at CPU scale: does a layer 2 that already implements CIWL speed up learning ICL?

ICL-only data (a random label pair per sequence, so only in-context learning helps) is learned twice: from scratch,
and with layer 1 (the paper's L2, 0-indexed here), the final LN and the unembedding frozen from the main run after
CIWL formed (``graft_out:MAIN@STEP:0``; only the embeddings and layer 0 learn). Reports the first step at which the
ICL-eval loss (full cross-entropy) falls below ln 2 / 2 in each run.

    python analyses/c25_cooperation.py --main runs/quick@last

Writes ``OUT/eval.csv`` (tidy, both runs), ``OUT/summary.csv`` and ``OUT/icl_loss.html``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _recipes import (LN2, common_arguments, eval_long, first_step, line_figure, train_all, variant,  # noqa: E402
                      write_figure, write_table)

from coopetition.interventions import CheckpointRef  # noqa: E402
from coopetition.presets import get_preset  # noqa: E402

THRESHOLD = LN2 / 2


def graft_spec(main: str) -> str:
    """``graft_out`` from the main run with the step resolved and the path absolute (so the record is exact)."""
    ref = CheckpointRef.parse(main)
    _, step = ref.checkpoint_path()
    return f"graft_out:{Path(ref.run).resolve()}@{step}:0"


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    icl = table[(table.evaluator == "icl") & (table.metric == "loss")]
    reached = first_step(table, "icl", "loss", below=THRESHOLD)
    summary = pd.DataFrame({
        "run": reached.index,
        "steps_to_icl_loss_below_ln2_over_2": reached.values,
        "min_icl_loss": icl.groupby("run").value.min().reindex(reached.index).values,
        "final_icl_loss": icl.sort_values("step").groupby("run").value.last().reindex(reached.index).values,
        "steps_trained": table.groupby("run").step.max().reindex(reached.index).values,
    })
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--main", default="runs/quick@last", help="the main (bursty) run's checkpoint, RUN@STEP")
    parser.add_argument("--scratch-steps", type=int, help="train the from-scratch run longer (default: --steps)")
    common_arguments(parser, "runs/c25_cooperation", steps=4000)
    args = parser.parse_args(argv)

    base = get_preset("icl-only")
    configs = {"scratch": variant(base, args, "scratch", steps=args.scratch_steps or args.steps),
               "grafted": variant(base, args, "graft_out_l1", (graft_spec(args.main),))}
    runs = {name: (config, args.out / "runs" / name) for name, config in configs.items()}
    train_all(runs, args.jobs, args.progress)

    table = eval_long({name: path for name, (_, path) in runs.items()})
    write_table(table, args.out / "eval.csv")
    summary = summarise(pd.read_csv(args.out / "eval.csv"))
    write_table(summary, args.out / "summary.csv")
    fig = line_figure(pd.read_csv(args.out / "eval.csv"), "icl", "loss", "ICL-only training: ICL-eval loss",
                      x="step", hlines={"ln 2": LN2, "ln 2 / 2": THRESHOLD}, y_range=[0, 8])
    write_figure(fig, args.out / "icl_loss.html")
    print(summary.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
