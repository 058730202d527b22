"""Writing a bank's HDF5 files: each written to a temporary name, fsynced and renamed (``store.atomic``), so a reader
or a crash never sees half a file; an existing output is replaced only with ``overwrite``."""

from __future__ import annotations

import importlib.metadata
import json
import platform
from pathlib import Path

import numpy as np

from coopetition.errors import ConfigError
from coopetition.images import layout
from coopetition.store.atomic import atomic_write


def output_paths(out_dir: Path, prefix: str) -> dict[str, Path]:
    return {name: Path(out_dir) / f"{prefix}_{name}.h5" for name in layout.FILES}


def check_outputs(paths: dict[str, Path], overwrite: bool) -> None:
    """Refuse, before any work, to replace an existing output unless asked to."""
    for path in paths.values():
        if path.parent.exists() and not path.parent.is_dir():
            raise ConfigError(f"--out {path.parent} exists and is not a directory")
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise ConfigError(f"{path} exists and is not a regular file; not replacing it")
        if path.exists() and not overwrite:
            raise ConfigError(f"{path} already exists; pass --overwrite to replace it")


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_bank_files(paths: dict[str, Path], item_arrays: dict[str, np.ndarray], layout_name: str,
                     characters: list[str], train_characters: int, attrs: dict) -> None:
    """For each file (all, reordered, norotate): every array in ``item_arrays`` (``[items, ...]``, item order)
    gathered into ``[rows, 20, ...]`` by the layout's cells, plus ``index/item`` (the item in each cell) and
    ``index/characters`` (character ``c``'s name; a dataset, since 1,623 names can pass HDF5's 64 KB attribute
    limit), with ``attrs`` as HDF5 attributes (dicts and lists as JSON text)."""
    import h5py

    n_characters = len(characters)
    all_cells = layout.cells(layout_name, n_characters)
    for name, path in paths.items():
        cells = all_cells[layout.file_rows(name, n_characters, train_characters)]

        def write(tmp: Path, cells=cells, name=name) -> None:
            with h5py.File(tmp, "w") as handle:
                for dataset, array in item_arrays.items():
                    handle.create_dataset(dataset, data=array[cells])
                handle.create_dataset("index/item", data=cells.astype(np.int64))
                handle.create_dataset("index/characters", data=characters, dtype=h5py.string_dtype())
                for key, value in {**attrs, "file": name, "layout": layout_name}.items():
                    handle.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value

        atomic_write(path, write)
