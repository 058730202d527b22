"""Per-checkpoint results of each analysis, kept between ``analyze`` calls so that only new work is computed.

One entry is one analysis's rows for one checkpoint under one set of settings, a JSON file at

    CACHE/<analysis>/<settings key>/<checkpoint sha256>.json

(default ``CACHE`` = ``OUT_cache`` beside the output folder: ``RUN/analysis_cache`` for the default output
``RUN/analysis``; an analysis written outside the run leaves the run untouched). The checkpoint is named by the sha256 the run's manifest recorded for
its file (checked against the file when the run was opened), so a checkpoint rewritten under the same step is a
new entry. The settings key hashes everything that can change an analysis's numbers: the shared fields of the
analysis config (except the ones that only say how the work is spread: ``analyses``, ``threads``, ``workers``) and
that analysis's own settings (not another's: changing the probe settings keeps ablation's entries), the
evaluators, the run's own interventions and kept sources, and the package versions a run records (coopetition,
torch, TransformerLens, numpy, ...). Entries are written one by one, atomically, as each checkpoint finishes, so an interrupted
``analyze`` keeps what it finished; the output folder itself is still swapped in whole at the end.

Entries are untrusted input (a user may edit, truncate or plant them): ``load`` checks the JSON shape, the
analysis, key, checkpoint, step and table columns, and that every value is a plain scalar; anything else is
treated as absent (recomputed and overwritten), never an error. JSON keeps Python floats exactly (shortest
repr round-trips), NaN and infinities included, so tables rebuilt from entries are byte-identical to fresh ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from itertools import chain, repeat
from pathlib import Path
from typing import Any

from coopetition.store.atomic import atomic_write_text

FORMAT = 1
EXECUTION_ONLY = ("analyses", "threads", "workers")  # config fields that never change a number
SCALARS = (str, int, float, bool, type(None))
JSON_SCALARS = frozenset(SCALARS)  # the exact types json.loads gives scalars
MAX_ENTRY_BYTES = 256 * 2**20


def settings_key(analysis: str, config: Mapping[str, Any], evaluators: tuple[str, ...],
                 run_identity: Mapping[str, Any]) -> str:
    """sha256 (hex) of what can change ``analysis``'s rows. ``config`` is ``execution.analysis_settings``;
    ``run_identity`` the run's interventions, kept sources and package versions (``run_identity``)."""
    settings = {k: v for k, v in config.items() if k not in EXECUTION_ONLY}
    blob = json.dumps({"format": FORMAT, "analysis": analysis, "config": settings, "evaluators": list(evaluators),
                       "run": run_identity}, sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()


def run_identity(interventions: list[str], sources: list[dict]) -> dict[str, Any]:
    """The parts of a run (beyond its checkpoints) and of this installation that an analysis's numbers depend on:
    the run's interventions, its kept sources, and the package versions a run records (not the platform string,
    which differs between the nodes of one cluster)."""
    from coopetition.store.provenance import package_versions

    versions = {k: v for k, v in package_versions().items() if k != "platform"}
    return {"interventions": interventions, "sources": [s.get("sha256") for s in sources], "versions": versions}


def _plain(value: Any) -> Any:
    """A row value as a JSON scalar: numpy and torch scalars become Python ones (their exact value)."""
    if isinstance(value, SCALARS):
        return value
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"row value {value!r} is not a scalar")


class Store:
    """The entries of one cache folder. ``hits``/``writes`` count what was read and written (for tests and the
    benchmark)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.writes = 0
        self.rejected = 0

    def path(self, analysis: str, key: str, sha256: str) -> Path:
        return self.root / analysis / key[:32] / f"{sha256}.json"

    def load(self, analysis: str, key: str, sha256: str, step: int,
             tables: Mapping[str, tuple[str, ...]]) -> dict[str, list[dict]] | None:
        """The entry's ``{table: rows}``, or None if it is absent or not exactly what was asked for."""
        path = self.path(analysis, key, sha256)
        try:
            if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_ENTRY_BYTES:
                return None
            entry = json.loads(path.read_text(encoding="utf-8"))
            found = _validated(entry, analysis, key, sha256, step, tables)
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):
            found = None
        if found is None and path.exists():
            self.rejected += 1
        return found

    def save(self, analysis: str, key: str, sha256: str, step: int, rows: Mapping[str, list[dict]]) -> None:
        entry = {"format": FORMAT, "analysis": analysis, "key": key, "sha256": sha256, "step": step,
                 "tables": {table: [{c: _plain(v) for c, v in row.items()} for row in found]
                            for table, found in rows.items()}}
        text = json.dumps(entry, allow_nan=True, separators=(",", ":"))
        atomic_write_text(self.path(analysis, key, sha256), text)
        self.writes += 1


def _validated(entry: Any, analysis: str, key: str, sha256: str, step: int,
               tables: Mapping[str, tuple[str, ...]]) -> dict[str, list[dict]] | None:
    """The entry's tables if it is exactly what was asked for, else None. The per-row checks run as C-level maps
    over all rows at once (a 201-checkpoint re-run reads ~1M rows): every row a dict, its keys among the table's
    columns, its ``step`` the entry's, every value a JSON scalar (what ``json.loads`` makes is exactly one of
    ``JSON_SCALARS``, a list or a dict)."""
    if not isinstance(entry, dict) or set(entry) != {"format", "analysis", "key", "sha256", "step", "tables"}:
        return None
    if (entry["format"] != FORMAT or entry["analysis"] != analysis or entry["key"] != key
            or entry["sha256"] != sha256 or entry["step"] != step or type(entry["step"]) is not int):
        return None
    found = entry["tables"]
    if not isinstance(found, dict) or not set(found) <= set(tables):
        return None
    for table, rows in found.items():
        if not isinstance(rows, list) or not set(map(type, rows)) <= {dict}:
            return None
        if not all(map(frozenset(tables[table]).issuperset, rows)):
            return None
        if not set(map(dict.get, rows, repeat("step"))) <= {step}:
            return None
        if not set(map(type, chain.from_iterable(map(dict.values, rows)))) <= JSON_SCALARS:
            return None
    return found
