"""The paper's numbers that a faithful run should reproduce (REFERENCE.md §9.5-9.8), as one typed table.

Each ``PaperCheck`` is one row of ``scorecard.csv``: the paper's value in its own unit, where REFERENCE.md states it,
and the band ``[low, high]`` inside which we call our measurement "as in the paper". The bands are ours (the paper
gives point values or words), chosen once here and explained in docs/analyze.md ("Scorecard"):

- accuracies: the paper's value +- 0.05 (5 points: a few times the sampling error of 128-2000 sequences);
- "negligible" direct effects: +- 0.02;
- words only ("rises monotonically", "about 0.5"): the band encodes the words, and ``paper`` is NaN when the
  paper gives no number;
- positions in sequences: no band (NaN): our runs are shorter than the paper's 64M, so they are compared through
  the scale-free rows (fraction of training, ratio of the two peaks) instead.

Evaluator names are ours (``train`` = train_eval, ``icl``, ``flip`` = flip_icl, ``ciwl`` = iwl_copy_avail, ``iwl`` =
pure_iwl). Layers are 0-indexed: the paper's L1 is our layer 0 and its L2 our layer 1. The mechanistic numbers are
for the ``main`` run's final 64M checkpoint, so they are the yardstick for a run's *last* checkpoint; earlier steps
are shown against them for context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NAN = math.nan
INF = math.inf
MAIN_SEQUENCES = 64e6  # length of C25's main run (REFERENCE §4.5)

ACC = "in-context acc"
FULL_ACC = "acc (full vocabulary)"
DELTA_ACC = "delta in-context acc"
SEQUENCES = "sequences"
FRACTION = "fraction of training"


@dataclass(frozen=True)
class PaperCheck:
    """One check: ``paper`` in ``unit`` (NaN when the paper states it only in words, see ``stated``), the agreement
    band ``[low, high]`` (NaN: not compared), the REFERENCE.md ``section`` it comes from, and the evaluator it is
    measured on (None: run-level, from the eval log or the weights)."""

    check: str
    paper: float
    unit: str
    low: float
    high: float
    section: str
    stated: str
    evaluator: str | None = None

    def __post_init__(self) -> None:
        if not (math.isnan(self.low) and math.isnan(self.high)) and not self.low <= self.high:
            raise ValueError(f"{self.check}: band [{self.low}, {self.high}] is empty")

    def agrees(self, measured: float) -> bool | None:
        """True/False when compared; None when the check has no band or nothing was measured."""
        if math.isnan(self.low) or math.isnan(measured):
            return None
        return self.low <= measured <= self.high


def _around(value: float, tol: float) -> tuple[float, float]:
    return value - tol, value + tol


def _acc(check: str, evaluator: str, value: float, section: str, stated: str, unit: str = ACC) -> PaperCheck:
    low, high = _around(value, 0.05)
    return PaperCheck(check, value, unit, max(low, 0.0), min(high, 1.0), section, stated, evaluator)


def _sequences(check: str, value: float, stated: str) -> tuple[PaperCheck, PaperCheck]:
    """A position in training: in the paper's sequences (not compared) and as a fraction of the 64M run."""
    fraction = value / MAIN_SEQUENCES
    return (PaperCheck(check, value, SEQUENCES, NAN, NAN, "§9.6", stated),
            PaperCheck(f"{check}_fraction", fraction, FRACTION, fraction / 2, fraction * 2, "§9.6 / §4.5",
                       f"{stated}, of the 64M main run (band: x/2 .. x2)"))


