"""Label each run: did mechanism 1 (ICL) emerge, and if so was it transient or persistent at the horizon?

The rule works in units of r1 = L1 / L1_off, where L1_off is L1 with a = 0 (mechanism 1 absent): r1 = 1 means
mechanism 1 explains nothing, r1 = 0 means it is perfect. A run

- *never emerges* if min_t r1 > ``emerge_below`` (mechanism 1 never captured most of what it can explain);
- is *transient* if it emerged and its last r1 >= ``lost_above`` (competition removed mechanism 1 again);
- is *persistent* if it emerged and its last r1 < ``lost_above``.

"Last" is the state at the run's stop step: convergence, or the step budget (the horizon). With mu2 = 0 and
mu1 > 0 the only zero-loss states have a = 0, so given enough steps every emerged run becomes transient; a
persistent label with mu1 > 0 therefore means "mechanism 2 did not win within the horizon", and the summary's
``converged`` column says which runs reached their loss threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coopetition.errors import ConfigError

PHASES = ("transient", "persistent", "never")


@dataclass(frozen=True)
class PhaseRule:
    """Thresholds on r1 = L1 / L1_off (see module docstring). In the paper setting the labels do not depend on
    them (emerged seeds reach min r1 <= 0.13 and end at r1 >= 0.96, the others stay at 1); across the phase
    diagram partial emergence is common and about 10 % of labels move with ``emerge_below`` (docs/toy.md)."""

    emerge_below: float = 0.25
    lost_above: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.emerge_below < 1.0:
            raise ConfigError(f"emerge_below must be in (0, 1), got {self.emerge_below}")
        if not self.emerge_below <= self.lost_above < 1.0:
            raise ConfigError(f"lost_above must be in [emerge_below={self.emerge_below}, 1), got {self.lost_above}")


def classify(summary: pd.DataFrame, rule: PhaseRule = PhaseRule()) -> pd.DataFrame:
    """Add ``r1_min``, ``r1_final``, ``phase`` and ``total_monotone`` (the total loss never rose over one step)
    to a solver summary table (one row per run)."""
    missing = {"min_loss_1", "final_loss_1", "loss_1_off"} - set(summary.columns)
    if missing:
        raise ConfigError(f"summary table lacks columns {sorted(missing)}")
    off = summary["loss_1_off"].to_numpy()
    r1_min = summary["min_loss_1"].to_numpy() / off
    r1_final = summary["final_loss_1"].to_numpy() / off
    emerged = r1_min <= rule.emerge_below
    phase = np.where(~emerged, "never", np.where(r1_final >= rule.lost_above, "transient", "persistent"))
    monotone = summary["max_total_rise"].to_numpy() <= 0 if "max_total_rise" in summary else np.nan
    return summary.assign(r1_min=r1_min, r1_final=r1_final, phase=phase, total_monotone=monotone)


def phase_counts(classified: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group: number of runs in each phase, the majority phase (ties broken in ``PHASES`` order) and the
    fraction of runs in it."""
    counts = (classified.groupby(by)["phase"].value_counts().unstack(fill_value=0)
              .reindex(columns=list(PHASES), fill_value=0))
    total = counts.sum(axis=1)
    majority = counts.idxmax(axis=1)
    out = counts.add_prefix("n_").assign(n_runs=total, phase=majority,
                                         agreement=counts.max(axis=1) / total)
    return out.reset_index()
