"""Resumable extraction: per-item outputs computed in fixed chunks, each chunk saved atomically in a work folder
beside the output, so an interrupted build restarts where it stopped and never mixes inputs.

The folder holds ``key.json`` (what is being computed: image list, weights, sizes) and ``chunk-NNNNNN.npz``. A
folder whose key differs belongs to another build: it is discarded with a warning, never reused.
"""

from __future__ import annotations

import io
import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from coopetition.errors import CoopetitionWarning
from coopetition.store.atomic import atomic_write, atomic_write_text


class ChunkStore:
    def __init__(self, folder: Path, key: dict) -> None:
        self.folder = Path(folder)
        text = json.dumps(key, sort_keys=True)
        key_file = self.folder / "key.json"
        if self.folder.exists():
            try:
                same = key_file.read_text() == text
            except OSError:
                same = False
            if not same:
                warnings.warn(f"discarding {self.folder}: a partial build of other inputs", CoopetitionWarning)
                shutil.rmtree(self.folder)
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            atomic_write_text(key_file, text)

    def path(self, index: int) -> Path:
        return self.folder / f"chunk-{index:06d}.npz"

    def load(self, index: int) -> dict[str, np.ndarray] | None:
        """A finished chunk, or None (absent, or unreadable: recomputed)."""
        path = self.path(index)
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError):
            return None

    def save(self, index: int, arrays: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write(self.path(index), lambda tmp: tmp.write_bytes(buffer.getvalue()))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def extract_items(n_items: int, compute: Callable[[list[int]], dict[str, np.ndarray]], store: ChunkStore,
                  chunk_items: int, batch_size: int, progress: bool = True, what: str = "images",
                  stop_after: int | None = None) -> dict[str, np.ndarray]:
    """``compute(indices)`` for every item ``0..n_items-1`` in batches, saved per chunk of ``chunk_items``; returns
    each output concatenated in item order. ``stop_after`` chunks (tests) raises ``KeyboardInterrupt`` there, as a
    user's Ctrl-C would."""
    n_chunks = -(-n_items // chunk_items)
    parts: list[dict[str, np.ndarray]] = []
    bar = tqdm(total=n_items, disable=not progress, unit=what[:-1] if what.endswith("s") else what, desc=what)
    computed = 0
    try:
        for chunk in range(n_chunks):
            lo, hi = chunk * chunk_items, min(n_items, (chunk + 1) * chunk_items)
            arrays = store.load(chunk)
            if arrays is None or any(len(a) != hi - lo for a in arrays.values()):
                if stop_after is not None and computed >= stop_after:
                    raise KeyboardInterrupt
                outputs = []
                for start in range(lo, hi, batch_size):
                    indices = list(range(start, min(hi, start + batch_size)))
                    outputs.append(compute(indices))
                    bar.update(len(indices))
                arrays = {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}
                store.save(chunk, arrays)
                computed += 1
            else:
                bar.update(hi - lo)
            parts.append(arrays)
    finally:
        bar.close()
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

