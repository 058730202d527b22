"""The ``--window`` of a zoom: steps ``A:B``, or an event of the run's eval log with a width (``icl_peak±2000``).

Events are those ``strategies`` marks (``icl_peak``, ``icl_eval_peak``, ``crossover``; see
``coopetition.analysis.strategies``) plus ``phase_change``: the steepest rise of Flip in-context accuracy between
two consecutive eval points (delta accuracy / delta steps), at the midpoint of that interval. Flip rather than the
training loss because Flip is the curve whose jump *is* the ICL phase change (0 for CIWL, 1 for ICL), while the
loss also falls steadily as in-weights learning proceeds; a rise because ICL emerging is the phase change (its
later fall is ``crossover``). Intervals that rise by less than ``PHASE_MIN_CHANGE`` are ignored: between the
log-spaced first evals (steps 1, 2, 6 ...) eval noise alone (standard error ~0.011 at 2000 sequences) divided by
one step would otherwise look steepest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from coopetition.analysis.strategies import EVENTS as STRATEGY_EVENTS
from coopetition.analysis.strategies import curve, detect_events
from coopetition.errors import ConfigError, DataError
from coopetition.train.schedule import parse_count, schedule_steps

EVENTS = (*STRATEGY_EVENTS, "phase_change")
PHASE_MIN_CHANGE = 0.05  # accuracy points; ~5 standard errors of an eval mean at the default 2000 sequences
_EVENT = re.compile(r"(?P<name>[a-z_]+)\s*(?:(?:±|\+-|\+/-)\s*(?P<width>\S+))?")
_RANGE = re.compile(r"(?P<a>[^:]+):(?P<b>[^:]+)")


@dataclass(frozen=True)
class Window:
    """Steps ``first..last`` inclusive; ``label`` says where they came from (``icl_peak 3000 ± 1000``)."""

    first: int
    last: int
    label: str


def phase_change(table: pd.DataFrame) -> dict | None:
    """The ``phase_change`` event row (module doc) from a table with eval.csv's columns, or None."""
    flip = curve(table, "flip")
    if len(flip) < 2:
        return None
    steps, values = flip["step"].to_numpy(), flip["value"].to_numpy()
    best, where = 0.0, None
    for i in range(1, len(flip)):
        change = values[i] - values[i - 1]
        if change >= PHASE_MIN_CHANGE and change / (steps[i] - steps[i - 1]) > best:
            best, where = change / (steps[i] - steps[i - 1]), i
    if where is None:
        return None
    step = round((steps[where - 1] + steps[where]) / 2)
    sequences = round((flip["sequences"][where - 1] + flip["sequences"][where]) / 2)
    return {"step": step, "sequences": sequences, "evaluator": "flip", "metric": "phase_change",
            "value": float((values[where - 1] + values[where]) / 2)}


def event_steps(table: pd.DataFrame) -> dict[str, int]:
    """``{event: step}`` for every event the run's eval log has."""
    rows = detect_events(table) + [r for r in [phase_change(table)] if r is not None]
    return {row["metric"]: int(row["step"]) for row in rows}


def parse_window(text: str, table: pd.DataFrame, batch_size: int, last_step: int) -> Window:
    """``A:B`` (schedule numbers: ``2k``, ``500kseq``) inside ``0..last_step``, or ``EVENT±W`` (also ``EVENT+-W``)
    clipped to it. A window outside the run, or an event the run does not have, is a one-line error."""
    text = text.strip()
    span = _RANGE.fullmatch(text)
    if span:
        first, last = (parse_count(span[k], batch_size) for k in ("a", "b"))
        if first > last:
            raise ConfigError(f"--window {text}: the first step {first} is after the last {last}")
        if last > last_step:
            raise DataError(f"--window {text} reaches step {last}, past the run's last checkpoint ({last_step})")
        return Window(first, last, f"steps {first}..{last}")
    event = _EVENT.fullmatch(text)
    if not event or event["name"] not in EVENTS:
        raise ConfigError(f"--window {text!r}: use A:B or EVENT±W (EVENT one of {', '.join(EVENTS)}; "
                          f"e.g. icl_peak±2000 or icl_peak+-2k)")
    if event["width"] is None:
        raise ConfigError(f"--window {text}: give a width, e.g. {event['name']}±1000")
    width = parse_count(event["width"], batch_size)
    found = event_steps(table)
    if event["name"] not in found:
        raise DataError(f"the run has no {event['name']} in its eval log (see docs/zoom.md for how it is found)")
    centre = found[event["name"]]
    first, last = max(0, centre - width), min(last_step, centre + width)
    return Window(first, last, f"{event['name']} {centre} ± {width}: steps {first}..{last}")


def window_steps(spec: str, window: Window, total_steps: int, batch_size: int, flag: str) -> list[int]:
    """The steps of schedule ``spec`` (the train grammar, over the whole run) inside ``window``. Step 0 and the last
    step, which every schedule adds and every run has, do not count: a schedule naming nothing else there is an
    error."""
    implicit = {0, total_steps}
    steps = [s for s in schedule_steps(spec, total_steps, batch_size)
             if window.first <= s <= window.last and s not in implicit]
    if not steps:
        raise ConfigError(f"{flag} {spec} names no step in the window ({window.label})")
    return steps
