"""Minimal mathematical models of strategy coopetition (C25) and of induction-head formation (IH24).

``solve(cfg)`` integrates a model for every seed at once and returns tidy tables; ``classify`` labels each run
transient / persistent / never-emerges; ``phase_diagram`` maps that label over (alpha, mu1, d_d); ``fit`` lays the
toy losses over a trained network's evaluator losses. See docs/toy.md.
"""

from coopetition.toy.config import C25, C25_MU0, IH24, PRESETS, ToyConfig
from coopetition.toy.solve import ToyResult, solve, solve_batch

__all__ = ["C25", "C25_MU0", "IH24", "PRESETS", "ToyConfig", "ToyResult", "solve", "solve_batch"]
