"""Dense checkpoint/eval schedules, written as small strings so they live in configs and on the command line.

A schedule is one or more parts joined by ``+`` (their union), each a set of optimizer steps:

- ``every:K`` -- 0, K, 2K, ...
- ``log:N`` -- N log-spaced steps between 1 and the last step (rounded, de-duplicated)
- ``at:A,B,C`` -- an explicit list
- ``upsample:A:B:K`` -- every K steps between A and B inclusive (densify around a phase change)

Numbers take ``k``/``M`` suffixes (``4.25M``) and a ``seq`` suffix for sequences instead of steps
(``every:100kseq``): sequences are rounded up to whole steps, as the reference rounds up to multiples of 32.
Step 0 (before training) and the final step are always included.
"""

from __future__ import annotations

import math

import numpy as np

from coopetition.errors import ConfigError

_MULTIPLIERS = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}
MAX_POINTS = 1_000_000  # more checkpoints or evals than this is a typo (and would fill the disk)


def _check_points(part: str, n: int) -> None:
    if n > MAX_POINTS:
        raise ConfigError(f"schedule {part!r} names {n} steps; at most {MAX_POINTS} are allowed")


def parse_count(text: str, batch_size: int) -> int:
    """``"1500"`` -> 1500 steps; ``"4.25Mseq"`` -> ceil(4.25e6 / batch_size) steps."""
    raw = text.strip()
    in_sequences = raw.endswith("seq")
    if in_sequences:
        raw = raw[:-3]
    scale = 1.0
    if raw and raw[-1] in _MULTIPLIERS:
        scale, raw = _MULTIPLIERS[raw[-1]], raw[:-1]
    try:
        value = float(raw) * scale
    except ValueError:
        raise ConfigError(f"bad number {text!r} in schedule (examples: 500, 2k, 4.25Mseq)") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"schedule number {text!r} must be a finite non-negative count")
    return math.ceil(value / batch_size) if in_sequences else round(value)


def schedule_steps(spec: str, total_steps: int, batch_size: int) -> list[int]:
    """All steps in ``[0, total_steps]`` that ``spec`` names, sorted, always including 0 and ``total_steps``."""
    steps = {0, total_steps}
    for part in spec.split("+"):
        kind, _, args = part.strip().partition(":")
        values = [a for a in args.split(":")] if args else []
        if kind == "every" and len(values) == 1:
            k = parse_count(values[0], batch_size)
            if k < 1:
                raise ConfigError(f"schedule {part!r}: the interval must be >= 1 step")
            _check_points(part, total_steps // k + 1)
            steps.update(range(0, total_steps + 1, k))
        elif kind == "log" and len(values) == 1:
            n = parse_count(values[0], 1)
            if n < 1:
                raise ConfigError(f"schedule {part!r}: needs >= 1 point")
            _check_points(part, n)
            if total_steps >= 1:
                steps.update(int(s) for s in np.unique(np.round(np.geomspace(1, total_steps, n))))
        elif kind == "at" and len(values) == 1:
            steps.update(parse_count(v, batch_size) for v in values[0].split(",") if v.strip())
        elif kind == "upsample" and len(values) == 3:
            lo, hi, k = (parse_count(v, batch_size) for v in values)
            if k < 1 or hi < lo:
                raise ConfigError(f"schedule {part!r}: needs A <= B and an interval K >= 1")
            _check_points(part, (hi - lo) // k + 1)
            steps.update(range(lo, hi + 1, k))
        else:
            raise ConfigError(f"bad schedule part {part!r}; use every:K, log:N, at:A,B,..., upsample:A:B:K")
    beyond = [s for s in steps if s > total_steps]
    if beyond:
        raise ConfigError(f"schedule {spec!r} names step {min(beyond)} past the last step {total_steps}")
    return sorted(steps)