PAPER: tuple[PaperCheck, ...] = (
    # §9.5 end-of-training behaviour (main @ 64M, in-context acc; §2.5 gives the exact values)
    _acc("final_acc_train", "train", 0.9862, "§9.5 (§2.5)", "train 98.62 % at 64M"),
    _acc("final_acc_ciwl", "ciwl", 0.9874, "§9.5 (§2.5)", "CIWL 98.74 % at 64M"),
    _acc("final_acc_flip", "flip", 0.0146, "§9.5 (§2.5)", "flip 1.46 % at 64M"),
    _acc("final_acc_icl", "icl", 0.4664, "§9.5 (§2.5)", "ICL eval 46.64 % full acc at 320M", FULL_ACC),
    _acc("final_acc_iwl", "iwl", 0.0008, "§9.5 (§2.5)", "pure IWL 0.08 % full acc at 320M", FULL_ACC),
    # §9.6 time course (eval log)
    *_sequences("flip_peak", 4.25e6, "flip-eval peak ~4.25M sequences"),
    *_sequences("icl_eval_peak", 7.75e6, "ICL-eval peak ~7.75M sequences"),
    *_sequences("flip_near_zero", 15e6, "flip ~0 (here: <= 0.05) by ~15-20M sequences"),
    PaperCheck("peak_ratio", 7.75 / 4.25, "ratio", 1.0, INF, "§9.6",
               "ICL-eval peak / flip peak = 7.75M / 4.25M; same ordering expected (>= 1)"),
    # §9.7 mechanistic checks at 64M (numbers from §5.3); the paper's L1 = our layer 0, its L2 = our layer 1
    *(PaperCheck(f"l0_direct_effect_{e}", d, DELTA_ACC, -0.02, 0.02, "§9.7 (§5.3)",
                 f"L1 ablated, L2 Q/K/V preserved: {text} (negligible)", e)
      for e, d, text in (("train", 0.9852 - 0.9862, "98.62 -> 98.52 %"), ("ciwl", 0.9848 - 0.9874, "98.74 -> 98.48 %"),
                         ("flip", 0.0178 - 0.0146, "1.46 -> 1.78 %"))),
    *(_acc(f"recompute_{qkv}_{e}", e, v, "§9.7 (§5.3)", f"L1 ablated, only L2's {qkv.upper()} recomputed: {100 * v:.2f} %")
      for qkv, values in (("q", (0.9574, 0.9540, 0.046)), ("k", (0.5706, 0.5748, 0.4466)), ("v", (0.5928, 0.5864, 0.40)))
      for e, v in zip(("train", "ciwl", "flip"), values)),
    *(_acc(f"all_heads_removed_{e}", e, v, "§9.7 (§5.3)", f"all 16 heads ablated: {100 * v:.2f} %")
      for e, v in (("train", 0.6268), ("ciwl", 0.6242), ("flip", 0.3752))),
    # §9.8 L2 heads are copiers (single isolated head, query row clamped; CIWL eval, in-context acc vs delta 2S-1)
    PaperCheck("copier_slope", NAN, "in-context acc per unit delta", 0.0, INF, "§9.8 (§5.3, Fig 2b)",
               "rises monotonically with the clamped delta (no number given): slope > 0; mean over L2 heads", "ciwl"),
    PaperCheck("copier_acc_at_delta0", 0.5, ACC, 0.4, 0.6, "§9.8", "passes about 0.5 at delta 0; mean over L2 heads",
               "ciwl"),
    PaperCheck("copier_monotone_fraction", 1.0, "fraction of last-layer heads", 1.0, 1.0, "§9.8 (§5.3)",
               "each L2 head acts as a copier (monotone, drops <= 0.05 allowed)", "ciwl"),
    # L1 (our layer 0) label-token attention switches from previous-token to self (thread; §2.5, §6.2, §6.3)
    PaperCheck("l0_switched_to_self", 3 / 8, "fraction of layer-0 heads", 1e-9, 1.0, "§2.5 / §6.3 / §4.6 [inf]",
               "L1 switches from previous-token to self attention; 3 of 8 L1 heads have previous-token behaviour "
               "(nol0h147) [inferred]; compared: > 0", "train"),
    PaperCheck("l0_prev_token_heads", 0.0, "fraction of layer-0 heads", 0.0, 0.0, "§2.5 / §6.3 [inf]",
               "after the switch no L1 head attends label -> previous token more than to self [inferred]", "train"),
)

BY_CHECK: dict[str, PaperCheck] = {c.check: c for c in PAPER}
assert len(BY_CHECK) == len(PAPER), "duplicate check names"
