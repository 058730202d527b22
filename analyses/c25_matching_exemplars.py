"""C25 Fig 6a at CPU scale: with matching exemplars (the query is an exact copy of its in-context exemplar), is
ICL persistent rather than transient?

Trains the ``mq`` preset (``quick`` with matching exemplars; or uses an existing run given as ``--mq``) and compares
its flip-eval in-context accuracy with the main run's (``--main``, trained if absent with the ``quick`` preset at the
same length). Flip above 0.5 means ICL
dominates, below 0.5 CIWL.

    python analyses/c25_matching_exemplars.py --main runs/quick --steps 20000

Writes ``OUT/eval.csv`` (tidy, both runs), ``OUT/summary.csv`` and ``OUT/flip.html``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _recipes import (common_arguments, eval_long, line_figure, source_run, train_all, variant,  # noqa: E402
                      write_figure, write_table)

from coopetition.presets import get_preset  # noqa: E402


def transience(table: pd.DataFrame, evaluator: str = "flip") -> pd.DataFrame:
    rows = table[(table.evaluator == evaluator) & (table.metric == "in_context_acc")].sort_values("step")
    out = rows.groupby("run").agg(peak=("value", "max"), final=("value", "last")).reset_index()
    out["peak_step"] = rows.loc[rows.groupby("run").value.idxmax()].set_index("run").step.reindex(out.run).values
    out["drop"] = out.peak - out.final
    return out.assign(evaluator=evaluator)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--main", type=Path, default=Path("runs/quick"), help="main run (trained if absent)")
    parser.add_argument("--mq", type=Path, help="an existing matching-exemplar run to use instead of training one")
    common_arguments(parser, "runs/c25_matching_exemplars", steps=20000)
    args = parser.parse_args(argv)

    main_run = source_run(get_preset("quick"), args.main, args.steps, args.progress)
    mq_run = args.mq or args.out / "runs" / "mq"
    if args.mq is None:
        train_all({"mq": (variant(get_preset("mq"), args, "mq"), mq_run)}, 1, args.progress)

    write_table(eval_long({"main": main_run, "mq": mq_run}), args.out / "eval.csv")
    table = pd.read_csv(args.out / "eval.csv")
    table = table[table.step <= args.steps]
    summary = pd.concat([transience(table, "flip"), transience(table, "icl")], ignore_index=True)
    write_table(summary, args.out / "summary.csv")
    write_figure(line_figure(table, "flip", "in_context_acc", "Flip-eval in-context accuracy: normal vs matching "
                             "exemplars", x="step", hlines={"chance": 0.5}, y_range=[0, 1]), args.out / "flip.html")
    print(summary.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
