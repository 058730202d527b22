"""Phase diagram of mechanism 1 over (alpha, mu1, d_d): transient, persistent or never emerges, with the mu1
boundaries located by bisection.

A coarse grid is solved first (every (alpha, mu1) of one d_d in one vectorised batch). Wherever the majority phase
of the seeds changes between neighbouring mu1 grid values, the bracket is bisected: each round solves the
midpoints of all open brackets of a d_d together, so the cost is ``rounds`` extra batches per d_d, not one run per
bracket. Midpoints are geometric (mu1 spans decades); a bracket starting at mu1 = 0 is split at hi / 4.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from coopetition.errors import ConfigError
from coopetition.toy.classify import PhaseRule, classify, phase_counts
from coopetition.toy.config import ToyConfig
from coopetition.toy.solve import solve_batch


@dataclass(frozen=True)
class PhaseGrid:
    """Grid values (ascending), seeds per point, bisection rounds per boundary and the classification rule."""

    alphas: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
    mu1s: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
    d_ds: tuple[int, ...] = (20, 40, 80, 160, 320)
    seeds: tuple[int, ...] = (0, 1, 2)
    rounds: int = 3
    rule: PhaseRule = PhaseRule()

    def __post_init__(self) -> None:
        for name in ("alphas", "mu1s", "d_ds", "seeds"):
            values = tuple(getattr(self, name))
            object.__setattr__(self, name, values)
            if not values or list(values) != sorted(set(values)):
                raise ConfigError(f"phase grid {name} must be non-empty, distinct and ascending, got {values}")
        if self.alphas[0] < 0 or self.mu1s[0] < 0 or self.d_ds[0] < 1 or self.seeds[0] < 0:
            raise ConfigError("phase grid alphas and mu1s must be >= 0, d_ds >= 1 and seeds >= 0")
        if len(self.mu1s) < 2:
            raise ConfigError(f"phase grid needs at least 2 mu1 values to locate a boundary, got {self.mu1s}")
        if not 0 <= self.rounds <= 12:
            raise ConfigError(f"phase grid rounds must be in [0, 12], got {self.rounds}")


@dataclass(frozen=True)
class PhaseDiagram:
    """``runs``: every classified run (``source`` grid or bisect); ``cells``: phase counts per grid point;
    ``boundary``: one row per located mu1 boundary with its final bracket and estimate."""

    runs: pd.DataFrame
    cells: pd.DataFrame
    boundary: pd.DataFrame


def _midpoint(lo: float, hi: float) -> float:
    return math.sqrt(lo * hi) if lo > 0 else hi / 4


def _solve_points(base: ToyConfig, points: list[tuple[int, float, float]], grid: PhaseGrid) -> pd.DataFrame:
    """Classified runs of every (d_d, alpha, mu1) point x grid seed, one solver batch per d_d."""
    frames = []
    for d_d in sorted({p[0] for p in points}):
        mine = [p for p in points if p[0] == d_d]
        cfgs = [dataclasses.replace(base, alpha=a, mu1=m, dims=base.dims[:3] + (d_d,), seeds=grid.seeds)
                for _, a, m in mine]
        labels = [f"d_d={d} alpha={a:g} mu1={m:.6g}" for d, a, m in mine]
        frames.append(solve_batch(cfgs, labels, record="none").summary)
    return classify(pd.concat(frames, ignore_index=True), grid.rule)


def _majority(runs: pd.DataFrame) -> dict[tuple[int, float, float], str]:
    counts = phase_counts(runs, ["d_d", "alpha", "mu1"])
    return {(int(r.d_d), float(r.alpha), float(r.mu1)): r.phase for r in counts.itertuples()}


def phase_diagram(base: ToyConfig, grid: PhaseGrid = PhaseGrid()) -> PhaseDiagram:
    """Classify ``base`` (a c25 config: dims d_a, d_b, d_c, steps, lr, threshold are kept) over the grid."""
    if base.model != "c25":
        raise ConfigError(f"the phase diagram needs model 'c25' (it varies alpha, mu1, d_d), got {base.model!r}")
    points = [(d, a, m) for d in grid.d_ds for a in grid.alphas for m in grid.mu1s]
    runs = _solve_points(base, points, grid).assign(source="grid")
    majority = _majority(runs)
    brackets = []
    for d in grid.d_ds:
        for a in grid.alphas:
            for lo, hi in zip(grid.mu1s[:-1], grid.mu1s[1:]):
                if majority[d, a, lo] != majority[d, a, hi]:
                    brackets.append(dict(d_d=d, alpha=a, mu1_lo=lo, mu1_hi=hi, phase_lo=majority[d, a, lo],
                                         phase_hi=majority[d, a, hi]))
    extra = []
    for _ in range(grid.rounds if brackets else 0):
        mids = [(b["d_d"], b["alpha"], _midpoint(b["mu1_lo"], b["mu1_hi"])) for b in brackets]
        found = _solve_points(base, mids, grid).assign(source="bisect")
        extra.append(found)
        found_majority = _majority(found)
        for b, (d, a, m) in zip(brackets, mids):
            phase = found_majority[d, a, m]
            if phase == b["phase_lo"]:
                b["mu1_lo"] = m
            else:  # the upper phase, or a third one squeezed in between: keep the boundary of the lower phase
                b["mu1_hi"], b["phase_hi"] = m, phase
    boundary = pd.DataFrame(brackets, columns=["d_d", "alpha", "mu1_lo", "mu1_hi", "phase_lo", "phase_hi"])
    boundary["mu1_boundary"] = [math.sqrt(lo * hi) if lo > 0 else hi / 2
                                for lo, hi in zip(boundary["mu1_lo"], boundary["mu1_hi"])]
    boundary["rounds"] = grid.rounds
    cells = phase_counts(runs, ["d_d", "alpha", "mu1"])
    all_runs = pd.concat([runs, *extra], ignore_index=True)
    return PhaseDiagram(all_runs, cells, boundary)


def boundary_position(mu1: np.ndarray, grid_mu1: tuple[float, ...]) -> np.ndarray:
    """Fractional index of ``mu1`` on the categorical grid axis (log-interpolated between grid values, linear
    next to mu1 = 0), used to draw bisected boundaries on the heat map."""
    g = np.asarray(grid_mu1, dtype=float)
    out = []
    for m in np.atleast_1d(mu1):
        i = int(np.clip(np.searchsorted(g, m, side="right") - 1, 0, len(g) - 2))
        lo, hi = g[i], g[i + 1]
        frac = (m - lo) / (hi - lo) if lo <= 0 else math.log(m / lo) / math.log(hi / lo)
        out.append(i + float(np.clip(frac, 0.0, 1.0)))
    return np.asarray(out)
