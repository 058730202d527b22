"""Omniglot as torchvision lays it out on disk, read without torchvision.

``ROOT/omniglot-py/images_background/<alphabet>/<character>/*.png`` and the same under ``images_evaluation``.
The reference (``OmniglotFull``) concatenates torchvision's background dataset and its evaluation dataset; each lists
alphabets, characters and drawings with ``os.listdir`` **unsorted** (torchvision ``datasets/utils.py``
``list_dir``/``list_files``), so the reference's character order is whatever its file system returned. We sort
(``order="sorted"``, the same on every machine) unless ``order="listdir"`` asks for this machine's
``os.listdir`` order, torchvision's literal behaviour.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from coopetition.errors import ConfigError, DataError

FOLDER = "omniglot-py"
SPLITS = ("images_background", "images_evaluation")
DRAWINGS = 20  # every Omniglot character has 20 drawings; the reference's 20-per-row layout relies on it
ORDERS = ("sorted", "listdir")


@dataclass(frozen=True)
class Character:
    split: str
    alphabet: str
    name: str
    files: tuple[Path, ...]  # the drawings, in dataset order

    @property
    def label(self) -> str:
        return f"{self.split}/{self.alphabet}/{self.name}"


@dataclass(frozen=True)
class OmniglotTree:
    """Characters in the reference's dataset order: image ``k`` is ``characters[k // 20].files[k % 20]``."""

    root: Path
    order: str
    characters: tuple[Character, ...]

    @property
    def n_images(self) -> int:
        return len(self.characters) * DRAWINGS

    def image_path(self, index: int) -> Path:
        return self.characters[index // DRAWINGS].files[index % DRAWINGS]

    def fingerprint(self) -> str:
        """sha256 of the ordered list of relative paths and file sizes: names which images, in which order."""
        digest = hashlib.sha256()
        for character in self.characters:
            for path in character.files:
                digest.update(f"{path.relative_to(self.root)}\0{path.stat().st_size}\n".encode())
        return digest.hexdigest()


def find_root(root: Path) -> Path:
    """The ``omniglot-py`` folder given either it or the folder that holds it (torchvision's ``root``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Omniglot root {root} is not a directory")
    for candidate in (root / FOLDER, root):
        if all((candidate / split).is_dir() for split in SPLITS):
            return candidate
    raise DataError(f"{root} holds no {FOLDER}/{SPLITS[0]} and {FOLDER}/{SPLITS[1]} folders (unzip Omniglot's "
                    f"images_background.zip and images_evaluation.zip there, as torchvision does)")


def read_tree(root: Path, order: str = "sorted") -> OmniglotTree:
    """Every character of both splits, background first, each with exactly 20 ``.png`` drawings."""
    if order not in ORDERS:
        raise ConfigError(f"order must be one of {ORDERS}, got {order!r}")
    base = find_root(root)
    characters = []
    for split in SPLITS:
        for alphabet in _listing(base / split, order, dirs=True):
            for name in _listing(base / split / alphabet, order, dirs=True):
                folder = base / split / alphabet / name
                files = tuple(folder / f for f in _listing(folder, order, dirs=False))
                if len(files) != DRAWINGS:
                    raise DataError(f"{folder} has {len(files)} .png drawings; every Omniglot character has "
                                    f"{DRAWINGS}")
                characters.append(Character(split, alphabet, name, files))
    if not characters:
        raise DataError(f"{base} holds no characters")
    return OmniglotTree(base, order, tuple(characters))


def _listing(folder: Path, order: str, dirs: bool) -> list[str]:
    """torchvision's ``list_dir`` (folders) or ``list_files(..., ".png")``, sorted unless ``order="listdir"``."""
    names = [n for n in os.listdir(folder)
             if (os.path.isdir(folder / n) if dirs else (os.path.isfile(folder / n) and n.endswith(".png")))]
    return names if order == "listdir" else sorted(names)
