"""``coopetition toy``: integrate a minimal model, write tidy tables, figures and summary.json.

The CLI only parses, validates and calls the library (coopetition.toy); every output is reachable from Python.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import pandas as pd

from coopetition.errors import ConfigError
from coopetition.toy.classify import PHASES, classify
from coopetition.toy.config import IH24_CLAMPS, PRESETS, ToyConfig, parse_clamp
from coopetition.toy.figures import write_figures
from coopetition.toy.fit import fit_all_seeds, read_network_losses
from coopetition.toy.phase import PhaseGrid, phase_diagram
from coopetition.toy.solve import solve, solve_batch

SWEEP_MU1 = (0.0, 0.01, 0.03, 0.1, 0.3)
OUTPUTS = ("config.json", "summary.json", "trace.csv", "summary.csv", "mu1_sweep_trace.csv", "mu1_sweep_summary.csv",
           "network_losses.csv", "fit.csv", "phase_runs.csv", "phase_cells.csv", "phase_boundary.csv", "losses.html",
           "ih24_losses.html", "vectors.html", "mu1_sweep.html", "overlay.html", "phase_diagram.html")


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated numbers, got {text!r}") from None


def _join(values) -> str:
    return ",".join(f"{v:g}" for v in values)


def _seeds(text: str) -> tuple[int, ...]:
    """``N`` -> seeds 0..N-1; ``a,b,c`` (or ``7,`` for one seed) -> exactly those seeds."""
    try:
        if "," not in text:
            n = int(text)
            if not 1 <= n <= 10_000:
                raise ConfigError(f"a seed count N must be in [1, 10000], got {n}")
            return tuple(range(n))
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"seeds must be a count N or a comma-separated list of seeds, got {text!r}") from None


def add_parser(subparsers) -> None:
    """Add the ``toy`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser("toy", help="minimal mathematical models of strategy coopetition (C25) and IH24",
                              description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="c25", help="named reference setting")
    p.add_argument("--alpha", type=float, help="competition weight alpha")
    p.add_argument("--mu1", type=float, help="mechanism-1 offset mu1 (0: mechanism 1 can be perfect alone)")
    p.add_argument("--mu2", type=float, help="mechanism-2 offset mu2")
    p.add_argument("--dims", help="vector sizes d_a,d_b,d_c[,d_d]")
    p.add_argument("--lr", type=float, help="learning rate (ODE: time step)")
    p.add_argument("--steps", type=int, help="maximum number of updates")
    p.add_argument("--seeds", help="N (seeds 0..N-1) or a comma-separated list such as 0,3,7 (or 7, for one)")
    p.add_argument("--threshold", type=float, help="stop a seed once its total loss is below this (0: never)")
    p.add_argument("--clamp", help="vectors held at their targets: 'c', 'b,c', 'c:5' (first 5 coords), 'none'")
    p.add_argument("--method", choices=("gd", "ode"), help="gradient descent or RK4 on the gradient flow")
    p.add_argument("--record-every", type=int, help="steps between rows of trace.csv")
    p.add_argument("--sweep-mu1", default=_join(SWEEP_MU1),
                   help="mu1 values of the transient/persistent sweep figure (c25 presets); '' skips it")
    p.add_argument("--network-run", type=Path, help="trained run dir with eval.csv: fit the toy's time scale to it")
    p.add_argument("--phase-diagram", action="store_true", help="classify over (alpha, mu1, d_d) (~1-2 minutes)")
    grid = PhaseGrid()
    p.add_argument("--phase-alphas", default=_join(grid.alphas), help="phase-diagram alpha values")
    p.add_argument("--phase-mu1s", default=_join(grid.mu1s), help="phase-diagram mu1 values")
    p.add_argument("--phase-dds", default=_join(grid.d_ds), help="phase-diagram d_d values")
    p.add_argument("--phase-seeds", default=str(len(grid.seeds)), help="seeds per phase-diagram point (as --seeds)")
    p.add_argument("--phase-rounds", type=int, default=grid.rounds, help="bisection rounds per mu1 boundary")
    p.add_argument("--replot", action="store_true", help="only rebuild the figures from the tables in --out")
    p.add_argument("--out", type=Path, default=Path("toy_out"), help="output folder")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> ToyConfig:
    """The preset with every given override applied (validated by ToyConfig)."""
    cfg = PRESETS[args.preset]
    over = {k: getattr(args, k) for k in ("alpha", "mu1", "mu2", "lr", "steps", "threshold", "method",
                                          "record_every") if getattr(args, k) is not None}
    if args.dims is not None:
        dims = _floats(args.dims, "--dims")
        if any(d != int(d) for d in dims):
            raise ConfigError(f"--dims must be integers, got {args.dims!r}")
        over["dims"] = tuple(int(d) for d in dims)
    if args.seeds is not None:
        over["seeds"] = _seeds(args.seeds)
    if args.steps is not None and args.record_every is None:
        over["record_every"] = min(cfg.record_every, args.steps)
    cfg = dataclasses.replace(cfg, **over)
    if args.clamp is not None:
        cfg = dataclasses.replace(cfg, clamp=parse_clamp(args.clamp, cfg))
    return cfg


def _write(table: pd.DataFrame, path: Path) -> None:
    table.to_csv(path, index=False, float_format="%.10g")


def run(args: argparse.Namespace) -> int:
    """Run the toy subcommand; returns the exit code. User errors raise CoopetitionError (exit 2 in the CLI)."""
    out: Path = args.out
    if args.replot:
        if not (out / "trace.csv").is_file():
            raise ConfigError(f"--replot needs the tables of an earlier run in --out, but {out}/trace.csv is missing")
        for path in write_figures(out):
            print(path)
        return 0
    cfg = config_from_args(args)
    sweep = _floats(args.sweep_mu1, "--sweep-mu1") if cfg.model == "c25" else ()
    if args.network_run is not None and cfg.model != "c25":
        raise ConfigError(f"--network-run needs a c25 preset (mechanisms 1 and 2), got model {cfg.model!r}")
    grid = None
    if args.phase_diagram:
        if cfg.model != "c25":
            raise ConfigError(f"--phase-diagram needs a c25 preset, got model {cfg.model!r}")
        d_ds = _floats(args.phase_dds, "--phase-dds")
        if any(d != int(d) for d in d_ds):
            raise ConfigError(f"--phase-dds must be integers, got {args.phase_dds!r}")
        grid = PhaseGrid(alphas=_floats(args.phase_alphas, "--phase-alphas"),
                         mu1s=_floats(args.phase_mu1s, "--phase-mu1s"), d_ds=tuple(int(d) for d in d_ds),
                         seeds=_seeds(args.phase_seeds), rounds=args.phase_rounds)
    network = read_network_losses(args.network_run) if args.network_run is not None else None
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:  # figures follow the tables present, so drop an earlier run's tables first
        (out / name).unlink(missing_ok=True)
    timing: dict[str, float] = {}
    report: dict = {"preset": args.preset, "config": dataclasses.asdict(cfg)}
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")

    start = time.perf_counter()
    if cfg.model == "ih24" and args.clamp is None:
        conditions = {name: dataclasses.replace(cfg, clamp=tuple((v, cfg.dim_of[v]) for v in vectors))
                      for name, vectors in IH24_CLAMPS.items()}
        result = solve_batch(list(conditions.values()), list(conditions))
    else:
        result = solve(cfg)
    # Transient / persistent is about two competing mechanisms; IH24 has one, so its runs are not classified.
    summary = classify(result.summary) if cfg.model == "c25" else result.summary
    timing["solve_s"] = time.perf_counter() - start
    _write(result.trace, out / "trace.csv")
    _write(summary, out / "summary.csv")
    report["main"] = _outcome(summary) if cfg.model == "c25" else _ih24_outcome(result.trace)

    if sweep:
        start = time.perf_counter()
        cfgs = [dataclasses.replace(cfg, mu1=m) for m in sweep]
        res = solve_batch(cfgs, [f"mu1={m:g}" for m in sweep], record="losses")
        sweep_summary = classify(res.summary)
        _write(res.trace, out / "mu1_sweep_trace.csv")
        _write(sweep_summary, out / "mu1_sweep_summary.csv")
        report["mu1_sweep"] = {c: _outcome(g) for c, g in sweep_summary.groupby("condition", sort=False)}
        timing["mu1_sweep_s"] = time.perf_counter() - start
    if network is not None:
        start = time.perf_counter()
        fits = fit_all_seeds(result.trace, network)
        _write(network, out / "network_losses.csv")
        _write(fits, out / "fit.csv")
        report["fit"] = {"best": fits.iloc[0].to_dict(), "median_r2": float(fits["r2"].median())}
        timing["fit_s"] = time.perf_counter() - start
    if grid is not None:
        start = time.perf_counter()
        diagram = phase_diagram(cfg, grid)
        _write(diagram.runs, out / "phase_runs.csv")
        _write(diagram.cells, out / "phase_cells.csv")
        _write(diagram.boundary, out / "phase_boundary.csv")
        report["phase_diagram"] = {"runs": len(diagram.runs), "boundaries": diagram.boundary.to_dict("records")}
        timing["phase_diagram_s"] = time.perf_counter() - start
    start = time.perf_counter()
    figures = write_figures(out)
    timing["figures_s"] = time.perf_counter() - start
    report["timing"] = timing
    report["figures"] = [p.name for p in figures]
    (out / "summary.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    main = report["main"]
    if cfg.model == "c25":
        print(f"toy {args.preset}: {main['n_runs']} runs; " + ", ".join(f"{main['phases'][p]} {p}" for p in PHASES)
              + f"; {main['n_converged']} converged (median stop step {main['median_stop_step']})")
    else:
        print(f"toy {args.preset}: step where L1 first fell below 1% of its start: {main['step_loss_1_below_1pct']}")
    print(f"wrote {len(figures)} figures and tables to {out}/ in {sum(timing.values()):.1f} s")
    return 0


def _outcome(summary: pd.DataFrame) -> dict:
    """What summary.json says about one set of runs."""
    converged = summary[summary["converged"]]
    return {
        "n_runs": len(summary),
        "phases": {p: int((summary["phase"] == p).sum()) for p in PHASES},
        "transient_seeds": summary.loc[summary["phase"] == "transient", "seed"].tolist(),
        "n_transient_with_monotone_total": int(((summary["phase"] == "transient") & summary["total_monotone"]).sum()),
        "n_converged": len(converged),
        "stop_steps": dict(zip(summary["seed"].tolist(), summary["stop_step"].tolist())),
        "median_stop_step": float(converged["stop_step"].median()) if len(converged) else None,
        "step_min_loss_1": dict(zip(summary["seed"].tolist(), summary["step_min_loss_1"].tolist())),
    }


def _ih24_outcome(trace: pd.DataFrame) -> dict:
    """Per condition (and seed): the first recorded step where L1 < 1% of its initial value, and the final L1."""
    loss = trace[trace["quantity"] == "loss_1"]
    first, final = {}, {}
    for (cond, seed), g in loss.groupby(["condition", "seed"], sort=False):
        below = g[g["value"] < 0.01 * g["value"].iloc[0]]
        first[f"{cond} (seed {seed})"] = int(below["step"].iloc[0]) if len(below) else None
        final[f"{cond} (seed {seed})"] = float(g["value"].iloc[-1])
    return {"step_loss_1_below_1pct": first, "final_loss_1": final}


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
