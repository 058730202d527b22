"""Lay the toy model's L1 / L2 over a trained network's ICL / CIWL evaluator losses by rescaling time.

The toy step u that corresponds to network time s (sequences seen) is u = (s - s0) / tau: tau is network
sequences per toy step, s0 the network time of toy step 0. Cross-entropy over 12,800 classes and the toy's squared
error live on different scales, so each curve is min-max normalised over its whole trajectory first (the toy's range
maps onto the network's: loss ~ k L(u) + c with k, c fixed by the two ranges, not fitted -- a free affine map would
let a tiny wiggle of the toy curve be blown up to fit anything). Before toy step 0 the toy curve holds its initial
value and after its stop step its final value. (tau, s0) are found by a log-spaced grid search refined by zooming;
the fit quality is R^2 per curve (of the normalised curves) and their mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from coopetition.errors import DataError
from coopetition.tables import FLOAT, INT, STR, read_table

PAIRS = (("icl", "loss_1"), ("ciwl", "loss_2"))  # network evaluator <- toy quantity
EVAL_SCHEMA = {"step": INT, "sequences": INT, "evaluator": STR, "metric": STR, "value": FLOAT}  # a run's eval.csv
EVAL_COLUMNS = tuple(EVAL_SCHEMA)


@dataclass(frozen=True)
class TimeFit:
    """Best time map and affine loss maps for one toy seed; ``r2`` is the mean of the two per-curve R^2."""

    seed: int
    tau: float
    s0: float
    scale: tuple[float, float]
    offset: tuple[float, float]
    r2_icl: float
    r2_ciwl: float
    rmse_icl: float
    rmse_ciwl: float

    @property
    def r2(self) -> float:
        return 0.5 * (self.r2_icl + self.r2_ciwl)


def read_network_losses(run_dir: str | Path) -> pd.DataFrame:
    """``sequences, evaluator, value`` rows of the ICL and CIWL loss from ``RUN/eval.csv`` (averaged over
    duplicate rows), sorted by sequences."""
    path = Path(run_dir) / "eval.csv"
    if not path.is_file():
        raise DataError(f"network run has no eval table: {path} does not exist")
    table = read_table(path, EVAL_SCHEMA, "eval.csv")  # bounded, typed, header-only reads as no rows
    loss = table[(table["metric"] == "loss") & table["evaluator"].isin([p[0] for p in PAIRS])]
    for evaluator, _ in PAIRS:
        if (loss["evaluator"] == evaluator).sum() < 4:
            raise DataError(f"{path} needs >= 4 rows of evaluator {evaluator!r} metric 'loss' to fit a time scale")
    return (loss.groupby(["evaluator", "sequences"], as_index=False)["value"].mean()
            .sort_values(["evaluator", "sequences"], ignore_index=True))


def _normalise(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Min-max map onto [0, 1]; also returns (min, range) to map back."""
    lo, span = float(values.min()), float(values.max() - values.min())
    return (values - lo) / max(span, 1e-300), lo, span


def _sse(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per row of ``x`` (candidates x points), the squared error against the normalised network curve ``y``."""
    return ((x - y) ** 2).sum(1)


def _score(toy_t, toy_y, net, taus, s0s):
    """Mean R^2 over the two curves for every (tau, s0) candidate (flattened)."""
    tau, s0 = (v.ravel() for v in np.meshgrid(taus, s0s, indexing="ij"))
    total = np.zeros(len(tau))
    for (evaluator, quantity) in PAIRS:
        s, y = net[evaluator]
        u = (s[None, :] - s0[:, None]) / tau[:, None]
        x = np.interp(u, toy_t, toy_y[quantity])
        sst = ((y - y.mean()) ** 2).sum()
        total += 1 - _sse(x, y) / max(sst, 1e-300)
    return tau, s0, total / 2


def fit_time_scale(toy: pd.DataFrame, network: pd.DataFrame, seed: int, zoom_rounds: int = 4) -> TimeFit:
    """Fit one toy seed's trace (``step, quantity, value`` rows of loss_1 and loss_2) to the network losses."""
    wide = toy.pivot_table(index="step", columns="quantity", values="value").sort_index()
    toy_t = wide.index.to_numpy(dtype=float)
    toy_norm = {q: _normalise(wide[q].to_numpy()) for _, q in PAIRS}
    toy_y = {q: v[0] for q, v in toy_norm.items()}
    net_norm = {e: _normalise(g["value"].to_numpy()) for e, g in network.groupby("evaluator")}
    net = {e: (g["sequences"].to_numpy(dtype=float), net_norm[e][0]) for e, g in network.groupby("evaluator")}
    span = max(s.max() for s, _ in net.values()) - min(s.min() for s, _ in net.values())
    s_min = min(s.min() for s, _ in net.values())
    t_end = max(toy_t[-1], 1.0)
    # tau such that the toy run covers 1/20 .. 20 times the network span; s0 within +-span of the first point.
    log_tau = np.linspace(np.log(span / t_end / 20), np.log(span / t_end * 20), 61)
    s0s = np.linspace(s_min - span, s_min + span, 41)
    for _ in range(zoom_rounds + 1):
        tau, s0, r2 = _score(toy_t, toy_y, net, np.exp(log_tau), s0s)
        best = int(np.argmax(r2))
        dlog, ds = (log_tau[1] - log_tau[0]) * 3, (s0s[1] - s0s[0]) * 3
        log_tau = np.linspace(np.log(tau[best]) - dlog, np.log(tau[best]) + dlog, 25)
        s0s = np.linspace(s0[best] - ds, s0[best] + ds, 25)
    best_tau, best_s0 = float(tau[best]), float(s0[best])
    stats = []
    for evaluator, quantity in PAIRS:
        s, y = net[evaluator]
        x = np.interp((s - best_s0) / best_tau, toy_t, toy_y[quantity])[None, :]
        sse = _sse(x, y)[0]
        sst = ((y - y.mean()) ** 2).sum()
        (_, t_lo, t_span), (_, n_lo, n_span) = toy_norm[quantity], net_norm[evaluator]
        k = n_span / max(t_span, 1e-300)  # network loss = k * toy loss + c
        rmse = float(np.sqrt(sse / len(y))) * n_span  # in network loss units
        stats.append((k, n_lo - k * t_lo, float(1 - sse / max(sst, 1e-300)), rmse))
    (k1, c1, r1, e1), (k2, c2, r2_, e2) = stats
    return TimeFit(seed, best_tau, best_s0, (k1, k2), (c1, c2), r1, r2_, e1, e2)


def fit_all_seeds(trace: pd.DataFrame, network: pd.DataFrame, condition: str | None = None) -> pd.DataFrame:
    """One row per toy seed (of ``condition``, default the first): tau, s0, loss maps, R^2 and RMSE, best first."""
    condition = condition if condition is not None else trace["condition"].iloc[0]
    rows = []
    part = trace[(trace["condition"] == condition) & trace["quantity"].isin([q for _, q in PAIRS])]
    for seed, group in part.groupby("seed"):
        f = fit_time_scale(group, network, int(seed))
        rows.append(dict(condition=condition, seed=f.seed, tau=f.tau, s0=f.s0, scale_icl=f.scale[0],
                         offset_icl=f.offset[0], scale_ciwl=f.scale[1], offset_ciwl=f.offset[1], r2=f.r2,
                         r2_icl=f.r2_icl, r2_ciwl=f.r2_ciwl, rmse_icl=f.rmse_icl, rmse_ciwl=f.rmse_ciwl))
    return pd.DataFrame(rows).sort_values("r2", ascending=False, ignore_index=True)
