"""The manifest's schema: what ``RUN/manifest.json`` may say, as frozen dataclasses loaded with dacite.

Readers trust only the manifest, and the manifest is untrusted input, so loading it checks every field: the shape
(no unknown or missing keys, each value of its declared type: dacite, strict), and then each entry's bounds in its
``__post_init__`` (int steps, sizes and counts in range, never a bool; 64-hex-digit sha256; one entry per step). A
manifest that breaks a rule is one DataError, ``malformed manifest PATH: WHY``. Which *files* an entry may name is
``contain.contained``'s rule, applied when the entry is used.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dacite

from coopetition.bounded import MAX_TENSOR_FILE
from coopetition.errors import DataError

MAX_STEPS = 10**10  # train.MAX_STEPS (store sits below train)
MAX_SEQUENCES = 2**63 - 1
MAX_SESSIONS = 64  # run-time settings of the newest processes that wrote the run
MAX_TABLE_BYTES = 256 << 20  # eval.csv / train.csv / eval_zoom.csv
MAX_SOURCES_INDEX = 1 << 16
SOURCE_ROLES = ("graft", "init_from")


class _Bad(ValueError):
    """A field out of its bounds (``__post_init__``); becomes ``malformed manifest PATH: WHY``."""


def _int(value: Any, high: int) -> bool:
    return type(value) is int and 0 <= value <= high


def _sha(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class FileEntry:
    """A listed file: its run-relative name (``contained`` decides whether it may be opened), size and sha256."""

    file: str
    bytes: int
    sha256: str

    def __post_init__(self) -> None:
        if not (_int(self.bytes, MAX_TENSOR_FILE) and _sha(self.sha256)):
            raise _Bad(f"{self.what} entry {_short(self.as_dict())} has a field of the wrong type or out of range")
        self.check()

    what = "file"

    def check(self) -> None:
        """Bounds of the subclass's own fields."""

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class CheckpointEntry(FileEntry):
    """A committed checkpoint (``checkpoints/step_*.safetensors``)."""

    step: int
    sequences: int
    what = "checkpoints"

    def check(self) -> None:
        if not (_int(self.step, MAX_STEPS) and _int(self.sequences, MAX_SEQUENCES)):
            raise _Bad(f"checkpoints entry {_short(self.as_dict())} has a field of the wrong type or out of range")

    def as_dict(self) -> dict[str, Any]:  # the writer's order
        return {"step": self.step, "sequences": self.sequences, "file": self.file, "bytes": self.bytes,
                "sha256": self.sha256}


@dataclass(frozen=True)
class ResumeEntry(FileEntry):
    """A resume state (``resume/step_*.safetensors``): Adam, the data RNG and the loop counters at ``step``."""

    step: int
    what = "resume"

    def check(self) -> None:
        if not _int(self.step, MAX_STEPS):
            raise _Bad(f"resume entry {_short(self.as_dict())} has a field of the wrong type or out of range")

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "file": self.file, "bytes": self.bytes, "sha256": self.sha256}


@dataclass(frozen=True)
class SourceEntry(FileEntry):
    """A kept copy of a frozen source checkpoint (``sources/{role}_{index}.safetensors``): ``role`` graft (its
    position ``index`` among the run's grafts) or init_from; ``spec``, ``step`` and ``sha256_of_source`` say where
    it was copied from."""

    role: str
    index: int
    spec: str
    step: int
    sha256_of_source: str
    what = "sources"

    def check(self) -> None:
        if not (self.role in SOURCE_ROLES and _int(self.index, MAX_SOURCES_INDEX) and _int(self.step, MAX_STEPS)
                and len(self.spec) < 4096):
            raise _Bad(f"sources entry {_short(self.as_dict())} is not "
                       f"{{{', '.join(sorted(f.name for f in dataclasses.fields(self)))}}}")

    def as_dict(self) -> dict[str, Any]:
        return {"role": self.role, "index": self.index, "spec": self.spec, "step": self.step,
                "sha256_of_source": self.sha256_of_source, "file": self.file, "bytes": self.bytes,
                "sha256": self.sha256}


