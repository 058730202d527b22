"""A run directory and the rules for touching it.

Layout::

    RUN/config.json            full config, seeds, derived sizes, bank fingerprint, package versions
    RUN/manifest.json          what is complete: checkpoints, resume states and eval sets, each with its file,
                               bytes and sha256 (readers trust only this file)
    RUN/checkpoints/step_*.safetensors   weights + {step, sequences, seeds}
    RUN/resume/step_*.safetensors        Adam state, data RNG and the running loss at the last RESUME_KEEP checkpoints
    RUN/eval_sets.safetensors  the fixed evaluator sequences (integer index tables)
    RUN/sources/*.safetensors  byte copies of the frozen checkpoints the run depends on (grafts, init_from)
    RUN/eval.csv               tidy: step,sequences,evaluator,metric,value
    RUN/train.csv              tidy: step,sequences,metric,value (training loss)
    RUN/.lock                  held (flock) by the one process writing the run; holds its pid

Every file is written to a temporary name, fsynced and renamed (``atomic``). A checkpoint is committed by the
manifest write that follows its files (and train.csv), so a crash at any moment leaves either the old or the new
manifest, each listing only complete files; stray temporaries and unlisted files are ignored by readers and cleaned
by the next writer. The lock is an OS file lock: it dies with its process (even on SIGKILL), so no stale locks.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import pandas as pd

from coopetition.errors import ConfigError, DataError
from coopetition.store.atomic import atomic_write, atomic_write_text
from coopetition.store.checkpoint import CheckpointInfo, checkpoint_name, file_sha256, save_tensors, verify_file

EVAL_COLUMNS = ["step", "sequences", "evaluator", "metric", "value"]
TRAIN_COLUMNS = ["step", "sequences", "metric", "value"]
PACKAGES = ("coopetition", "torch", "transformer-lens", "numpy", "safetensors", "pandas", "plotly", "einops")
RESUME_KEEP = 2  # resume states kept: the newest, and one to fall back to if the newest is damaged
LOCK = ".lock"


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_new_run_dir(path: Path, overwrite: bool) -> None:
    """Raise before anything is written if ``path`` cannot become a fresh run."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run dir {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ConfigError(f"run dir {path} exists and is not empty; pass --overwrite to replace it "
                          f"or --resume to continue it")
    if overwrite and is_locked(path):
        raise ConfigError(f"run dir {path} is locked by a running process; not overwriting it")


def is_locked(path: Path) -> bool:
    """Whether a live process holds ``path``'s run lock (probes with a non-blocking flock)."""
    lock = path / LOCK
    if not lock.is_file():
        return False
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we may have taken
    return False


def _entry(path: Path, root: Path, sha: str, **extra: Any) -> dict[str, Any]:
    return {**extra, "file": str(path.relative_to(root)), "bytes": path.stat().st_size, "sha256": sha}


