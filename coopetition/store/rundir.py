"""A run directory and the rules for touching it.

Layout::

    RUN/config.json            full config, seeds, derived sizes, bank fingerprint, package versions
    RUN/manifest.json          what is complete: checkpoints, resume states and eval sets, each with its file,
                               bytes and sha256 (readers trust only this file)
    RUN/checkpoints/step_*.safetensors   weights + {step, sequences, seeds}
    RUN/resume/step_*.safetensors        Adam state, data RNG and the running loss at the last RESUME_KEEP checkpoints
                                         and at the steps of ``train.resume_schedule`` (where a zoom re-trains from)
    RUN/eval_sets.safetensors  the fixed evaluator sequences (integer index tables)
    RUN/sources/*.safetensors  byte copies of the frozen checkpoints the run depends on (grafts, init_from)
    RUN/eval.csv               tidy: step,sequences,evaluator,metric,value
    RUN/train.csv              tidy: step,sequences,metric,value (training loss)
    RUN/eval_zoom.csv          eval rows added later by ``coopetition zoom`` (eval.csv's columns; readers merge it)
    RUN/.lock                  held (flock) by the one process writing the run; holds its pid

Every file is written to a temporary name, fsynced and renamed (``atomic``). A checkpoint is committed by the
manifest write that follows its files (and train.csv), so a crash at any moment leaves either the old or the new
manifest, each listing only complete files; stray temporaries and unlisted files are ignored by readers and cleaned
by the next writer. The lock is an OS file lock: it dies with its process (even on SIGKILL), so no stale locks.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import pandas as pd

from coopetition.bounded import MAX_TENSOR_FILE, TensorLayout, read_bytes, read_json
from coopetition.errors import ConfigError, DataError
from coopetition.faults import fault_point
from coopetition.store.atomic import atomic_write, atomic_write_text, fsync_dir
from coopetition.store.checkpoint import CheckpointInfo, checkpoint_name, file_sha256, load_tensors, save_tensors, verify_file
from coopetition.store.contain import (CHECKPOINT, CONFIG, EVAL_SETS, EVAL_TABLE, LOCK, MANIFEST, RESUME, SOURCE,
                                       TRAIN_TABLE, ZOOM_EVAL_TABLE, RunFile, check_folders, contained)
from coopetition.tables import FLOAT, INT, STR, Schema, read_table

EVAL_SCHEMA = {"step": INT, "sequences": INT, "evaluator": STR, "metric": STR, "value": FLOAT}
TRAIN_SCHEMA = {"step": INT, "sequences": INT, "metric": STR, "value": FLOAT}
EVAL_COLUMNS = list(EVAL_SCHEMA)
TRAIN_COLUMNS = list(TRAIN_SCHEMA)
PACKAGES = ("coopetition", "torch", "transformer-lens", "numpy", "safetensors", "pandas", "plotly", "einops")
RESUME_KEEP = 2  # resume states kept: the newest, and one to fall back to if the newest is damaged
MAX_CONFIG_BYTES = 1 << 20  # config.json is a few KB
MAX_MANIFEST_BYTES = 256 << 20  # ~200 bytes per entry: a million checkpoints (the schedule cap) fit
MAX_TABLE_BYTES = 256 << 20  # eval.csv / train.csv
MAX_STEPS = 10**10  # train.MAX_STEPS (store sits below train)
MAX_SESSIONS = 64  # run-time settings of the newest processes that wrote the run (manifest "sessions")
SESSION_FIELDS = {"started": str, "from_step": int, "threads": (int, type(None)), "device": str, "how": str}


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


def is_locked(path: Path) -> bool:
    """Whether a live process holds ``path``'s run lock (probes with a non-blocking flock)."""
    try:
        lock = contained(path, LOCK)
        fd = os.open(lock, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)  # a planted FIFO or symlink never blocks
    except (DataError, OSError):
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
    keep_resume: frozenset[int] = frozenset()  # steps whose resume state stays (train.resume_schedule)
    _lock_fd: int | None = field(default=None, repr=False)
    _made_dir: bool = field(default=False, repr=False)

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
            for child in path.iterdir():
                if child.name != LOCK.name:
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
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
        lock = self.path / LOCK.name
        while True:
            try:  # never through a symlink: a planted .lock -> FILE would be truncated below
                fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
            except OSError as err:
                raise DataError(f"cannot take the run lock {lock}: {err.strerror} (a symlink or not a file?)") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise DataError(f"run lock {lock} is not a regular file")
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
            (self.path / LOCK.name).unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    def discard(self) -> None:
        """Undo a fresh run that failed before its first checkpoint: the directory is left as it was found (an
        empty folder the user made stays; one this run made goes)."""
        for child in self.path.iterdir():
            if child.name != LOCK.name:
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
        resume states beyond the newest ``RESUME_KEEP`` that are not in ``keep_resume``. A crash before the commit
        only loses this checkpoint."""
        meta = {"step": step, "sequences": sequences, **metadata}
        ckpt = self.path / "checkpoints" / checkpoint_name(step)
        state = self.path / "resume" / checkpoint_name(step)
        ckpt_entry = _entry(ckpt, self.path, save_tensors(ckpt, weights, meta), step=step, sequences=sequences)
        state_entry = _entry(state, self.path, save_tensors(state, resume, meta), step=step)
        self.manifest["checkpoints"] = [e for e in self.manifest["checkpoints"] if e["step"] != step] + [ckpt_entry]
        resume_entries = [e for e in self.manifest["resume"] if e["step"] != step] + [state_entry]
        newest = {e["step"] for e in sorted(resume_entries, key=lambda e: e["step"])[-RESUME_KEEP:]}
        self.manifest["resume"] = sorted((e for e in resume_entries if e["step"] in newest | self.keep_resume),
                                         key=lambda e: e["step"])
        fault_point("checkpoint_files")  # test hook (coopetition/faults.py): both files written, not yet listed
        self._commit()
        self._prune_resume()

    def stage_checkpoint(self, step: int, sequences: int, data: bytes) -> tuple[Path, dict[str, Any]]:
        """Write a zoom's checkpoint bytes under a temporary name in ``checkpoints/`` (invisible to readers, removed
        by the next writer if this one dies); ``commit_zoom`` moves it into place. Returns (temporary path, the
        manifest entry it will have)."""
        final = self.path / "checkpoints" / checkpoint_name(step)
        staged = final.with_name(f".{final.name}.zoom.tmp")
        atomic_write(staged, lambda tmp: tmp.write_bytes(data))
        entry = {"step": step, "sequences": sequences, "file": str(final.relative_to(self.path)),
                 "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        return staged, entry

    def commit_zoom(self, staged: list[tuple[Path, dict[str, Any]]], eval_csv_rows: bytes) -> None:
        """Move staged checkpoints into place, write eval_zoom.csv with ``eval_csv_rows`` (CSV lines, no header)
        appended to its committed bytes, then list the checkpoints and the table's new size and sha256 in the
        manifest: that one write is the commit. Killed before it, the moved checkpoints are unlisted files and the
        table's extra bytes lie past its listed size, so every reader sees the run exactly as before; after it,
        exactly as after. Files the run already had keep their bytes."""
        listed = {e["step"] for e in self.manifest["checkpoints"]}
        if any(entry["step"] in listed for _, entry in staged):
            raise DataError(f"{self.path}: a zoomed step is already listed; not replacing a checkpoint")
        for path, entry in staged:
            os.replace(path, self.path / entry["file"])
        if staged:
            fsync_dir(self.path / "checkpoints")
        if eval_csv_rows:
            table = contained(self.path, ZOOM_EVAL_TABLE)
            old = committed_zoom_rows(self.path, self.manifest.get("zoom_eval"))
            if not old.endswith(b"\n"):
                raise DataError(f"{table} does not end with a newline; not appending to it")
            data = old + eval_csv_rows
            atomic_write(table, lambda tmp: tmp.write_bytes(data))
            self.manifest["zoom_eval"] = {"file": ZOOM_EVAL_TABLE.name, "bytes": len(data),
                                          "sha256": hashlib.sha256(data).hexdigest()}
        self.manifest["checkpoints"] = sorted(self.manifest["checkpoints"] + [e for _, e in staged],
                                              key=lambda e: e["step"])
        fault_point("zoom_commit")  # test hook (coopetition/faults.py): everything written but the commit
        self._commit()

    def record_session(self, session: dict[str, Any]) -> None:
        """Note one process's run-time settings (threads, device; they change no result) in the manifest, committed
        with the next checkpoint; the newest ``MAX_SESSIONS`` are kept."""
        self.manifest["sessions"] = (self.manifest.get("sessions", []) + [session])[-MAX_SESSIONS:]
        self._commit()

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
        folder = self.path / RESUME.folder
        if folder.is_symlink() or not folder.is_dir():  # check_folders refused this on reopen; never follow it
            return
        for path in folder.glob("*.safetensors"):
            if str(path.relative_to(self.path)) not in listed:
                path.unlink(missing_ok=True)

    def write_table(self, name: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
        frame = pd.DataFrame(rows, columns=columns)
        atomic_write(self.path / name, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


@dataclass(frozen=True)
class ResumePoint:
    """One listed resume state and the checkpoint of its step; ``problem`` says why it cannot be used as listed."""

    step: int
    state: CheckpointInfo | None
    checkpoint: CheckpointInfo | None
    problem: str | None = None


@dataclass(frozen=True)
class RunReader:
    """Read-only view of a run: its config and what its manifest lists (never a file the manifest does not).

    The run is untrusted input: every file is found through ``contain.contained`` (inside the run, the expected
    folder and name) and read through ``coopetition.bounded`` (regular files, size and depth caps checked before
    allocating); a file that breaks a rule is a one-line DataError naming it, or, for one checkpoint among many,
    skipped and reported (``verified_checkpoints``).
    """

    path: Path

    @classmethod
    def open(cls, path: Path) -> "RunReader":
        if not contained(path, CONFIG).is_file():
            raise DataError(f"{path} is not a coopetition run (no config.json)")
        return cls(path)

    def config(self) -> dict[str, Any]:
        """config.json as written (bounded in size and depth; see ``run_config`` for the checked config)."""
        return read_json(contained(self.path, CONFIG), "config", MAX_CONFIG_BYTES)

    def run_config(self):
        """The run's ``RunConfig``, re-validated as if it were new (an edited config.json is refused here, before
        anything is built), with the run-level caps (``check_run_config``) on top."""
        from coopetition.config import config_from_dict  # the config imports the whole library: import late

        meta = self.config()
        where = contained(self.path, CONFIG)
        if not isinstance(meta.get("config"), dict):
            raise DataError(f"{where} has no 'config' section")
        try:
            return config_from_dict(meta["config"])
        except ConfigError as err:
            raise DataError(f"{where}: {err}") from None

    def derived(self) -> dict[str, Any]:
        """config.json's ``derived`` record (sizes, bank fingerprint and shape), type-checked."""
        where = contained(self.path, CONFIG)
        derived = self.config().get("derived")
        if not isinstance(derived, dict):
            raise DataError(f"{where} has no 'derived' section")
        for key in ("input_dim", "n_labels", "n_outputs", "n_parameters"):
            if key in derived and not (type(derived[key]) is int and 1 <= derived[key] <= 2**40):
                raise DataError(f"{where}: derived.{key} must be a positive int, got {_short(derived[key])}")
        if not (isinstance(derived.get("bank_fingerprint"), str)
                and re.fullmatch(r"[0-9a-f]{16}", derived["bank_fingerprint"])):
            raise DataError(f"{where}: derived.bank_fingerprint must be 16 hex digits, "
                            f"got {_short(derived.get('bank_fingerprint'))}")
        shape = derived.get("bank_shape")
        if shape is not None and not (isinstance(shape, list) and len(shape) == 3
                                      and all(type(d) is int and 1 <= d <= 2**40 for d in shape)):
            raise DataError(f"{where}: derived.bank_shape must be three positive ints, got {_short(shape)}")
        return derived

    def manifest(self) -> dict[str, Any]:
        """The manifest (empty before the first commit); a malformed one is a DataError naming what is wrong."""
        path = contained(self.path, MANIFEST)
        if not path.exists():
            return {"checkpoints": [], "resume": []}
        data = read_json(path, "manifest", MAX_MANIFEST_BYTES, depth=4)
        return _checked_manifest(data, path)

    def checkpoints(self, verify: bool = False) -> list[CheckpointInfo]:
        """Manifest-listed checkpoints in step order, with the size and hash to check them against; an entry naming
        a file it may not (``contained``), or with ``verify`` a file that does not match, is a DataError naming it."""
        good, refused = self.listed_checkpoints()
        if refused:
            info, reason = refused[0]
            raise DataError(f"checkpoint step {info.step}: {reason}")
        for info in good if verify else []:
            reason = verify_file(info.path, info.bytes, info.sha256)
            if reason:
                raise DataError(f"corrupt checkpoint {info.path}: {reason}")
        return good

    def listed_checkpoints(self) -> tuple[list[CheckpointInfo], list[tuple[CheckpointInfo, str]]]:
        """(checkpoints whose entry names a file inside the run, [(refused entry, why)]), in step order."""
        good, refused = [], []
        for e in sorted(self.manifest()["checkpoints"], key=lambda e: e["step"]):
            try:
                path = contained(self.path, CHECKPOINT, e["file"], e["step"])
            except DataError as err:
                refused.append((CheckpointInfo(e["step"], e["sequences"], Path(self.path, e["file"]), e["bytes"],
                                               e["sha256"]), str(err)))
                continue
            good.append(CheckpointInfo(e["step"], e["sequences"], path, e["bytes"], e["sha256"]))
        return good, refused

    def verified_checkpoints(self, max_bytes: int | None = None,
                             ) -> tuple[list[CheckpointInfo], list[tuple[CheckpointInfo, str]]]:
        """(checkpoints whose file matches the manifest, [(refused checkpoint, why)]): an entry outside the run, a
        missing, damaged, non-regular or (with ``max_bytes``) oversized file is refused, never opened beyond its
        check."""
        good, bad = [], []
        listed, refused = self.listed_checkpoints()
        for info in listed:
            reason = verify_file(info.path, info.bytes, info.sha256, max_bytes=max_bytes)
            if reason:
                bad.append((info, reason))
            else:
                good.append(info)
        return good, sorted(bad + refused, key=lambda pair: pair[0].step)

    def resume_points(self) -> list[ResumePoint]:
        """Listed resume states, newest first, each with its step's checkpoint (files not opened yet)."""
        manifest = self.manifest()
        checkpoints = {e["step"]: e for e in manifest["checkpoints"]}
        points = []
        for e in sorted(manifest["resume"], key=lambda e: e["step"], reverse=True):
            step, ckpt = e["step"], checkpoints.get(e["step"])
            try:
                state = CheckpointInfo(step, 0, contained(self.path, RESUME, e["file"], step), e["bytes"], e["sha256"])
                if ckpt is None:
                    raise DataError(f"resume state {state.path} has no listed checkpoint")
                info = CheckpointInfo(step, ckpt["sequences"], contained(self.path, CHECKPOINT, ckpt["file"], step),
                                      ckpt["bytes"], ckpt["sha256"])
            except DataError as err:
                points.append(ResumePoint(step, None, None, str(err)))
                continue
            points.append(ResumePoint(step, state, info))
        return points

    def sources(self) -> list[dict[str, Any]]:
        """Manifest entries of the kept source checkpoints (``role``, ``index``, ``spec``, ``step``, ``file``,
        ``bytes``, ``sha256``) plus ``path``, the contained file to read; empty for runs without any."""
        return [{**e, "path": contained(self.path, SOURCE, e["file"])} for e in self.manifest().get("sources", [])]

    def eval_sets_entry(self) -> dict[str, Any] | None:
        return self.manifest().get("eval_sets")

    def eval_sets(self, layout: TensorLayout) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(tensors, metadata)`` of the run's eval sets, checked against the manifest's size and sha256 and
        ``layout`` before their data is read; unlisted eval sets are refused."""
        entry = self.eval_sets_entry()
        if entry is None:
            raise DataError(f"{self.path} lists no eval sets in its manifest")
        path = contained(self.path, EVAL_SETS, entry["file"])
        return load_tensors(path, "cpu", entry["bytes"], entry["sha256"], layout, what="eval sets")

    def eval_table(self, zoomed: bool = True) -> pd.DataFrame:
        """eval.csv, with ``zoomed`` the rows ``coopetition zoom`` added (eval_zoom.csv) merged in step order; a zoom
        row never replaces one of eval.csv (it would hold the same value: the zoom reproduced the run)."""
        frame = self._table(EVAL_TABLE, EVAL_SCHEMA)
        extra = self.zoom_eval_table() if zoomed else None
        if extra is None:
            return frame
        merged = pd.concat([frame, extra], ignore_index=True)
        merged = merged.drop_duplicates(["step", "evaluator", "metric"], keep="first")
        return merged.sort_values("step", kind="stable").reset_index(drop=True)

    def zoom_eval_table(self) -> pd.DataFrame | None:
        """The rows zooms added: the first ``bytes`` of eval_zoom.csv that the manifest lists with their sha256
        (None when the run was never zoomed). Bytes past them are a killed zoom's uncommitted rows, not read."""
        entry = self.manifest().get("zoom_eval")
        if entry is None:
            return None
        data = committed_zoom_rows(self.path, entry)
        return read_table(contained(self.path, ZOOM_EVAL_TABLE, entry["file"]), EVAL_SCHEMA, ZOOM_EVAL_TABLE.name,
                          data=data)

    def train_table(self) -> pd.DataFrame:
        return self._table(TRAIN_TABLE, TRAIN_SCHEMA)

    def _table(self, kind: RunFile, schema: Schema) -> pd.DataFrame:
        """A tidy table with exactly ``schema``'s columns and dtypes (``coopetition.tables``; a header-only table is
        an empty frame of those dtypes), read bounded in size."""
        path = contained(self.path, kind)
        if not path.exists():
            raise DataError(f"{Path(self.path, kind.name)} not found")
        return read_table(path, schema, kind.name, MAX_TABLE_BYTES)