@dataclass(frozen=True)
class Session:
    """One process's run-time settings (they change no result): when it started, from which step, how."""

    started: str
    from_step: int
    threads: int | None
    device: str
    how: str

    def __post_init__(self) -> None:
        values = dataclasses.astuple(self)
        if not (all(len(str(v)) < 64 for v in values) and type(self.from_step) is int
                and (self.threads is None or type(self.threads) is int)):
            raise _Bad(f"sessions is not a list of {{{', '.join(f.name for f in dataclasses.fields(self))}}}")


@dataclass(frozen=True)
class Manifest:
    """What a run has committed. Empty before the first commit; ``committed`` once it lists a checkpoint."""

    checkpoints: tuple[CheckpointEntry, ...] = ()
    resume: tuple[ResumeEntry, ...] = ()
    eval_sets: FileEntry | None = None
    sources: tuple[SourceEntry, ...] = ()
    zoom_eval: FileEntry | None = None  # the committed prefix of eval_zoom.csv
    sessions: tuple[Session, ...] = ()

    def __post_init__(self) -> None:
        for key in ("checkpoints", "resume"):
            steps = [e.step for e in getattr(self, key)]
            if len(set(steps)) != len(steps):
                raise _Bad(f"{key} lists a step twice")
        if self.zoom_eval is not None and self.zoom_eval.bytes > MAX_TABLE_BYTES:
            raise _Bad("zoom_eval is not {file, bytes, sha256}")
        if len(self.sessions) > MAX_SESSIONS:
            raise _Bad(f"sessions lists more than {MAX_SESSIONS}")

    @property
    def committed(self) -> bool:
        return bool(self.checkpoints)

    def to_json(self) -> dict[str, Any]:
        """The JSON the writer commits (absent sections left out, entries in the writer's key order)."""
        out: dict[str, Any] = {"checkpoints": [e.as_dict() for e in self.checkpoints],
                               "resume": [e.as_dict() for e in self.resume]}
        if self.eval_sets is not None:
            out["eval_sets"] = self.eval_sets.as_dict()
        if self.sources:
            out["sources"] = [e.as_dict() for e in self.sources]
        if self.zoom_eval is not None:
            out["zoom_eval"] = self.zoom_eval.as_dict()
        if self.sessions:
            out["sessions"] = [dataclasses.asdict(s) for s in self.sessions]
        return out


def _listed(value: Any) -> Any:
    """A JSON list becomes the section's tuple; anything else is left for dacite to refuse as the wrong type."""
    return tuple(value) if isinstance(value, list) else value


_DACITE = dacite.Config(strict=True, type_hooks={
    tuple[kind, ...]: _listed for kind in (CheckpointEntry, ResumeEntry, SourceEntry, Session)})


def load_manifest(data: Any, path: Path) -> Manifest:
    """``data`` (parsed manifest JSON) as a ``Manifest``, or a one-line DataError naming the first problem."""
    def bad(why: str) -> DataError:
        return DataError(f"malformed manifest {path}: {why}")

    if not isinstance(data, dict):
        raise bad("not a JSON object")
    try:
        return dacite.from_dict(Manifest, data, config=_DACITE)
    except _Bad as err:
        raise bad(str(err)) from None
    except dacite.UnexpectedDataError as err:
        where = f"{_section(err)}: " if _section(err) else ""
        raise bad(f"{where}unknown key(s) {sorted(map(str, err.keys))[:3]}") from None
    except dacite.MissingValueError as err:
        raise bad(f"an entry lacks {err.field_path}") from None
    except dacite.WrongTypeError as err:
        raise bad(f"{err.field_path} has the wrong type (got {_short(err.value, 60)})") from None
    except (dacite.DaciteError, TypeError, ValueError, AttributeError) as err:
        raise bad(f"a section or entry has the wrong shape ({_short(str(err), 120)})") from None


def _section(err: dacite.UnexpectedDataError) -> str:
    return getattr(err, "field_path", None) or ""