@dataclass
class RunWriter:
    """The single writer of a run directory: holds ``RUN/.lock`` and the in-memory manifest until ``close``."""

    path: Path
    manifest: dict[str, Any] = field(default_factory=lambda: {"checkpoints": [], "resume": []})
    _lock_fd: int | None = field(default=None, repr=False)
    _made_dir: bool = field(default=False, repr=False)

    @classmethod
    def create(cls, path: Path, overwrite: bool) -> "RunWriter":
        check_new_run_dir(path, overwrite)
        made = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        writer = cls(path, _made_dir=made)
        try:
            writer.lock()
        except ConfigError:
            if made:
                shutil.rmtree(path, ignore_errors=True)
            raise
        if overwrite:  # under the lock, so a run that started meanwhile is never wiped
            for child in path.iterdir():
                if child.name != LOCK:
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        return writer

    @classmethod
    def reopen(cls, path: Path) -> "RunWriter":
        """Take over an existing run (``--resume``): lock it, read its manifest, drop stray temporaries."""
        reader = RunReader.open(path)
        writer = cls(path, reader.manifest())
        writer.lock()
        for tmp in [*path.glob(".*.tmp"), *path.glob("*/.*.tmp")]:
            tmp.unlink(missing_ok=True)
        return writer

    def lock(self) -> None:
        """Take the run's OS lock or raise; the lock file keeps the holder's pid for humans."""
        lock = self.path / LOCK
        while True:
            fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = lock.read_text().strip() if lock.is_file() else "?"
                raise ConfigError(f"run dir {self.path} is being written by another process (pid {holder or '?'}, "
                                  f"{lock}); wait for it or stop it first") from None
            try:  # the file we locked may have been unlinked by a closing writer: retry on the new one
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            (self.path / LOCK).unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    def discard(self) -> None:
        """Undo a fresh run that failed before its first checkpoint: the directory is left as it was found (an
        empty folder the user made stays; one this run made goes)."""
        for child in self.path.iterdir():
            if child.name != LOCK:
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        self.close()
        if self._made_dir:
            shutil.rmtree(self.path, ignore_errors=True)

    @property
    def committed(self) -> bool:
        return bool(self.manifest["checkpoints"])

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        atomic_write_text(self.path / name, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def save_source(self, name: str, data: bytes, extra: dict[str, Any]) -> None:
        """Keep a frozen source checkpoint's bytes as ``sources/{name}.safetensors`` and list it (committed)."""
        path = self.path / "sources" / f"{name}.safetensors"
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
        entry = _entry(path, self.path, file_sha256(path), **extra)
        self.manifest["sources"] = [e for e in self.manifest.get("sources", []) if e["file"] != entry["file"]] + [entry]
        self._commit()

    def write_eval_sets(self, tensors: dict, metadata: dict[str, Any]) -> None:
        path = self.path / "eval_sets.safetensors"
        self.manifest["eval_sets"] = _entry(path, self.path, save_tensors(path, tensors, metadata))
        self._commit()

    def save_checkpoint(self, step: int, sequences: int, weights: dict, resume: dict, metadata: dict[str, Any]) -> None:
        """Write the checkpoint and its resume state, then list both in the manifest (the commit), then drop
        resume states beyond the newest ``RESUME_KEEP``. A crash before the commit only loses this checkpoint."""
        meta = {"step": step, "sequences": sequences, **metadata}
        ckpt = self.path / "checkpoints" / checkpoint_name(step)
        state = self.path / "resume" / checkpoint_name(step)
        ckpt_entry = _entry(ckpt, self.path, save_tensors(ckpt, weights, meta), step=step, sequences=sequences)
        state_entry = _entry(state, self.path, save_tensors(state, resume, meta), step=step)
        self.manifest["checkpoints"] = [e for e in self.manifest["checkpoints"] if e["step"] != step] + [ckpt_entry]
        resume_entries = [e for e in self.manifest["resume"] if e["step"] != step] + [state_entry]
        self.manifest["resume"] = sorted(resume_entries, key=lambda e: e["step"])[-RESUME_KEEP:]
        self._commit()
        self._prune_resume()

    def truncate_after(self, step: int) -> None:
        """Forget everything past ``step`` (resume falls back to it): manifest rows, then unlisted resume files."""
        self.manifest["checkpoints"] = [e for e in self.manifest["checkpoints"] if e["step"] <= step]
        self.manifest["resume"] = [e for e in self.manifest["resume"] if e["step"] <= step]
        self._commit()
        self._prune_resume()

    def _commit(self) -> None:
        self.write_json("manifest.json", self.manifest)

    def _prune_resume(self) -> None:
        listed = {e["file"] for e in self.manifest["resume"]}
        for path in (self.path / "resume").glob("*.safetensors"):
            if str(path.relative_to(self.path)) not in listed:
                path.unlink(missing_ok=True)

    def write_table(self, name: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
        frame = pd.DataFrame(rows, columns=columns)
        atomic_write(self.path / name, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


@dataclass(frozen=True)
class RunReader:
    """Read-only view of a run: its config and what its manifest lists (never a file the manifest does not)."""

    path: Path

    @classmethod
    def open(cls, path: Path) -> "RunReader":
        if not (path / "config.json").is_file():
            raise DataError(f"{path} is not a coopetition run (no config.json)")
        return cls(path)

    def config(self) -> dict[str, Any]:
        return _read_json(self.path / "config.json")

    def manifest(self) -> dict[str, Any]:
        """The manifest (empty before the first commit); a malformed one is a DataError."""
        path = self.path / "manifest.json"
        if not path.is_file():
            return {"checkpoints": [], "resume": []}
        data = _read_json(path)
        try:
            for key in ("checkpoints", "resume"):
                data.setdefault(key, [])
                for e in data[key]:
                    if not (isinstance(e["step"], int) and isinstance(e["file"], str) and isinstance(e["bytes"], int)
                            and isinstance(e["sha256"], str)):
                        raise TypeError
        except (TypeError, KeyError, AttributeError):
            raise DataError(f"malformed manifest {path}: an entry lacks step/file/bytes/sha256") from None
        return data

    def checkpoints(self, verify: bool = False) -> list[CheckpointInfo]:
        """Manifest-listed checkpoints in step order, with the size and hash to check them against; with ``verify``
        a file that does not match is a DataError naming it."""
        entries = sorted(self.manifest()["checkpoints"], key=lambda e: e["step"])
        infos = [CheckpointInfo(e["step"], e.get("sequences", 0), self.path / e["file"], e["bytes"], e["sha256"])
                 for e in entries]
        for info in infos if verify else []:
            reason = verify_file(info.path, info.bytes, info.sha256)
            if reason:
                raise DataError(f"corrupt checkpoint {info.path}: {reason}")
        return infos

    def verified_checkpoints(self) -> tuple[list[CheckpointInfo], list[tuple[CheckpointInfo, str]]]:
        """(checkpoints whose file matches the manifest, [(refused checkpoint, why)])."""
        good, bad = [], []
        for info in self.checkpoints():
            reason = verify_file(info.path, info.bytes, info.sha256)
            if reason:
                bad.append((info, reason))
            else:
                good.append(info)
        return good, bad

    def sources(self) -> list[dict[str, Any]]:
        """Manifest entries of the kept source checkpoints (``role``, ``index``, ``spec``, ``file``, ``bytes``,
        ``sha256``); empty for runs without any."""
        entries = self.manifest().get("sources", [])
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("bytes"), int)
                and isinstance(e.get("sha256"), str) and isinstance(e.get("index"), int) for e in entries):
            raise DataError(f"malformed manifest {self.path / 'manifest.json'}: a source entry lacks file/bytes/sha256")
        return entries

    def eval_sets_entry(self) -> dict[str, Any] | None:
        return self.manifest().get("eval_sets")

    def eval_table(self) -> pd.DataFrame:
        path = self.path / "eval.csv"
        if not path.is_file():
            raise DataError(f"{path} not found")
        try:
            return pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise DataError(f"cannot read {path}: {str(err).strip().splitlines()[0]}") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} is not a JSON object")
    return data
