"""Few-shot label pairs and their train/val/test split (REFERENCE 1.3, main_utils.py L153-205).

A relabelled sequence gives its query class and its distractor class two labels out of K, chosen per sequence as one
unordered pair {i, j} (i < j) in random order. IH24 holds some pairs out: the K(K-1)/2 pairs are split by shares
(``(8, 2, 0)`` of 10 pairs for K = 5) with split seed 20, and the split is redrawn until every label appears in a
train pair, so no label is unseen in training. Evaluators then score held-out *pairs* of seen labels (``fsl_val_rl``).

The arithmetic is the reference's: test and val get ``int(P * share / sum(shares))`` pairs each (floor, in floating
point as numpy computes it) and train gets the rest. The permutation is ours (``torch.randperm`` from a generator
seeded with the split seed): JAX's cannot be reproduced, so *which* pairs are held out differs from the reference's.
The reference's retry reuses the same key (so it never draws a new split); ours draws the next permutation from the
same generator, up to ``MAX_TRIES`` times.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from coopetition.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from jaxtyping import Int
    from torch import Tensor

PAIR_SETS = ("train", "val", "test", "all")
MAX_TRIES = 10  # as the reference
MAX_SPLIT_PAIRS = 10**6  # a split enumerates every pair; C25's ICL-only 12,800 labels (8e7 pairs) is never split


def all_pairs(n_labels: int) -> Int[Tensor, "pairs 2"]:
    """Every (i, j) with i < j < ``n_labels``, in lexicographic order (the reference's enumeration)."""
    import torch
    return torch.combinations(torch.arange(n_labels), 2)


def split_sizes(n_pairs: int, shares: tuple[float, float, float]) -> tuple[int, int, int]:
    """``(train, val, test)`` pair counts: val and test are floored, train takes the remainder."""
    total = sum(shares)
    n_val, n_test = int(n_pairs * shares[1] / total), int(n_pairs * shares[2] / total)
    return n_pairs - n_val - n_test, n_val, n_test


def check_split(n_labels: int, shares: tuple[float, float, float], seed: int) -> None:
    """Refuse (one-line ConfigError) a split that cannot be drawn; valid splits are cached by ``split_pairs``."""
    n_pairs = n_labels * (n_labels - 1) // 2
    if n_pairs > MAX_SPLIT_PAIRS:
        raise ConfigError(f"fewshot_split over {n_labels} labels would enumerate {n_pairs} pairs; "
                          f"at most {MAX_SPLIT_PAIRS} (about 1414 labels) can be split")
    n_train = split_sizes(n_pairs, shares)[0]
    if n_train * 2 < n_labels:
        raise ConfigError(f"fewshot_split {shares} leaves {n_train} train pairs of {n_pairs}: too few to cover "
                          f"all {n_labels} labels")
    split_pairs(n_labels, tuple(shares), seed)


@lru_cache(maxsize=16)
def split_pairs(n_labels: int, shares: tuple[float, float, float], seed: int) -> dict[str, Tensor]:
    """``{"train", "val", "test", "all"}`` -> ``[pairs, 2]`` label pairs (i < j). A pure function of its arguments,
    memoised so that the sampler does not redraw the split for every batch."""
    import torch
    pairs = all_pairs(n_labels)
    n_train, n_val, n_test = split_sizes(len(pairs), shares)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(MAX_TRIES):
        perm = pairs[torch.randperm(len(pairs), generator=gen)]
        split = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:],
                 "all": pairs}
        if split["train"].unique().numel() == n_labels:
            return split
    raise ConfigError(f"fewshot_split {shares} of {n_labels} labels (seed {seed}): no split in {MAX_TRIES} tries "
                      f"has every label in a train pair; give train a larger share")


@lru_cache(maxsize=16)
def pair_table(n_labels: int, shares: tuple[float, float, float], seed: int, which: str,
               device: str) -> Int[Tensor, "pairs 2"]:
    """One named set of ``split_pairs``, kept on ``device`` so a training step copies nothing to it."""
    return split_pairs(n_labels, shares, seed)[which].to(device)


def draw_pairs(table: Int[Tensor, "pairs 2"], n: int, gen: torch.Generator,
               device: torch.device) -> tuple[Int[Tensor, "n 1"], Int[Tensor, "n 1"]]:
    """One pair per sequence, uniformly from ``table``, in random order: ``(first, second)`` label columns."""
    import torch
    pair = table[torch.randint(len(table), (n,), generator=gen, device=device)]
    swap = torch.randint(2, (n, 1), generator=gen, device=device).bool()
    first = torch.where(swap, pair[:, 1:], pair[:, :1])
    second = torch.where(swap, pair[:, :1], pair[:, 1:])
    return first, second
