"""Writing a run directory: ``RunWriter``, the single writer, and ``RunWriter.opened``, the one context manager a
process writes a run under.

Every file is written to a temporary name, fsynced and renamed (``store.atomic``). A checkpoint is committed by the
manifest write that follows its files (and train.csv), so a crash at any moment leaves either the old or the new
manifest, each listing only complete files; stray temporaries and unlisted files are ignored by readers and cleaned
by the next writer. The writer holds the run's OS lock (``store.lock``) from open to close.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from coopetition.errors import ConfigError, DataError
from coopetition.faults import fault_point
from coopetition.store.atomic import atomic_write, atomic_write_text, fsync_dir
from coopetition.store.checkpoint import checkpoint_name, file_sha256, save_tensors
from coopetition.store.contain import (CHECKPOINT, CONFIG, LOCK, RESUME, SOURCE, ZOOM_EVAL_TABLE, check_folders,
                                       contained)
from coopetition.store.lock import is_locked, release_lock, take_lock
from coopetition.store.manifest import (MAX_SESSIONS, CheckpointEntry, FileEntry, Manifest, ResumeEntry, Session,
                                        SourceEntry)
from coopetition.store.reader import RunReader, committed_zoom_rows

RESUME_KEEP = 2  # resume states kept: the newest, and one to fall back to if the newest is damaged


def check_new_run_dir(path: Path, overwrite: bool) -> None:
    """Raise before anything is written if ``path`` cannot become a fresh run."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run dir {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite and not leftovers_only(path):
        raise ConfigError(f"run dir {path} exists and is not empty; pass --overwrite to replace it "
                          f"or --resume to continue it")
    if overwrite and is_locked(path):
        raise ConfigError(f"run dir {path} is locked by a running process; not overwriting it")


def leftovers_only(path: Path) -> bool:
    """Whether ``path`` holds nothing but what a run killed before writing its ``config.json`` leaves: an unheld
    ``.lock``, temporaries (``.*.tmp``) and source copies. Such a folder counts as empty: the same command that
    created it starts the run again (nothing was recorded, so nothing is lost)."""
    try:
        names = {child.name: child for child in path.iterdir()}
    except OSError:
        return False
    if not names or (path / CONFIG.name).exists() or is_locked(path):
        return False
    for name, child in names.items():
        plain = child.is_file() and not child.is_symlink()
        if not ((name == LOCK.name and plain) or (name.startswith(".") and name.endswith(".tmp") and plain)
                or (name == SOURCE.folder and child.is_dir() and not child.is_symlink())):
            return False
    return True


def _clear(path: Path) -> None:
    """Remove everything in ``path`` but its lock."""
    for child in path.iterdir():
        if child.name != LOCK.name:
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def _file(path: Path, root: Path, sha: str) -> dict[str, Any]:
    return {"file": str(path.relative_to(root)), "bytes": path.stat().st_size, "sha256": sha}


