"""A run directory and the rules for touching it.

Layout::

    RUN/config.json            full config, seeds, derived sizes, bank fingerprint, package versions
    RUN/manifest.json          the complete checkpoints: step, sequences, file, bytes, sha256 (readers trust only this)
    RUN/checkpoints/step_*.safetensors
    RUN/resume.safetensors     optimizer state + RNG streams at the latest checkpoint
    RUN/eval_sets.safetensors  the fixed evaluator sequences (integer index tables)
    RUN/eval.csv               tidy: step,sequences,evaluator,metric,value
    RUN/train.csv              tidy: step,sequences,metric,value (training loss, grad norm)

A new run refuses a non-empty directory unless told to overwrite; a lock file keeps two writers apart.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import pandas as pd

from coopetition.errors import ConfigError, DataError
from coopetition.store.atomic import atomic_write, atomic_write_text
from coopetition.store.checkpoint import CheckpointInfo, checkpoint_name, file_sha256, save_tensors

EVAL_COLUMNS = ["step", "sequences", "evaluator", "metric", "value"]
TRAIN_COLUMNS = ["step", "sequences", "metric", "value"]
PACKAGES = ("coopetition", "torch", "transformer-lens", "numpy", "safetensors", "pandas", "plotly", "einops")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def check_new_run_dir(path: Path, overwrite: bool) -> None:
    """Raise before anything is written if ``path`` cannot become a fresh run."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run dir {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ConfigError(f"run dir {path} exists and is not empty; pass --overwrite to replace it "
                          f"or --resume to continue it")
    if overwrite and (path / ".lock").exists() and _lock_is_live(path / ".lock"):
        raise ConfigError(f"run dir {path} is locked by a running process; not overwriting it")


def _lock_is_live(lock: Path) -> bool:
    try:
        pid = int(lock.read_text().strip() or 0)
    except (OSError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RunWriter:
    """The single writer of a run directory (holds ``RUN/.lock`` until ``close``)."""

    path: Path

    @classmethod
    def create(cls, path: Path, overwrite: bool) -> "RunWriter":
        check_new_run_dir(path, overwrite)
        if path.is_dir() and overwrite:
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        writer = cls(path)
        writer.lock()
        return writer

    def lock(self) -> None:
        lock = self.path / ".lock"
        if lock.exists() and not _lock_is_live(lock):
            lock.unlink()
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            raise ConfigError(f"run dir {self.path} is locked by another process ({lock})") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))

    def close(self) -> None:
        (self.path / ".lock").unlink(missing_ok=True)

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        atomic_write_text(self.path / name, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def save_checkpoint(self, step: int, sequences: int, tensors: dict, metadata: dict[str, Any],
                        manifest: list[dict[str, Any]]) -> None:
        """Write the checkpoint, then list it in the manifest (so a crash between the two only loses it)."""
        relative = Path("checkpoints") / checkpoint_name(step)
        sha = save_tensors(self.path / relative, tensors, {"step": step, "sequences": sequences, **metadata})
        entry = {"step": step, "sequences": sequences, "file": str(relative),
                 "bytes": (self.path / relative).stat().st_size, "sha256": sha}
        manifest[:] = [e for e in manifest if e["step"] != step] + [entry]
        self.write_json("manifest.json", {"checkpoints": manifest})

    def write_table(self, name: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
        frame = pd.DataFrame(rows, columns=columns)
        atomic_write(self.path / name, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunReader:
    """Read-only view of a run: its config and the checkpoints its manifest lists."""

    path: Path

    @classmethod
    def open(cls, path: Path) -> "RunReader":
        if not (path / "config.json").is_file():
            raise DataError(f"{path} is not a coopetition run (no config.json)")
        return cls(path)

    def config(self) -> dict[str, Any]:
        return json.loads((self.path / "config.json").read_text())

    def manifest(self) -> list[dict[str, Any]]:
        manifest = self.path / "manifest.json"
        if not manifest.is_file():
            return []
        return json.loads(manifest.read_text())["checkpoints"]

    def checkpoints(self, verify: bool = False) -> list[CheckpointInfo]:
        """Checkpoints in step order; with ``verify`` a file whose size or sha256 differs is a DataError."""
        infos = []
        for entry in sorted(self.manifest(), key=lambda e: e["step"]):
            path = self.path / entry["file"]
            if verify and (not path.is_file() or path.stat().st_size != entry["bytes"]
                           or file_sha256(path) != entry["sha256"]):
                raise DataError(f"checkpoint {path} is missing or does not match its manifest hash")
            infos.append(CheckpointInfo(entry["step"], entry["sequences"], path))
        return infos

    def eval_table(self) -> pd.DataFrame:
        path = self.path / "eval.csv"
        if not path.is_file():
            raise DataError(f"{path} not found")
        return pd.read_csv(path)
