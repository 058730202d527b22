"""T23 at CPU scale: does L2 weight decay keep emergent ICL from being transient?

Trains the ``quick`` main run with several ``train.weight_decay`` values (``l2`` form: ``wd * sum ||theta||^2``
added to the loss; the reference's unsquared form is ``--form unsquared``) and measures, per run, the peak and
final in-context accuracy on the ICL and flip evaluators. T23 reports that L2 regularisation around 1e-4 (in their
setting) removes the decay of ICL.

    python analyses/t23_weight_decay.py --decays 0,1e-4,1e-3 --steps 20000

Writes ``OUT/eval.csv`` (tidy, with a ``weight_decay`` column), ``OUT/summary.csv`` and ``OUT/icl.html``,
``OUT/flip.html``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _recipes import (common_arguments, eval_long, line_figure, train_all, variant, write_figure,  # noqa: E402
                      write_table)
from c25_matching_exemplars import transience  # noqa: E402

from coopetition.presets import get_preset  # noqa: E402
from coopetition.store.run import Run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decays", default="0,1e-4,1e-3", help="weight decay values (comma-separated)")
    parser.add_argument("--form", choices=("l2", "unsquared"), default="l2", help="train.weight_decay_form")
    parser.add_argument("--main", type=Path, help="an existing quick run to use as the weight-decay-0 baseline")
    common_arguments(parser, "runs/t23_weight_decay", steps=20000)
    args = parser.parse_args(argv)

    decays = {f"wd {d}": float(d) for d in args.decays.split(",")}
    if args.main:
        decays["wd 0 (main)"] = Run.open(args.main, verify=False).config.train.weight_decay
    configs = {name: variant(get_preset("quick"), args, name.replace(" ", "_"), weight_decay=wd,
                             weight_decay_form=args.form) for name, wd in decays.items() if name != "wd 0 (main)"}
    runs = {name: (config, args.out / "runs" / name.replace(" ", "_")) for name, config in configs.items()}
    train_all(runs, args.jobs, args.progress)

    paths = {n: p for n, (_, p) in runs.items()} | ({"wd 0 (main)": args.main} if args.main else {})
    write_table(eval_long(paths, weight_decay=decays), args.out / "eval.csv")
    table = pd.read_csv(args.out / "eval.csv")
    table = table[table.step <= args.steps]
    summary = pd.concat([transience(table, "icl"), transience(table, "flip")], ignore_index=True)
    summary["weight_decay"] = summary.run.map(decays)
    write_table(summary, args.out / "summary.csv")
    for evaluator in ("icl", "flip"):
        write_figure(line_figure(table, evaluator, "in_context_acc", f"{evaluator} in-context accuracy by weight decay",
                                 x="step", hlines={"chance": 0.5}, y_range=[0, 1]), args.out / f"{evaluator}.html")
    print(summary.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
