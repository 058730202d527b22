"""C25 Fig 4b at CPU scale: which CIWL-only checkpoints supply a layer 2 that speeds up ICL?

A CIWL-only run (no query-class exemplar in context; one context label is set to the query's, so CIWL is optimal
and ICL impossible) is trained once. For each chosen checkpoint of it, ICL-only data is learned with layer 1 (the
paper's L2), the final LN and the unembedding frozen from that checkpoint (``graft_out:CIWL@STEP:0``), alongside
the same training from scratch. The paper finds a window: only sources between 9.8M and 31.5M sequences help.

    python analyses/c25_graft_window.py --ciwl-steps 20000 --sources 1000,2000,4000,8000,12000,16000,20000

Writes ``OUT/eval.csv`` (tidy, every graft run, with a ``source_step`` column), ``OUT/ciwl_source_eval.csv``,
``OUT/summary.csv`` (steps to ICL-eval loss < ln 2 / 2 per source step) and ``OUT/icl_loss.html``,
``OUT/window.html``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _recipes import (LN2, checkpoint_steps, common_arguments, eval_long, first_step, line_figure,  # noqa: E402
                      source_run, train_all, variant, write_figure, write_table)

from coopetition.errors import ConfigError  # noqa: E402
from coopetition.presets import get_preset  # noqa: E402

THRESHOLD = LN2 / 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ciwl", type=Path, default=Path("runs/ciwl_only"), help="CIWL-only run (trained if absent)")
    parser.add_argument("--ciwl-steps", type=int, default=20000, help="length of the CIWL-only run")
    parser.add_argument("--sources", default="1000,2000,4000,8000,12000,16000,20000",
                        help="CIWL-only checkpoint steps to graft from (comma-separated)")
    parser.add_argument("--no-scratch", action="store_true", help="skip the from-scratch baseline")
    common_arguments(parser, "runs/c25_graft_window", steps=4000)
    args = parser.parse_args(argv)

    ciwl = source_run(get_preset("ciwl-only"), args.ciwl, args.ciwl_steps, args.progress)
    available = checkpoint_steps(ciwl)
    sources = [int(s) for s in args.sources.split(",")]
    missing = [s for s in sources if s not in available]
    if missing:
        raise ConfigError(f"CIWL-only run {ciwl} has no checkpoints at {missing}; it has {available}")

    base = get_preset("icl-only")
    configs = {f"from {s}": variant(base, args, f"graft_out_l1_from_ciwl_{s}",
                                    (f"graft_out:{ciwl.resolve()}@{s}:0",)) for s in sources}
    if not args.no_scratch:
        configs["scratch"] = variant(base, args, "scratch")
    runs = {name: (config, args.out / "runs" / name.replace(" ", "_")) for name, config in configs.items()}
    train_all(runs, args.jobs, args.progress)

    source_step = {f"from {s}": s for s in sources} | {"scratch": -1}
    table = eval_long({n: p for n, (_, p) in runs.items()}, source_step=source_step)
    write_table(table, args.out / "eval.csv")
    write_table(eval_long({"ciwl_only": ciwl}), args.out / "ciwl_source_eval.csv")

    table = pd.read_csv(args.out / "eval.csv")
    reached = first_step(table, "icl", "loss", below=THRESHOLD)
    summary = pd.DataFrame({"run": reached.index, "source_step": [source_step[r] for r in reached.index],
                            "steps_to_icl_loss_below_ln2_over_2": reached.values, "steps_trained": args.steps})
    write_table(summary, args.out / "summary.csv")

    write_figure(line_figure(table, "icl", "loss", "ICL-only training with layer 1 grafted from CIWL-only checkpoints",
                             x="step", hlines={"ln 2": LN2, "ln 2 / 2": THRESHOLD}, y_range=[0, 8]),
                 args.out / "icl_loss.html")
    summary = pd.read_csv(args.out / "summary.csv")
    grafts = summary[summary.source_step >= 0]
    fig = go.Figure(go.Scatter(x=grafts.source_step, y=grafts.steps_to_icl_loss_below_ln2_over_2.fillna(args.steps),
                               mode="lines+markers", name="graft (never reached: plotted at steps trained)"))
    fig.update_layout(title="Steps to ICL-eval loss < ln 2 / 2 vs CIWL-only source step", template="plotly_white",
                      xaxis_title="CIWL-only source checkpoint (steps)", yaxis_title="steps to threshold")
    write_figure(fig, args.out / "window.html")
    print(summary.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
