"""Reading a run directory: ``RunReader``, a read-only view of a run through its manifest.

Layout::

    RUN/config.json            full config, seeds, derived sizes, bank fingerprint, package versions
    RUN/manifest.json          what is complete: checkpoints, resume states and eval sets, each with its file,
                               bytes and sha256 (readers trust only this file; schema: ``store.manifest``)
    RUN/checkpoints/step_*.safetensors   weights + {step, sequences, seeds}
    RUN/resume/step_*.safetensors        Adam state, data RNG and the running loss at the last RESUME_KEEP checkpoints
                                         and at the steps of ``train.resume_schedule`` (where a zoom re-trains from)
    RUN/eval_sets.safetensors  the fixed evaluator sequences (integer index tables)
    RUN/sources/*.safetensors  byte copies of the frozen checkpoints the run depends on (grafts, init_from)
    RUN/eval.csv               tidy: step,sequences,evaluator,metric,value
    RUN/train.csv              tidy: step,sequences,metric,value (training loss)
    RUN/eval_zoom.csv          eval rows added later by ``coopetition zoom`` (eval.csv's columns; readers merge it)
    RUN/.lock                  held (flock) by the one process writing the run; holds its pid (``store.lock``)

The writer (``store.writer``) commits each checkpoint by the manifest write that follows its files, so a reader sees
either the old or the new manifest, each listing only complete files; stray temporaries and unlisted files are never
read here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from coopetition.bounded import TensorLayout, read_bytes, read_json
from coopetition.config import RunConfig, config_from_dict
from coopetition.errors import ConfigError, DataError
from coopetition.store.checkpoint import CheckpointInfo, load_tensors, verify_file
from coopetition.store.contain import (CHECKPOINT, CONFIG, EVAL_SETS, EVAL_TABLE, MANIFEST, RESUME, SOURCE,
                                       TRAIN_TABLE, ZOOM_EVAL_TABLE, RunFile, contained)
from coopetition.store.manifest import MAX_TABLE_BYTES, FileEntry, Manifest, SourceEntry, load_manifest
from coopetition.tables import FLOAT, INT, STR, Schema, read_table

EVAL_SCHEMA = {"step": INT, "sequences": INT, "evaluator": STR, "metric": STR, "value": FLOAT}
TRAIN_SCHEMA = {"step": INT, "sequences": INT, "metric": STR, "value": FLOAT}
EVAL_COLUMNS = list(EVAL_SCHEMA)
TRAIN_COLUMNS = list(TRAIN_SCHEMA)
MAX_CONFIG_BYTES = 1 << 20  # config.json is a few KB
MAX_MANIFEST_BYTES = 256 << 20  # ~200 bytes per entry: a million checkpoints (the schedule cap) fit


@dataclass(frozen=True)
class ResumePoint:
    """One listed resume state and the checkpoint of its step; ``problem`` says why it cannot be used as listed."""

    step: int
    state: CheckpointInfo | None
    checkpoint: CheckpointInfo | None
    problem: str | None = None


# Speed options whose default changed after runs were recorded without the field: such a run reads with the
# value it was trained with, so --resume and zoom continue it with the same kernels (docs/performance.md).
RECORDED_BEFORE = {"train": {"fused_loss": False}}


def recorded_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A recorded config section dict with ``RECORDED_BEFORE``'s values filled in where the run lacks the field."""
    out = dict(config)
    for section, fields in RECORDED_BEFORE.items():
        if isinstance(out.get(section), dict):
            out[section] = {**fields, **out[section]}
    return out


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

    def run_config(self) -> RunConfig:
        """The run's ``RunConfig``, re-validated as if it were new (an edited config.json is refused here, before
        anything is built), with the run-level caps (``check_run_config``) on top."""
        meta = self.config()
        where = contained(self.path, CONFIG)
        if not isinstance(meta.get("config"), dict):
            raise DataError(f"{where} has no 'config' section")
        try:
            return config_from_dict(recorded_defaults(meta["config"]))
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

    def manifest(self) -> Manifest:
        """The manifest (empty before the first commit); a malformed one is a DataError naming what is wrong."""
        path = contained(self.path, MANIFEST)
        if not path.exists():
            return Manifest()
        return load_manifest(read_json(path, "manifest", MAX_MANIFEST_BYTES, depth=4), path)

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
        for e in sorted(self.manifest().checkpoints, key=lambda e: e.step):
            try:
                path = contained(self.path, CHECKPOINT, e.file, e.step)
            except DataError as err:
                refused.append((CheckpointInfo(e.step, e.sequences, Path(self.path, e.file), e.bytes, e.sha256),
                                str(err)))
                continue
            good.append(CheckpointInfo(e.step, e.sequences, path, e.bytes, e.sha256))
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
        checkpoints = {e.step: e for e in manifest.checkpoints}
        points = []
        for e in sorted(manifest.resume, key=lambda e: e.step, reverse=True):
            step, ckpt = e.step, checkpoints.get(e.step)
            try:
                state = CheckpointInfo(step, 0, contained(self.path, RESUME, e.file, step), e.bytes, e.sha256)
                if ckpt is None:
                    raise DataError(f"resume state {state.path} has no listed checkpoint")
                info = CheckpointInfo(step, ckpt.sequences, contained(self.path, CHECKPOINT, ckpt.file, step),
                                      ckpt.bytes, ckpt.sha256)
            except DataError as err:
                points.append(ResumePoint(step, None, None, str(err)))
                continue
            points.append(ResumePoint(step, state, info))
        return points

    def sources(self) -> list[tuple[SourceEntry, Path]]:
        """The kept source checkpoints: ``(manifest entry, the contained file to read)``; empty for runs without."""
        return [(e, contained(self.path, SOURCE, e.file)) for e in self.manifest().sources]

    def eval_sets_entry(self) -> FileEntry | None:
        return self.manifest().eval_sets

    def eval_sets(self, layout: TensorLayout) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(tensors, metadata)`` of the run's eval sets, checked against the manifest's size and sha256 and
        ``layout`` before their data is read; unlisted eval sets are refused."""
        entry = self.eval_sets_entry()
        if entry is None:
            raise DataError(f"{self.path} lists no eval sets in its manifest")
        path = contained(self.path, EVAL_SETS, entry.file)
        return load_tensors(path, "cpu", entry.bytes, entry.sha256, layout, what="eval sets")

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
        entry = self.manifest().zoom_eval
        if entry is None:
            return None
        data = committed_zoom_rows(self.path, entry)
        return read_table(contained(self.path, ZOOM_EVAL_TABLE, entry.file), EVAL_SCHEMA, ZOOM_EVAL_TABLE.name,
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


def committed_zoom_rows(run: Path, entry: FileEntry | None) -> bytes:
    """The committed prefix of ``run``'s eval_zoom.csv (``entry``: the manifest's ``zoom_eval`` record), checked
    against its sha256; just the header when nothing was committed."""
    if entry is None:
        return (",".join(EVAL_COLUMNS) + "\n").encode()
    path = contained(run, ZOOM_EVAL_TABLE, entry.file)
    data = read_bytes(path, ZOOM_EVAL_TABLE.name, MAX_TABLE_BYTES)
    if len(data) < entry.bytes or hashlib.sha256(data[:entry.bytes]).hexdigest() != entry.sha256:
        raise DataError(f"corrupt {ZOOM_EVAL_TABLE.name} {path}: its first {entry.bytes} bytes are not the "
                        f"ones the manifest recorded")
    return data[:entry.bytes]




def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
