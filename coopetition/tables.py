"""The one CSV table reader: a bounded read, the writer's columns, and each column's declared kind.

Every tidy table the package writes (``eval.csv``, ``train.csv``, ``eval_zoom.csv``, ``skipped_checkpoints.csv``,
the analysis tables) is read back through ``read_table``. A table with its header and no rows is a valid table (a
run killed before its first log row, an analysis that skipped every checkpoint): pandas alone reads such a file
with every column as ``object``, so a check such as "step holds integers" refused it, and code downstream got
columns of the wrong kind. Here each column has a declared kind (``INT``, ``FLOAT``, ``BOOL``, ``STR``) and the
frame has it whether it holds rows or not; a row that does not fit its column's kind is a one-line DataError naming
the file and column. A leaf module (pandas and ``coopetition.bounded`` only), so the store, the analyses, the plots
and the toy can all use it.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from coopetition.bounded import read_bytes
from coopetition.errors import DataError

INT, FLOAT, BOOL, STR = "int", "float", "bool", "str"
MAX_TABLE_BYTES = 256 << 20

Schema = dict[str, str]  # column -> kind, in the writer's column order


def read_table(path: Path, schema: Schema, what: str | None = None, max_bytes: int = MAX_TABLE_BYTES,
               data: bytes | None = None) -> pd.DataFrame:
    """``path`` (or its already-read ``data``) as a frame with exactly ``schema``'s columns, in order, each of its
    declared kind: ``INT`` int64 (no missing values), ``FLOAT`` float64 (integers widened, NaN allowed), ``BOOL``
    bool, ``STR`` pandas' default string dtype (``object`` on pandas < 3). A header-only file gives an empty frame
    of the same dtypes."""
    what = what or Path(path).name
    if data is None:
        data = read_bytes(Path(path), what, max_bytes)
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype={c: str for c, k in schema.items() if k == STR})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"cannot read {path}: {str(err).strip().splitlines()[0]}") from None
    columns = list(schema)
    if list(frame.columns) != columns:
        raise DataError(f"{path} has columns {_short(list(frame.columns))}, expected {columns}")
    empty = frame.empty
    for column, kind in schema.items():
        series = frame[column]
        if kind == INT:
            if not (empty or (pd.api.types.is_integer_dtype(series) and not pd.api.types.is_bool_dtype(series))):
                raise DataError(f"{path}: column {column!r} holds non-integers")
            frame[column] = series.astype("int64")
        elif kind == FLOAT:
            if not (empty or (pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series))):
                raise DataError(f"{path}: column {column!r} holds non-numbers")
            frame[column] = series.astype("float64")
        elif kind == BOOL:
            if not (empty or pd.api.types.is_bool_dtype(series)):
                raise DataError(f"{path}: column {column!r} holds values other than True/False")
            frame[column] = series.astype("bool")
        elif kind != STR:
            raise ValueError(f"unknown column kind {kind!r} for {column!r}")
    return frame


def empty_table(schema: Schema) -> pd.DataFrame:
    """A frame with no rows and ``schema``'s columns and dtypes (what ``read_table`` gives for a header-only file)."""
    header = (",".join(schema) + "\n").encode()
    return read_table(Path("<empty>"), schema, data=header)


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