def committed_zoom_rows(run: Path, entry: dict[str, Any] | None) -> bytes:
    """The committed prefix of ``run``'s eval_zoom.csv (``entry``: the manifest's ``zoom_eval`` record), checked
    against its sha256; just the header when nothing was committed."""
    if entry is None:
        return (",".join(EVAL_COLUMNS) + "\n").encode()
    path = contained(run, ZOOM_EVAL_TABLE, entry["file"])
    data = read_bytes(path, ZOOM_EVAL_TABLE.name, MAX_TABLE_BYTES)
    if len(data) < entry["bytes"] or hashlib.sha256(data[:entry["bytes"]]).hexdigest() != entry["sha256"]:
        raise DataError(f"corrupt {ZOOM_EVAL_TABLE.name} {path}: its first {entry['bytes']} bytes are not the "
                        f"ones the manifest recorded")
    return data[:entry["bytes"]]


def _checked_manifest(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """The manifest if every entry has the writer's shape: int step/sequences/bytes in range, a str file, a
    64-hex-digit sha256, one entry per step; a DataError naming the first problem otherwise."""

    def bad(why: str) -> DataError:
        return DataError(f"malformed manifest {path}: {why}")

    unknown = set(data) - {"checkpoints", "resume", "eval_sets", "sources", "zoom_eval", "sessions"}
    if unknown:
        raise bad(f"unknown key(s) {sorted(map(str, unknown))[:3]}")
    out = {"checkpoints": data.get("checkpoints", []), "resume": data.get("resume", [])}
    for key in ("checkpoints", "resume"):
        if not isinstance(out[key], list):
            raise bad(f"{key} is not a list")
        for e in out[key]:
            fields = {"step", "file", "bytes", "sha256"} | ({"sequences"} if key == "checkpoints" else set())
            if not (isinstance(e, dict) and set(e) == fields):
                raise bad("an entry lacks step/file/bytes/sha256")
            if not (_int(e["step"], MAX_STEPS) and isinstance(e["file"], str) and _file_fields(e)
                    and (key == "resume" or _int(e["sequences"], 2**63 - 1))):
                raise bad(f"{key} entry {_short(e)} has a field of the wrong type or out of range")
        steps = [e["step"] for e in out[key]]
        if len(set(steps)) != len(steps):
            raise bad(f"{key} lists a step twice")
    if "eval_sets" in data:
        e = data["eval_sets"]
        if not (isinstance(e, dict) and set(e) == {"file", "bytes", "sha256"} and isinstance(e["file"], str)
                and _file_fields(e)):
            raise bad("eval_sets is not {file, bytes, sha256}")
        out["eval_sets"] = e
    if "zoom_eval" in data:
        e = data["zoom_eval"]
        if not (isinstance(e, dict) and set(e) == {"file", "bytes", "sha256"} and isinstance(e["file"], str)
                and _file_fields(e) and e["bytes"] <= MAX_TABLE_BYTES):
            raise bad("zoom_eval is not {file, bytes, sha256}")
        out["zoom_eval"] = e
    if "sessions" in data:
        sessions = data["sessions"]
        if not (isinstance(sessions, list) and len(sessions) <= MAX_SESSIONS and all(
                isinstance(e, dict) and set(e) == set(SESSION_FIELDS)
                and all(isinstance(e[k], t) and not isinstance(e[k], bool) and len(str(e[k])) < 64
                        for k, t in SESSION_FIELDS.items()) for e in sessions)):
            raise bad(f"sessions is not a list of {{{', '.join(SESSION_FIELDS)}}}")
        out["sessions"] = sessions
    if "sources" in data:
        if not isinstance(data["sources"], list):
            raise bad("sources is not a list")
        for e in data["sources"]:
            if not (isinstance(e, dict) and set(e) == SOURCE_FIELDS and isinstance(e["file"], str)
                    and _file_fields(e) and e["role"] in ("graft", "init_from") and _int(e["index"], 1 << 16)
                    and _int(e["step"], MAX_STEPS) and isinstance(e["spec"], str) and len(e["spec"]) < 4096
                    and isinstance(e["sha256_of_source"], str)):
                raise bad(f"sources entry {_short(e)} is not {{{', '.join(sorted(SOURCE_FIELDS))}}}")
        out["sources"] = data["sources"]
    return out


SOURCE_FIELDS = {"role", "index", "spec", "step", "sha256_of_source", "file", "bytes", "sha256"}


def _int(value: Any, high: int) -> bool:
    return type(value) is int and 0 <= value <= high


def _file_fields(entry: dict[str, Any]) -> bool:
    return (_int(entry["bytes"], MAX_TENSOR_FILE) and isinstance(entry["sha256"], str)
            and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]) is not None)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
