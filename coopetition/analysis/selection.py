"""Which checkpoints an analysis runs on: the ``--checkpoint-range`` SPEC, parsed and resolved against a run.

SPEC is a comma list of items; each item is a step, a range ``A:B`` (inclusive, either end may be omitted) or
``A:B:K`` (every K-th checkpoint of the range, starting at its first). Numbers are optimizer steps, except that a
negative number counts checkpoints from the end (``-1`` is the last checkpoint, ``-20:`` the last 20). A single
step that is not a checkpoint snaps to the nearest one (ties go to the earlier) and says so in ``notes``; a range
never snaps, and a selection that ends up empty is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from coopetition.errors import ConfigError, DataError

_INT = re.compile(r"^-?\d+$")


@dataclass(frozen=True)
class SpecItem:
    """One comma-separated item: ``start``/``stop`` are steps or negative indices (None = open end)."""

    start: int | None
    stop: int | None
    every: int = 1
    single: bool = False


@dataclass(frozen=True)
class Selection:
    steps: tuple[int, ...]
    notes: tuple[str, ...] = ()


def _number(text: str, spec: str) -> int | None:
    text = text.strip()
    if text == "":
        return None
    if not _INT.match(text):
        raise ConfigError(f"checkpoint range {spec!r}: {text!r} is not an integer step")
    return int(text)


def parse_spec(spec: str) -> tuple[SpecItem, ...]:
    """Syntax only (no run needed): a malformed SPEC is a ConfigError naming the bad part."""
    if not spec or not spec.strip():
        raise ConfigError("checkpoint range is empty; use e.g. 0: (all), -20: (last 20), 0:5000:2 or 100,2000")
    items = []
    for raw in spec.split(","):
        part = raw.strip()
        if not part:
            raise ConfigError(f"checkpoint range {spec!r} has an empty item")
        fields = part.split(":")
        if len(fields) > 3:
            raise ConfigError(f"checkpoint range item {part!r} has more than two ':' (use A:B or A:B:K)")
        if len(fields) == 1:
            step = _number(fields[0], spec)
            items.append(SpecItem(step, step, single=True))
            continue
        start, stop = _number(fields[0], spec), _number(fields[1], spec)
        every = _number(fields[2], spec) if len(fields) == 3 else 1
        if every is None or every < 1:
            raise ConfigError(f"checkpoint range item {part!r}: the stride K must be an integer >= 1")
        if start is not None and stop is not None and (start >= 0) == (stop >= 0) and start > stop:
            raise ConfigError(f"checkpoint range item {part!r}: start {start} is after stop {stop}")
        items.append(SpecItem(start, stop, every))
    return tuple(items)


def _as_step(value: int, steps: list[int], spec: str) -> int:
    """A negative value indexes checkpoints from the end; a non-negative one is a step."""
    if value >= 0:
        return value
    if -value > len(steps):
        raise ConfigError(f"checkpoint range {spec!r}: {value} reaches before the first of {len(steps)} checkpoints")
    return steps[value]


def resolve(spec: str, available: list[int]) -> Selection:
    """Selected checkpoint steps (sorted, unique) from ``available`` (the run's checkpoint steps)."""
    items = parse_spec(spec)
    steps = sorted(set(available))
    if not steps:
        raise DataError("the run has no checkpoints")
    chosen: set[int] = set()
    notes: list[str] = []
    for item in items:
        if item.single:
            wanted = _as_step(item.start, steps, spec)
            nearest = min(steps, key=lambda s: (abs(s - wanted), s))
            if nearest != wanted:
                notes.append(f"step {wanted} is not a checkpoint; using the nearest, step {nearest}")
            chosen.add(nearest)
            continue
        lo = _as_step(item.start, steps, spec) if item.start is not None else steps[0]
        hi = _as_step(item.stop, steps, spec) if item.stop is not None else steps[-1]
        chosen.update([s for s in steps if lo <= s <= hi][::item.every])
    if not chosen:
        raise ConfigError(f"checkpoint range {spec!r} selects no checkpoint; the run has steps "
                          f"{steps[0]}..{steps[-1]} ({len(steps)} checkpoints)")
    return Selection(tuple(sorted(chosen)), tuple(notes))
