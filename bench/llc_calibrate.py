"""Calibrate the ``llc`` analysis's SGLD step size on a few checkpoints of a run (docs/llc.md, "Calibration").

    python bench/llc_calibrate.py RUN --steps 1000,3000,6000 --lr 1e-6,3e-6,1e-5,3e-5 [--gamma 100] [--draws 100]

For every step size, runs ``analyze --analyses llc`` on the checkpoints and prints, per checkpoint, the LLC (mean ±
std across chains), the first- and second-half estimates (equal when the chain has converged), the loss at the
checkpoint and the largest loss any chain reached (a trace that climbs far above L(w*) means the step is too large),
and the seconds per SGLD step. Outputs go to OUT/lr_<lr>/ (tables and the trace figure) for a look at the traces.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from coopetition.analysis.config import AnalysisConfig
from coopetition.analysis.llc import LLCSettings
from coopetition.pipeline import analyze


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--steps", default="1000,3000,6000")
    p.add_argument("--lr", default="1e-6,3e-6,1e-5,3e-5")
    p.add_argument("--gamma", type=float, default=LLCSettings.gamma)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--draws", type=int, default=100)
    p.add_argument("--out", type=Path, default=Path("llc-calibration"))
    args = p.parse_args()
    rows = []
    for lr in (float(x) for x in args.lr.split(",")):
        llc = replace(LLCSettings(), lr=lr, gamma=args.gamma, chains=args.chains, draws=args.draws)
        config = AnalysisConfig(analyses=("llc",), settings={"llc": llc}, workers=1, threads=1)
        start = time.perf_counter()
        result = analyze(args.run, args.steps, config, args.out / f"lr_{lr:g}", progress_bar=False)
        seconds = time.perf_counter() - start
        table = pd.read_csv(result.tables["llc"])
        n_steps = len(result.steps) * llc.chains * (llc.draws + llc.burnin)
        for _, r in table[table["chain"] == -1].iterrows():
            rows.append({"lr": lr, "gamma": args.gamma, "step": r["step"], "llc": r["llc_mean"], "std": r["llc_std"],
                         "first_half": r["llc_first_half"], "second_half": r["llc_second_half"],
                         "init_loss": r["init_loss"], "max_loss": r["loss_max"], "failed": r["failed"],
                         "s_per_sgld_step": result.seconds.get("llc", seconds) / n_steps})
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"), flush=True)


if __name__ == "__main__":
    main()
