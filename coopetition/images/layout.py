"""Which (image, variant) fills each cell ``[row, exemplar]`` of the feature arrays, and which rows each file keeps.

Dataset item ``d`` is variant ``d % 8`` of image ``d // 8``; image ``k`` is drawing ``k % 20`` of character
``k // 20`` (REFERENCE 1.2). With ``C`` characters there are ``8C`` rows of 20 exemplars in either layout:

- ``reference``: the extraction script's literal rows. Its loop gathers "exemplar i" from items ``i, i+20, ...``, so
  cell ``[r, i]`` holds item ``20r + i``: row ``r`` is 2.5 drawings of character ``r // 8`` in all 8 variants.
- ``paper``: classes as the papers describe them, character ``c`` in variant ``t`` at row ``t*C + c`` (the
  transform-major order that the reordering step assumes), exemplar ``i`` = drawing ``i``.

The three files apply the script's row selections to either layout: ``all`` every row; ``reordered`` the rows
``c + C*t`` for ``t < 8, c < train`` (t-major), then the same for ``c >= train`` (``train`` = 1600 in the script);
``norotate`` the first ``C`` rows.
"""

from __future__ import annotations

import numpy as np

from coopetition.errors import ConfigError
from coopetition.images.preprocess import VARIANTS
from coopetition.images.tree import DRAWINGS

LAYOUTS = ("reference", "paper")
FILES = ("all", "reordered", "norotate")
REFERENCE_TRAIN_CHARACTERS = 1600


def cells(layout: str, n_characters: int) -> np.ndarray:
    """``[8C, 20]`` int64: the dataset item in each cell of the ``all`` file."""
    rows = np.arange(VARIANTS * n_characters)[:, None]
    exemplar = np.arange(DRAWINGS)[None, :]
    if layout == "reference":
        return DRAWINGS * rows + exemplar
    if layout == "paper":
        variant, character = rows // n_characters, rows % n_characters
        return VARIANTS * (DRAWINGS * character + exemplar) + variant
    raise ConfigError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def file_rows(name: str, n_characters: int, train_characters: int) -> np.ndarray:
    """Rows of the ``all`` array that file ``name`` keeps, in its order."""
    if not 0 < train_characters <= n_characters:
        raise ConfigError(f"train characters must be in [1, {n_characters}], got {train_characters}")
    if name == "all":
        return np.arange(VARIANTS * n_characters)
    if name == "norotate":
        return np.arange(n_characters)
    if name == "reordered":
        shift = n_characters * np.arange(VARIANTS)[:, None]
        train = (np.arange(train_characters)[None, :] + shift).reshape(-1)
        test = (np.arange(train_characters, n_characters)[None, :] + shift).reshape(-1)
        return np.concatenate([train, test])
    raise ConfigError(f"file must be one of {FILES}, got {name!r}")


def describe(item: int) -> tuple[int, int, int]:
    """``(character, drawing, variant)`` of dataset item ``item``."""
    image, variant = divmod(item, VARIANTS)
    character, drawing = divmod(image, DRAWINGS)
    return character, drawing, variant
