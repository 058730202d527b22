"""The training distribution: a mixture of sequence specs over the bank's training split."""

from __future__ import annotations

import math
from dataclasses import dataclass

from coopetition.errors import ConfigError
from coopetition.task.sequence import SequenceSpec

SPLITS = ("train", "val", "test", "all")


@dataclass(frozen=True)
class TaskConfig:
    """Training sequences. ``mixture`` with ``mixture_weights`` gives p(bursty)-style mixtures; every reference run
    uses one spec with weight 1. ``zipf_alpha`` > 0 skews the query-class distribution (training only; evaluators
    are uniform)."""

    mixture: tuple[SequenceSpec, ...] = (SequenceSpec(),)
    mixture_weights: tuple[float, ...] = (1.0,)
    zipf_alpha: float = 0.0
    class_split: str = "train"
    exemplar_split: str = "train"

    def __post_init__(self) -> None:
        if not self.mixture:
            raise ConfigError("task.mixture needs at least one sequence spec")
        if len(self.mixture_weights) != len(self.mixture):
            raise ConfigError(f"task.mixture_weights has {len(self.mixture_weights)} entries "
                              f"for {len(self.mixture)} specs")
        if (any(not (w >= 0 and math.isfinite(w)) for w in self.mixture_weights)
                or not 0 < sum(self.mixture_weights) < float("inf")):
            raise ConfigError(f"task.mixture_weights must be finite, >= 0, with a positive sum, "
                              f"got {self.mixture_weights}")
        if len({s.context_len for s in self.mixture}) != 1:
            raise ConfigError("every spec in task.mixture must have the same context_len")
        if not 0 <= self.zipf_alpha <= 100:
            raise ConfigError(f"task.zipf_alpha must be in [0, 100], got {self.zipf_alpha}")
        for name in ("class_split", "exemplar_split"):
            if getattr(self, name) not in SPLITS:
                raise ConfigError(f"task.{name} must be one of {SPLITS}, got {getattr(self, name)!r}")

    @property
    def context_len(self) -> int:
        return self.mixture[0].context_len
