"""The one rule for which files of a run directory a reader may open: ``contained``.

A run directory is untrusted input (runs are copied between machines, shared in group folders, downloaded with a
paper), and its manifest names the files to read. So a name is accepted only if

1. it is spelled exactly as the writer spells it: ``FOLDER/NAME`` (or ``NAME`` at the top level) in printable
   ASCII, one ``/`` between parts, no ``.``, ``..``, empty part, backslash, NUL, look-alike or case variant, with
   NAME matching the kind's pattern (and, for a checkpoint or resume state, naming the entry's own step); and
2. after every symlink is resolved, it is that same folder of the run's real path, and a name matching the pattern
   (with the same step), so a symlinked file or folder that leads elsewhere, even elsewhere inside the run, is
   refused. The run directory itself may be a symlink: everything is checked against its real path.

A hard link inside the run is accepted: its path is inside, and its bytes are checked against the manifest's size
and sha256 like any file's. Opening is then ``coopetition.bounded``'s job (regular files only, bounded size), on the
resolved path.

Kinds are ``RunFile`` values; a new folder of a run (such as ``sources/``, the frozen graft-source checkpoints copied
into a run) is declared by making one, and every reader goes through ``contained``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from coopetition.errors import DataError

MAX_ENTRY_CHARS = 255


@dataclass(frozen=True)
class RunFile:
    """A kind of file a run may hold: its ``folder`` ("" = the run's top level) and a ``pattern`` the whole name
    must match (ASCII; a first group, when present, is the step the name carries)."""

    what: str
    folder: str
    pattern: str
    name: str | None = None  # the one name of a fixed-name kind (``config.json``)

    @classmethod
    def fixed(cls, what: str, name: str) -> "RunFile":
        return cls(what, "", re.escape(name), name)

    def __post_init__(self) -> None:
        if self.folder and not re.fullmatch(r"[a-z][a-z0-9_]*", self.folder):
            raise ValueError(f"run folder {self.folder!r} must be one lowercase ASCII word")

    def step_of(self, name: str) -> int | None | bool:
        """The step a matching ``name`` carries (None if the pattern has no step), or False if it does not match."""
        found = re.fullmatch(self.pattern, name, flags=re.ASCII)
        if found is None:
            return False
        return int(found.group(1)) if found.re.groups else None

    def entry(self, name: str) -> str:
        """The manifest spelling of ``name`` in this kind's folder."""
        return f"{self.folder}/{name}" if self.folder else name


STEP_FILE = r"step_([0-9]{11})\.safetensors"
CONFIG = RunFile.fixed("config", "config.json")
MANIFEST = RunFile.fixed("manifest", "manifest.json")
EVAL_SETS = RunFile.fixed("eval sets", "eval_sets.safetensors")
EVAL_TABLE = RunFile.fixed("eval table", "eval.csv")
TRAIN_TABLE = RunFile.fixed("train table", "train.csv")
ZOOM_EVAL_TABLE = RunFile.fixed("zoom eval table", "eval_zoom.csv")  # eval rows added by ``coopetition zoom``
LOCK = RunFile.fixed("lock", ".lock")
CHECKPOINT = RunFile("checkpoint", "checkpoints", STEP_FILE)
RESUME = RunFile("resume state", "resume", STEP_FILE)
SOURCE = RunFile("graft source", "sources", r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.safetensors")
FOLDERS = (CHECKPOINT, RESUME, SOURCE)  # sub-folders a writer creates: never symlinks (check_folders)


def run_root(run: Path) -> Path:
    """The real path of a run directory (a symlinked run dir is fine); a missing one is a DataError."""
    try:
        root = Path(run).resolve(strict=True)
    except FileNotFoundError:
        raise DataError(f"run dir {run} does not exist") from None
    except (OSError, RuntimeError, ValueError) as err:
        raise DataError(f"cannot resolve run dir {run}: {err}") from None
    if not root.is_dir():
        raise DataError(f"run dir {run} is not a directory")
    return root


def contained(run: Path, kind: RunFile, entry: str | None = None, step: int | None = None) -> Path:
    """The resolved path of ``entry`` (a manifest's ``file`` text; default: a fixed-name kind's one name) as a file
    of ``kind`` inside run ``run``, or a one-line DataError naming the entry. With ``step``, the name must carry
    that step. The file need not exist (opening it says so); everything on the way to it must stay inside."""
    text = kind.name if entry is None else entry
    where = f"{kind.what} entry {_show(text)}"
    if not isinstance(text, str) or not text or len(text) > MAX_ENTRY_CHARS:
        raise DataError(f"{where} is not a file name")
    if not (text.isascii() and text.isprintable()) or "\\" in text:
        raise DataError(f"{where} has a character a run file name never has (non-ASCII, control, backslash)")
    parts = text.split("/")
    if parts[:-1] != ([kind.folder] if kind.folder else []):
        raise DataError(f"{where} is not {kind.entry('NAME')} inside the run dir")
    name = parts[-1]
    carried = kind.step_of(name)
    if carried is False:
        raise DataError(f"{where} does not match {kind.entry(kind.pattern)}")
    if step is not None and carried != step:
        raise DataError(f"{where} names step {carried}, the manifest entry is step {step}")
    root = run_root(run)
    folder = root / kind.folder if kind.folder else root
    try:
        resolved = (folder / name).resolve()
        looped = resolved.is_symlink()  # Python >= 3.13's resolve() hands a symlink loop back instead of raising
    except (OSError, RuntimeError, ValueError) as err:  # a symlink loop (Python < 3.13)
        raise DataError(f"{where}: cannot resolve it ({err})") from None
    if looped:
        raise DataError(f"{where}: cannot resolve it (a symlink loop)")
    if resolved.parent != folder or kind.step_of(resolved.name) != carried:
        raise DataError(f"{where} leads to {resolved}, outside {kind.entry('')} of the run dir {root}")
    return resolved


def check_folders(run: Path) -> None:
    """Before a writer touches a run (``--resume``): its sub-folders, where they exist, are real directories of the
    run, so nothing it writes or deletes there can land outside."""
    root = run_root(run)
    for kind in FOLDERS:
        path = root / kind.folder
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise DataError(f"run dir {run}: {kind.folder}/ is a symlink or not a directory; refusing to write")
    for fixed in (CONFIG, MANIFEST, EVAL_SETS, EVAL_TABLE, TRAIN_TABLE, ZOOM_EVAL_TABLE, LOCK):
        contained(run, fixed)


def _show(text: object) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."
