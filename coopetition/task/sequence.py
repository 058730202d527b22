"""What one sequence distribution is: the reference's class sampler, exemplar sampler and label scheme in one spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from coopetition.errors import ConfigError
from coopetition.task.label_pairs import PAIR_SETS, check_split, pair_table

if TYPE_CHECKING:
    import torch
    from torch import Tensor

PairSet = Literal["train", "val", "test", "all"]
Relabel = Literal["none", "fewshot", "01", "flip"]
RELABELS = ("none", "fewshot", "01", "flip")

# Position types, as in the reference (samplers.py): used by MQ, relabelling and analyses.
OTHER, BURSTY, DISTRACTOR, QUERY = 0, 1, 2, 3


@dataclass(frozen=True)
class SequenceSpec:
    """One sequence distribution over ``x1 y1 ... xN yN xq``.

    - ``burstiness`` B: copies of the query class in context (plus B of one distractor class if ``distractor``).
    - ``no_support`` / ``unique_rest``: the remaining N - 2B items avoid the query (and distractor) class;
      ``unique_rest`` also draws them without replacement.
    - ``relabel``: ``none`` (label = class index), ``fewshot`` (a random ordered pair from ``fewshot_labels``
      labels per sequence), ``01`` (fewshot with labels {0, 1}), ``flip`` (swap query/distractor labels; the target
      becomes the distractor's class).
    - ``fewshot_split``: train/val/test shares of the K(K-1)/2 unordered label pairs (the reference's
      ``fs_relabel_split``, IH24: ``(8, 2, 0)``), drawn with ``fewshot_split_seed`` (20); ``fewshot_pairs`` names
      the set this spec draws from (``val`` for IH24's ``fsl_val_rl``). Without a split every pair is a train pair.
      Training and evaluators that give the same K, shares and seed see the same split (``task.label_pairs``).
    - ``assign_query_label_random``: one random context label is overwritten with the query's (CIWL data).
    - ``match_exemplars``: bursty items and the query share one exemplar, distractors another (C25's MQ).
    """

    context_len: int = 2
    burstiness: int = 1
    distractor: bool = True
    no_support: bool = False
    unique_rest: bool = False
    relabel: Relabel = "none"
    fewshot_labels: int = 0
    fewshot_split: tuple[float, float, float] | None = None
    fewshot_pairs: PairSet = "train"
    fewshot_split_seed: int = 20
    assign_query_label_random: bool = False
    match_exemplars: bool = False

    def __post_init__(self) -> None:
        n, b = self.context_len, self.burstiness
        if not 1 <= n <= 15:
            raise ConfigError(f"context_len must be in [1, 15] (at most 32 tokens), got {n}")
        if b < 0:
            raise ConfigError(f"burstiness must be >= 0, got {b}")
        if self.n_distractor_items + b > n:
            raise ConfigError(f"burstiness {b} needs {b + self.n_distractor_items} context slots but context_len is {n}"
                              f" (need 2B <= N with a distractor)")
        if self.relabel not in RELABELS:
            raise ConfigError(f"relabel must be one of {RELABELS}, got {self.relabel!r}")
        if not 0 <= self.fewshot_labels <= 10**7:
            raise ConfigError(f"fewshot_labels must be in [0, 1e7], got {self.fewshot_labels}")
        if self.relabel == "fewshot" and self.fewshot_labels < 2:
            raise ConfigError(f"relabel 'fewshot' needs fewshot_labels >= 2, got {self.fewshot_labels}")
        self._check_pair_split()
        if self.relabel in ("fewshot", "01", "flip") and b == 0:
            raise ConfigError(f"relabel {self.relabel!r} needs burstiness >= 1 (there is no query-class item to relabel)")
        if self.relabel == "flip" and not self.distractor:
            raise ConfigError("relabel 'flip' needs a distractor class to swap labels with")
        if self.assign_query_label_random and self.relabel != "none":
            # The reference silently lets relabelling override this; we refuse the ambiguous combination.
            raise ConfigError("assign_query_label_random cannot be combined with relabelling")

    def _check_pair_split(self) -> None:
        if self.fewshot_pairs not in PAIR_SETS:
            raise ConfigError(f"fewshot_pairs must be one of {PAIR_SETS}, got {self.fewshot_pairs!r}")
        if not 0 <= self.fewshot_split_seed < 2**32:
            raise ConfigError(f"fewshot_split_seed must be in [0, 2**32), got {self.fewshot_split_seed}")
        split = self.fewshot_split
        if split is None:
            if self.fewshot_pairs in ("val", "test"):
                raise ConfigError(f"fewshot_pairs {self.fewshot_pairs!r} needs a fewshot_split (without one every "
                                  f"label pair is a train pair)")
            return
        if self.relabel != "fewshot":
            raise ConfigError(f"fewshot_split applies to relabel 'fewshot' only, got relabel {self.relabel!r}")
        if len(split) != 3 or not all(0 <= s < float("inf") for s in split) or not sum(split) > 0:
            raise ConfigError(f"fewshot_split must be three finite shares >= 0 (train, val, test) with a positive "
                              f"sum, got {split}")
        check_split(self.fewshot_labels, tuple(split), self.fewshot_split_seed)
        if not len(self.label_pairs()):
            raise ConfigError(f"fewshot_split {tuple(split)} of {self.fewshot_labels} labels has no "
                              f"{self.fewshot_pairs} pairs")

    def label_pairs(self, device: str | torch.device = "cpu") -> Tensor | None:
        """The ``[pairs, 2]`` label pairs this spec draws from (``None``: any two distinct labels, no split)."""
        import torch
        if self.relabel != "fewshot" or self.fewshot_split is None:
            return None
        return pair_table(self.fewshot_labels, tuple(self.fewshot_split), self.fewshot_split_seed,
                          self.fewshot_pairs, str(torch.device(device)))

    @property
    def n_distractor_items(self) -> int:
        return self.burstiness if (self.distractor and self.burstiness > 0) else 0

    @property
    def n_rest(self) -> int:
        return self.context_len - self.burstiness - self.n_distractor_items

    @property
    def excluded_from_rest(self) -> int:
        """How many classes the rest must avoid (query and distractor) when ``no_support``/``unique_rest``."""
        if not (self.no_support or self.unique_rest):
            return 0
        return 1 + (1 if self.n_distractor_items else 0)

    def min_classes(self) -> int:
        """Smallest class set this spec can sample from."""
        needed = 1 + (1 if self.n_distractor_items else 0)
        if self.unique_rest:
            needed += self.n_rest
        elif self.no_support and self.n_rest:
            needed += 1
        return max(needed, 2 if self.n_distractor_items else 1)

    @property
    def label_vocab_needed(self) -> int:
        return {"fewshot": self.fewshot_labels, "01": 2}.get(self.relabel, 0)
