"""Column kinds of every table ``analyze`` writes, so a table read back (``replot``, a user's script) has its
dtypes whether it holds rows or none (``coopetition.tables.read_table``).

An analysis declares its columns (``Analysis.tables``); the kinds are declared here, once per table, as the writer
produces them (measured on a real output: ``tests/test_analysis_runner.py`` checks both agree, and that every
registered table has kinds here). Values that may be missing (a patching effect below the gap threshold, a paper
value the scorecard has none for) are ``FLOAT``, NaN where absent.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from coopetition.tables import BOOL, FLOAT, INT, STR, Schema, read_table

_AT = {"step": INT, "sequences": INT}

SCHEMAS: dict[str, Schema] = {
    "strategies": {**_AT, "evaluator": STR, "metric": STR, "value": FLOAT},
    "ablation": {**_AT, "evaluator": STR, "unit": STR, "method": STR, "intervention": STR, "metric": STR,
                 "value": FLOAT, "delta": FLOAT},
    "patching": {**_AT, "pair": STR, "kind": STR, "component": STR, "layer": INT, "head": INT, "position": INT,
                 "metric": STR, "value": FLOAT},
    "probes": {**_AT, "evaluator": STR, "target": STR, "layer": INT, "position": INT, "metric": STR, "value": FLOAT},
    "progress": {**_AT, "evaluator": STR, "measure": STR, "layer": INT, "head": INT, "value": FLOAT},
    "progress_attention": {**_AT, "evaluator": STR, "layer": INT, "head": INT, "query_pos": INT, "key_pos": INT,
                           "value": FLOAT},
    "clamp": {**_AT, "evaluator": STR, "intervention": STR, "condition": STR, "head": STR, "strength": FLOAT,
              "metric": STR, "value": FLOAT},
    "circuit": {**_AT, "pair": STR, "sender": STR, "receiver": STR, "input": STR, "method": STR, "effect": FLOAT},
    "scorecard": {**_AT, "check": STR, "paper": FLOAT, "measured": FLOAT, "unit": STR, "low": FLOAT, "high": FLOAT,
                  "section": STR},
    "llc": {**_AT, "chain": INT, "llc_mean": FLOAT, "llc_std": FLOAT, "init_loss": FLOAT, "loss_mean": FLOAT,
            "loss_min": FLOAT, "loss_max": FLOAT, "llc_first_half": FLOAT, "llc_second_half": FLOAT, "nbeta": FLOAT,
            "failed": BOOL},
    "llc_trace": {**_AT, "chain": INT, "sgld_step": INT, "draw": INT, "loss": FLOAT},
}
SKIPPED_SCHEMA: Schema = {"step": INT, "file": STR, "reason": STR}  # skipped_checkpoints.csv


def read_analysis_table(out: Path, name: str) -> pd.DataFrame:
    """``out/{name}.csv`` with its declared columns and dtypes (header-only: an empty frame of those dtypes)."""
    return read_table(Path(out) / f"{name}.csv", SCHEMAS[name], f"{name}.csv")


def read_skipped(out: Path) -> pd.DataFrame:
    """``out/skipped_checkpoints.csv``: the checkpoints an analysis skipped (step, file, reason); usually none."""
    return read_table(Path(out) / "skipped_checkpoints.csv", SKIPPED_SCHEMA)