@dataclass
class RunWriter:
    """The single writer of a run directory: holds ``RUN/.lock`` and the in-memory manifest until ``close``."""

    path: Path
    manifest: Manifest = field(default_factory=Manifest)
    keep_resume: frozenset[int] = frozenset()  # steps whose resume state stays (train.resume_schedule)
    _lock_fd: int | None = field(default=None, repr=False)
    _made_dir: bool = field(default=False, repr=False)

    @classmethod
    @contextmanager
    def opened(cls, path: Path, *, resume: bool, overwrite: bool = False,
               keep_resume: frozenset[int] = frozenset()) -> Iterator["RunWriter"]:
        """Write run ``path`` under its lock: a fresh run (``create``) or an existing one (``reopen``, for resume
        and zoom). Whatever happens inside, the lock is released on the way out; a fresh run that fails or is
        interrupted (any exception, KeyboardInterrupt included) before its first checkpoint is committed is
        discarded, leaving the directory as it was found, while a committed one stays for ``--resume``."""
        writer = cls.reopen(path) if resume else cls.create(path, overwrite)
        writer.keep_resume = keep_resume
        try:
            yield writer
        except BaseException:
            if not resume and not writer.committed:  # nothing resumable yet: leave the run dir as it was found
                writer.discard()
            raise
        finally:
            writer.close()

    @classmethod
    def create(cls, path: Path, overwrite: bool) -> "RunWriter":
        check_new_run_dir(path, overwrite)
        made = not path.exists()
        leftovers = not made and leftovers_only(path)  # a run killed before its config: cleared below
        path.mkdir(parents=True, exist_ok=True)
        writer = cls(path, _made_dir=made)
        try:
            writer.lock()
        except ConfigError:
            if made:
                shutil.rmtree(path, ignore_errors=True)
            raise
        if overwrite or leftovers:  # under the lock, so a run that started meanwhile is never wiped
            _clear(path)
        return writer

    @classmethod
    def reopen(cls, path: Path) -> "RunWriter":
        """Take over an existing run (``--resume``): lock it, read its manifest, drop stray temporaries."""
        reader = RunReader.open(path)
        check_folders(path)  # nothing written or deleted below may land outside the run
        writer = cls(path, reader.manifest())
        writer.lock()
        for folder in (path, *(path / kind.folder for kind in (CHECKPOINT, RESUME))):
            for tmp in folder.glob(".*.tmp") if folder.is_dir() and not folder.is_symlink() else ():
                tmp.unlink(missing_ok=True)
        return writer

    def lock(self) -> None:
        """Take the run's OS lock or raise; the lock file keeps the holder's pid for humans."""
        self._lock_fd = take_lock(self.path)

    def close(self) -> None:
        if self._lock_fd is not None:
            release_lock(self.path, self._lock_fd)
            self._lock_fd = None

    def discard(self) -> None:
        """Undo a fresh run that failed before its first checkpoint: the directory is left as it was found (an
        empty folder the user made stays; one this run made goes)."""
        _clear(self.path)
        self.close()
        if self._made_dir:
            shutil.rmtree(self.path, ignore_errors=True)

    @property
    def committed(self) -> bool:
        return self.manifest.committed

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        atomic_write_text(self.path / name, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def save_source(self, name: str, data: bytes, extra: dict[str, Any]) -> None:
        """Keep a frozen source checkpoint's bytes as ``sources/{name}.safetensors`` and list it (committed)."""
        path = self.path / "sources" / f"{name}.safetensors"
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
        entry = SourceEntry(**_file(path, self.path, file_sha256(path)), **extra)
        kept = tuple(e for e in self.manifest.sources if e.file != entry.file)
        self._commit(replace(self.manifest, sources=(*kept, entry)))

    def write_eval_sets(self, tensors: dict, metadata: dict[str, Any]) -> None:
        path = self.path / "eval_sets.safetensors"
        sha = save_tensors(path, tensors, metadata)
        self._commit(replace(self.manifest, eval_sets=FileEntry(**_file(path, self.path, sha))))

    def save_checkpoint(self, step: int, sequences: int, weights: dict, resume: dict, metadata: dict[str, Any]) -> None:
        """Write the checkpoint and its resume state, then list both in the manifest (the commit), then drop
        resume states beyond the newest ``RESUME_KEEP`` that are not in ``keep_resume``. A crash before the commit
        only loses this checkpoint."""
        meta = {"step": step, "sequences": sequences, **metadata}
        ckpt = self.path / "checkpoints" / checkpoint_name(step)
        state = self.path / "resume" / checkpoint_name(step)
        ckpt_entry = CheckpointEntry(**_file(ckpt, self.path, save_tensors(ckpt, weights, meta)), step=step,
                                     sequences=sequences)
        state_entry = ResumeEntry(**_file(state, self.path, save_tensors(state, resume, meta)), step=step)
        checkpoints = (*(e for e in self.manifest.checkpoints if e.step != step), ckpt_entry)
        resume_entries = sorted([e for e in self.manifest.resume if e.step != step] + [state_entry],
                                key=lambda e: e.step)
        newest = {e.step for e in resume_entries[-RESUME_KEEP:]}
        kept = tuple(e for e in resume_entries if e.step in newest | self.keep_resume)
        fault_point("checkpoint_files")  # test hook (coopetition/faults.py): both files written, not yet listed
        self._commit(replace(self.manifest, checkpoints=checkpoints, resume=kept))
        self._prune_resume()

    def stage_checkpoint(self, step: int, sequences: int, data: bytes) -> tuple[Path, CheckpointEntry]:
        """Write a zoom's checkpoint bytes under a temporary name in ``checkpoints/`` (invisible to readers, removed
        by the next writer if this one dies); ``commit_zoom`` moves it into place. Returns (temporary path, the
        manifest entry it will have)."""
        final = self.path / "checkpoints" / checkpoint_name(step)
        staged = final.with_name(f".{final.name}.zoom.tmp")
        atomic_write(staged, lambda tmp: tmp.write_bytes(data))
        entry = CheckpointEntry(file=str(final.relative_to(self.path)), bytes=len(data),
                                sha256=hashlib.sha256(data).hexdigest(), step=step, sequences=sequences)
        return staged, entry

    def commit_zoom(self, staged: list[tuple[Path, CheckpointEntry]], eval_csv_rows: bytes) -> None:
        """Move staged checkpoints into place, write eval_zoom.csv with ``eval_csv_rows`` (CSV lines, no header)
        appended to its committed bytes, then list the checkpoints and the table's new size and sha256 in the
        manifest: that one write is the commit. Killed before it, the moved checkpoints are unlisted files and the
        table's extra bytes lie past its listed size, so every reader sees the run exactly as before; after it,
        exactly as after. Files the run already had keep their bytes."""
        listed = {e.step for e in self.manifest.checkpoints}
        if any(entry.step in listed for _, entry in staged):
            raise DataError(f"{self.path}: a zoomed step is already listed; not replacing a checkpoint")
        for path, entry in staged:
            os.replace(path, self.path / entry.file)
        if staged:
            fsync_dir(self.path / "checkpoints")
        zoom_eval = self.manifest.zoom_eval
        if eval_csv_rows:
            table = contained(self.path, ZOOM_EVAL_TABLE)
            old = committed_zoom_rows(self.path, zoom_eval)
            if not old.endswith(b"\n"):
                raise DataError(f"{table} does not end with a newline; not appending to it")
            data = old + eval_csv_rows
            atomic_write(table, lambda tmp: tmp.write_bytes(data))
            zoom_eval = FileEntry(ZOOM_EVAL_TABLE.name, len(data), hashlib.sha256(data).hexdigest())
        checkpoints = tuple(sorted((*self.manifest.checkpoints, *(e for _, e in staged)), key=lambda e: e.step))
        fault_point("zoom_commit")  # test hook (coopetition/faults.py): everything written but the commit
        self._commit(replace(self.manifest, checkpoints=checkpoints, zoom_eval=zoom_eval))

    def record_session(self, session: dict[str, Any]) -> None:
        """Note one process's run-time settings (threads, device; they change no result) in the manifest, committed
        with the next checkpoint; the newest ``MAX_SESSIONS`` are kept."""
        sessions = (*self.manifest.sessions, Session(**session))[-MAX_SESSIONS:]
        self._commit(replace(self.manifest, sessions=sessions))

    def restart(self) -> None:
        """Forget everything a run without a checkpoint listed, but its sessions (a restart writes it again)."""
        self._commit(Manifest(sessions=self.manifest.sessions))

    def truncate_after(self, step: int) -> None:
        """Forget everything past ``step`` (resume falls back to it): manifest rows, then unlisted resume files."""
        self._commit(replace(self.manifest, checkpoints=tuple(e for e in self.manifest.checkpoints if e.step <= step),
                             resume=tuple(e for e in self.manifest.resume if e.step <= step)))
        self._prune_resume()

    def _commit(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.write_json("manifest.json", manifest.to_json())

    def _prune_resume(self) -> None:
        listed = {e.file for e in self.manifest.resume}
        folder = self.path / RESUME.folder
        if folder.is_symlink() or not folder.is_dir():  # check_folders refused this on reopen; never follow it
            return
        for path in folder.glob("*.safetensors"):
            if str(path.relative_to(self.path)) not in listed:
                path.unlink(missing_ok=True)

    def write_table(self, name: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
        frame = pd.DataFrame(rows, columns=columns)
        atomic_write(self.path / name, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))
