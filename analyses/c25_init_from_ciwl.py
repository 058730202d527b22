"""C25 Fig 4c at CPU scale: starting normal (bursty) training from CIWL-only checkpoints, does ICL still appear?

A CIWL-only run is trained once (shared with ``c25_graft_window.py``). For each chosen checkpoint, the main run's
bursty data is trained from that checkpoint's weights with a fresh Adam state (``--init-from CIWL@STEP``). Flip-eval
in-context accuracy above 0.5 means ICL dominates, below 0.5 CIWL. The x axis counts total steps (CIWL-only steps
+ bursty steps), as the paper's does in sequences.

    python analyses/c25_init_from_ciwl.py --sources 1000,2000,4000,8000

Writes ``OUT/eval.csv`` (tidy, with ``source_step`` and ``total_step``), ``OUT/summary.csv`` and ``OUT/flip.html``.
"""

from __future__ import annotations

import argparse
import sys
from itertools import cycle
from pathlib import Path

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _recipes import (checkpoint_steps, common_arguments, eval_long, source_run, train_all, variant,  # noqa: E402
                      write_figure, write_table)

from coopetition.errors import ConfigError  # noqa: E402
from coopetition.presets import get_preset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ciwl", type=Path, default=Path("runs/ciwl_only"), help="CIWL-only run (trained if absent)")
    parser.add_argument("--ciwl-steps", type=int, default=20000, help="length of the CIWL-only run")
    parser.add_argument("--sources", default="0,1000,2000,4000,8000", help="CIWL-only checkpoint steps to start from")
    common_arguments(parser, "runs/c25_init_from_ciwl", steps=8000)
    args = parser.parse_args(argv)

    ciwl = source_run(get_preset("ciwl-only"), args.ciwl, args.ciwl_steps, args.progress)
    sources = [int(s) for s in args.sources.split(",")]
    missing = [s for s in sources if s not in checkpoint_steps(ciwl)]
    if missing:
        raise ConfigError(f"CIWL-only run {ciwl} has no checkpoints at {missing}")
    base = get_preset("quick")
    configs = {f"from {s}": variant(base, args, f"init_from_ciwl_{s}", init_from=f"{ciwl.resolve()}@{s}")
               for s in sources}
    runs = {name: (config, args.out / "runs" / name.replace(" ", "_")) for name, config in configs.items()}
    train_all(runs, args.jobs, args.progress)

    source_step = {f"from {s}": s for s in sources}
    table = eval_long({n: p for n, (_, p) in runs.items()}, source_step=source_step)
    ciwl_table = eval_long({"ciwl_only": ciwl}, source_step={"ciwl_only": 0})
    table = pd.concat([table, ciwl_table], ignore_index=True)
    table["total_step"] = table.step + table.source_step.where(table.run != "ciwl_only", 0)
    write_table(table, args.out / "eval.csv")

    table = pd.read_csv(args.out / "eval.csv")
    flip = table[(table.evaluator == "flip") & (table.metric == "in_context_acc")]
    summary = (flip[flip.run != "ciwl_only"].sort_values("step").groupby("run")
               .agg(source_step=("source_step", "first"), peak_flip=("value", "max"), final_flip=("value", "last"))
               .reset_index().sort_values("source_step"))
    summary["icl_appeared"] = summary.peak_flip > 0.5
    write_table(summary, args.out / "summary.csv")

    fig = go.Figure()
    for (name, part), colour in zip(flip.groupby("run", sort=False), cycle(px.colors.qualitative.Plotly)):
        part = part.sort_values("total_step")
        if name == "ciwl_only":
            colour = "black"
        fig.add_trace(go.Scatter(x=part.total_step, y=part.value, mode="lines", name=name, line_color=colour,
                                 line_dash="dot" if name == "ciwl_only" else "solid"))
        if name != "ciwl_only":  # a dot at the starting point, as in the paper
            fig.add_trace(go.Scatter(x=part.total_step[:1], y=part.value[:1], mode="markers", showlegend=False,
                                     marker=dict(size=9, color=colour)))
    fig.add_hline(y=0.5, line_dash="dot", annotation_text="chance")
    fig.update_layout(title="Flip-eval in-context accuracy after initialising from CIWL-only checkpoints",
                      xaxis_title="total steps (CIWL-only + bursty)", yaxis_title="flip in-context acc",
                      template="plotly_white", yaxis_range=[0, 1])
    write_figure(fig, args.out / "flip.html")
    print(summary.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
