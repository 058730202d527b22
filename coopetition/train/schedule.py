"""Dense checkpoint/eval schedules, written as small strings so they live in configs and on the command line.

A schedule is one or more parts joined by ``+`` (their union), each a set of optimizer steps:

- ``every:K`` -- the points 0, K, 2K, ...
- ``log:N`` -- N log-spaced steps between 1 and the last step (rounded, de-duplicated)
- ``at:A,B,C`` -- an explicit list
- ``upsample:A:B:K`` -- the points A, A+K, ... up to B inclusive (densify around a phase change)

Numbers take ``k``/``M`` suffixes (``4.25M``) and a ``seq`` suffix for sequences instead of steps
(``every:100kseq``). A point given in sequences lands where the reference puts it: at the first step whose sequence
count (a multiple of the batch size) is >= the point, so ``every:50kseq`` at batch 32 is step ceil(k * 50000 / 32)
for k = 0, 1, 2, ... and its 400th point is step 625,000 = 20,000,000 sequences exactly. Each point is rounded on its
own, never the interval once (that would drift: 400 x ceil(50000 / 32) steps = 20,006,400 sequences).
Step 0 (before training) and the final step are always included.
"""

from __future__ import annotations

import bisect
import math
from fractions import Fraction

import numpy as np

from coopetition.errors import ConfigError

_MULTIPLIERS = {"k": 1000, "K": 1000, "M": 10**6, "G": 10**9}
MAX_POINTS = 1_000_000  # more checkpoints or evals than this is a typo (and would fill the disk)


def _check_points(part: str, n: int) -> None:
    if n > MAX_POINTS:
        raise ConfigError(f"schedule {part!r} names {n} steps; at most {MAX_POINTS} are allowed")


def parse_sequences(text: str, batch_size: int) -> Fraction:
    """A schedule number as an exact count of sequences: ``"4.25Mseq"`` -> 4,250,000; ``"1500"`` (steps) ->
    1500 x ``batch_size``. Step counts are whole steps (``"2.5"`` rounds to 2); sequence counts stay exact."""
    raw = text.strip()
    in_sequences = raw.endswith("seq")
    if in_sequences:
        raw = raw[:-3]
    scale = 1
    if raw and raw[-1] in _MULTIPLIERS:
        scale, raw = _MULTIPLIERS[raw[-1]], raw[:-1]
    try:
        approx = float(raw) * scale
        value = Fraction(raw.strip()) * scale if math.isfinite(approx) else None  # exact: 4.25 is 17/4
    except ValueError:
        raise ConfigError(f"bad number {text!r} in schedule (examples: 500, 2k, 4.25Mseq)") from None
    if value is None or value < 0:
        raise ConfigError(f"schedule number {text!r} must be a finite non-negative count")
    return value if in_sequences else round(value) * batch_size


def parse_count(text: str, batch_size: int) -> int:
    """``"1500"`` -> 1500 steps; ``"4.25Mseq"`` -> ceil(4.25e6 / batch_size) steps (the first step at or past it)."""
    return math.ceil(parse_sequences(text, batch_size) / batch_size)


def _steps_of(start: Fraction, interval: Fraction, n: int, batch_size: int) -> range | list[int]:
    """Steps ceil((start + k * interval) / batch_size) for k < n, in exact integer arithmetic."""
    if start % batch_size == 0 and interval % batch_size == 0:  # whole steps apart: a range, even for 1e6 points
        first, stride = int(start // batch_size), int(interval // batch_size)
        return range(first, first + n * stride, stride) if stride else [first]
    # start + k * interval = (a + k * b) / d with integers; ceil(x / bs) = -((-x) // bs)
    d = math.lcm(start.denominator, interval.denominator)
    a, b = start.numerator * (d // start.denominator), interval.numerator * (d // interval.denominator)
    return [-(-(a + k * b) // (d * batch_size)) for k in range(n)]


def schedule_steps(spec: str, total_steps: int, batch_size: int) -> list[int]:
    """All steps in ``[0, total_steps]`` that ``spec`` names, sorted, always including 0 and ``total_steps``."""
    steps = {0, total_steps}
    total_sequences = total_steps * batch_size
    for part in spec.split("+"):
        kind, _, args = part.strip().partition(":")
        values = [a for a in args.split(":")] if args else []
        if kind == "every" and len(values) == 1:
            interval = parse_sequences(values[0], batch_size)
            if interval <= 0:
                raise ConfigError(f"schedule {part!r}: the interval must be > 0")
            n = math.floor(total_sequences / interval) + 1  # points k * interval <= the last step's sequences
            _check_points(part, n)
            steps.update(_steps_of(Fraction(0), interval, n, batch_size))
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
            lo, hi, interval = (parse_sequences(v, batch_size) for v in values)
            if interval <= 0 or hi < lo:
                raise ConfigError(f"schedule {part!r}: needs A <= B and an interval K > 0")
            n = math.floor((hi - lo) / interval) + 1
            _check_points(part, n)
            steps.update(_steps_of(lo, interval, n, batch_size))
        else:
            raise ConfigError(f"bad schedule part {part!r}; use every:K, log:N, at:A,B,..., upsample:A:B:K")
    beyond = [s for s in steps if s > total_steps]
    if beyond:
        raise ConfigError(f"schedule {spec!r} names step {min(beyond)} past the last step {total_steps}")
    return sorted(steps)


RESUME_EVERY = 10  # the default ``train.resume_schedule``: every 10th checkpoint keeps its resume state


def kept_resume_steps(checkpoint_schedule: str, resume_schedule: str | None, total_steps: int,
                      batch_size: int) -> frozenset[int]:
    """Checkpoint steps whose resume state a run keeps for good (``train.resume_schedule``; see ``TrainConfig``).
    A resume state exists only at a checkpoint, so a point between checkpoints keeps the one just before it. Step 0
    is never kept: it is rebuilt from the seeds."""
    checkpoints = schedule_steps(checkpoint_schedule, total_steps, batch_size)
    if resume_schedule is None:
        kept = checkpoints[RESUME_EVERY::RESUME_EVERY]
    elif resume_schedule == "none":
        kept = []
    else:
        points = schedule_steps(resume_schedule, total_steps, batch_size)
        kept = [checkpoints[bisect.bisect_right(checkpoints, p) - 1] for p in points]
    return frozenset(s for s in kept if s > 0)
