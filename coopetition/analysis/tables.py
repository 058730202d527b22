"""Column kinds of every table ``analyze`` writes, so a table read back (``replot``, a user's script) has its
dtypes whether it holds rows or none (``coopetition.tables.read_table``).

An analysis declares each table's columns with their kinds (``Analysis.tables``: column -> kind, as the writer
produces them; ``tests/test_analysis_runner.py`` checks them against a real output), so a new analysis brings its own
schema and nothing here changes. Values that may be missing (a patching effect below the gap threshold, a paper
value the scorecard has none for) are ``FLOAT``, NaN where absent.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from coopetition.tables import INT, STR, Schema, read_table


def schemas() -> dict[str, Schema]:
    """Every registered analysis's tables with their column kinds (``Analysis.tables``)."""
    from coopetition.analysis.registry import REGISTRY

    return {table: schema for cls in REGISTRY.values() for table, schema in cls.tables.items()}


SKIPPED_SCHEMA: Schema = {"step": INT, "file": STR, "reason": STR}  # skipped_checkpoints.csv


def read_analysis_table(out: Path, name: str) -> pd.DataFrame:
    """``out/{name}.csv`` with its declared columns and dtypes (header-only: an empty frame of those dtypes)."""
    return read_table(Path(out) / f"{name}.csv", schemas()[name], f"{name}.csv")


def read_skipped(out: Path) -> pd.DataFrame:
    """``out/skipped_checkpoints.csv``: the checkpoints an analysis skipped (step, file, reason); usually none."""
    return read_table(Path(out) / "skipped_checkpoints.csv", SKIPPED_SCHEMA)
