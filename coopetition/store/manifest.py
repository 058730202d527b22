"""The manifest's schema: what ``RUN/manifest.json`` may say, as frozen dataclasses loaded with dacite.

Readers trust only the manifest, and the manifest is untrusted input, so loading it checks every field: the shape
(no unknown or missing keys, each value of its declared type: dacite, strict), and then each entry's bounds in its
``__post_init__`` (int steps, sizes and counts in range, never a bool; 64-hex-digit sha256; one entry per step). A
manifest that breaks a rule is one DataError, ``malformed manifest PATH: WHY``. Which *files* an entry may name is
``contain.contained``'s rule, applied when the entry is used.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import dacite

from coopetition.bounded import MAX_TENSOR_FILE
from coopetition.errors import DataError

MAX_STEPS = 10**10  # train.MAX_STEPS (store sits below train)
MAX_SEQUENCES = 2**63 - 1
MAX_SESSIONS = 64  # run-time settings of the newest processes that wrote the run
MAX_TABLE_BYTES = 256 << 20  # eval.csv / train.csv / eval_zoom.csv
MAX_SOURCE_INDEX = 1 << 16
SOURCE_ROLES = ("graft", "init_from")


class _Bad(ValueError):
    """A field out of its bounds (``__post_init__``); becomes ``malformed manifest PATH: WHY``."""


def _int(value: Any, high: int) -> bool:
    return type(value) is int and 0 <= value <= high  # type(): JSON true is not 1


def _file_ok(entry: Any, max_bytes: int = MAX_TENSOR_FILE) -> bool:
    return (_int(entry.bytes, max_bytes) and isinstance(entry.sha256, str)
            and re.fullmatch(r"[0-9a-f]{64}", entry.sha256) is not None)


def _refuse(entry: Any, section: str) -> _Bad:
    text = repr(asdict(entry))
    shown = text if len(text) <= 80 else text[:77] + "..."
    return _Bad(f"{section} entry {shown} is not {{{', '.join(f.name for f in fields(entry))}}} of the right types "
                f"and ranges")


@dataclass(frozen=True)
class FileEntry:
    """A listed file: its run-relative name (``contained`` decides whether it may be opened), size and sha256."""

    file: str
    bytes: int
    sha256: str

    def __post_init__(self) -> None:
        if not _file_ok(self):
            raise _refuse(self, "file")


@dataclass(frozen=True)
class CheckpointEntry:
    """A committed checkpoint (``checkpoints/step_*.safetensors``)."""

    step: int
    sequences: int
    file: str
    bytes: int
    sha256: str

    def __post_init__(self) -> None:
        if not (_int(self.step, MAX_STEPS) and _int(self.sequences, MAX_SEQUENCES) and _file_ok(self)):
            raise _refuse(self, "checkpoints")


@dataclass(frozen=True)
class ResumeEntry:
    """A resume state (``resume/step_*.safetensors``): Adam, the data RNG and the loop counters at ``step``."""

    step: int
    file: str
    bytes: int
    sha256: str

    def __post_init__(self) -> None:
        if not (_int(self.step, MAX_STEPS) and _file_ok(self)):
            raise _refuse(self, "resume")


@dataclass(frozen=True)
class SourceEntry:
    """A kept copy of a frozen source checkpoint (``sources/{role}_{index}.safetensors``): ``role`` graft (its
    position ``index`` among the run's grafts) or init_from; ``spec``, ``step`` and ``sha256_of_source`` say where
    it was copied from."""

    role: str
    index: int
    spec: str
    step: int
    sha256_of_source: str
    file: str
    bytes: int
    sha256: str

    def __post_init__(self) -> None:
        if not (self.role in SOURCE_ROLES and _int(self.index, MAX_SOURCE_INDEX) and _int(self.step, MAX_STEPS)
                and len(self.spec) < 4096 and _file_ok(self)):
            raise _refuse(self, "sources")


@dataclass(frozen=True)
class Session:
    """One process's run-time settings (they change no result): when it started, from which step, how."""

    started: str
    from_step: int
    threads: int | None
    device: str
    how: str

    def __post_init__(self) -> None:
        if not (all(len(str(v)) < 64 for v in asdict(self).values()) and type(self.from_step) is int
                and (self.threads is None or type(self.threads) is int)):
            raise _refuse(self, "sessions")


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
        if self.zoom_eval is not None and not _file_ok(self.zoom_eval, MAX_TABLE_BYTES):
            raise _refuse(self.zoom_eval, "zoom_eval")
        if len(self.sessions) > MAX_SESSIONS:
            raise _Bad(f"sessions lists more than {MAX_SESSIONS}")

    @property
    def committed(self) -> bool:
        return bool(self.checkpoints)

    def to_json(self) -> dict[str, Any]:
        """The JSON the writer commits (absent sections left out)."""
        out: dict[str, Any] = {}
        for key in ("checkpoints", "resume", "eval_sets", "sources", "zoom_eval", "sessions"):
            value = getattr(self, key)
            if isinstance(value, tuple) and (value or key in ("checkpoints", "resume")):
                out[key] = [asdict(e) for e in value]
            elif value:
                out[key] = asdict(value)
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
        raise bad(f"unknown key(s) {sorted(map(str, err.keys))[:3]}") from None
    except dacite.MissingValueError as err:
        raise bad(f"an entry lacks {err.field_path}") from None
    except dacite.WrongTypeError as err:
        text = repr(err.value)
        raise bad(f"{err.field_path} has the wrong type (got {text[:57] + '...' if len(text) > 60 else text})"
                  ) from None
    except (dacite.DaciteError, TypeError, ValueError, AttributeError) as err:
        raise bad(f"a section or entry has the wrong shape ({str(err)[:120]})") from None
