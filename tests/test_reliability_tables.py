"""Every table reader accepts a table with its header and no rows, with the dtypes the same table has when it holds
rows (``coopetition.tables.read_table``, the one reader): eval.csv, train.csv, eval_zoom.csv, the network run read
by the toy, skipped_checkpoints.csv and every analysis table. A row that breaks its column's kind is still refused."""

from __future__ import annotations

import hashlib
import json
import shutil

import pandas as pd
import pytest

from coopetition.analysis.tables import SKIPPED_SCHEMA, read_analysis_table, read_skipped, schemas
from coopetition.errors import DataError
from coopetition.store.reader import EVAL_SCHEMA, TRAIN_SCHEMA, RunReader
from coopetition.tables import BOOL, FLOAT, INT, STR, empty_table, read_table
from coopetition.toy.fit import read_network_losses

SAMPLE = {INT: "3", FLOAT: "0.5", BOOL: "True", STR: "x"}


def _header(schema) -> str:
    return ",".join(schema) + "\n"


def _one_row(schema) -> str:
    return _header(schema) + ",".join(SAMPLE[k] for k in schema.values()) + "\n"


def _dtypes(frame: pd.DataFrame) -> dict[str, str]:
    return {c: str(d) for c, d in frame.dtypes.items()}


ALL = {"eval": EVAL_SCHEMA, "train": TRAIN_SCHEMA, "skipped_checkpoints": SKIPPED_SCHEMA,
       **{f"analysis {n}": s for n, s in schemas().items()}}


@pytest.mark.parametrize("name", sorted(ALL))
def test_a_header_only_table_reads_as_no_rows_of_the_same_dtypes(tmp_path, name):
    schema = ALL[name]
    (tmp_path / "empty.csv").write_text(_header(schema))
    (tmp_path / "full.csv").write_text(_one_row(schema))
    empty, full = (read_table(tmp_path / f, schema) for f in ("empty.csv", "full.csv"))
    assert len(empty) == 0 and len(full) == 1 and list(empty.columns) == list(schema)
    assert _dtypes(empty) == _dtypes(full) == _dtypes(empty_table(schema))
    kinds = {INT: "int64", FLOAT: "float64", BOOL: "bool"}
    assert all(_dtypes(empty)[c] == kinds[k] for c, k in schema.items() if k in kinds)


def test_a_row_that_breaks_its_columns_kind_is_still_one_line(tmp_path):
    path = tmp_path / "eval.csv"
    for row, why in (("x,32,icl,loss,1.0", "'step' holds non-integers"), ("1,32,icl,loss,high", "'value'"),
                     ("1.5,32,icl,loss,1", "'step' holds non-integers")):
        path.write_text(_header(EVAL_SCHEMA) + row + "\n")
        with pytest.raises(DataError, match=why):
            read_table(path, EVAL_SCHEMA)
    path.write_text("step,value\n")
    with pytest.raises(DataError, match="has columns"):
        read_table(path, EVAL_SCHEMA)


def test_a_run_whose_tables_hold_only_their_headers_reads_as_no_rows(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "eval.csv").write_text(_header(EVAL_SCHEMA))
    (run / "train.csv").write_text(_header(TRAIN_SCHEMA))
    header = _header(EVAL_SCHEMA).encode()
    (run / "eval_zoom.csv").write_bytes(header)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["zoom_eval"] = {"file": "eval_zoom.csv", "bytes": len(header),
                             "sha256": hashlib.sha256(header).hexdigest()}
    (run / "manifest.json").write_text(json.dumps(manifest))
    reader = RunReader(run)
    full = RunReader(trained_run)
    for got, like in ((reader.eval_table(), full.eval_table()), (reader.zoom_eval_table(), full.eval_table()),
                      (reader.eval_table(zoomed=False), full.eval_table()), (reader.train_table(), full.train_table())):
        assert len(got) == 0 and _dtypes(got) == _dtypes(like)
    # the toy's reader of a network run: no rows is "not enough rows", not a dtype error
    with pytest.raises(DataError, match="needs >= 4 rows"):
        read_network_losses(run)


def test_eval_zoom_rows_past_the_manifests_record_are_not_read(trained_run, tmp_path):
    """A zoom killed after writing eval_zoom.csv but before its manifest commit: the extra bytes are not the run's."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    committed = (_header(EVAL_SCHEMA) + "5,80,icl,loss,1.5\n").encode()
    (run / "eval_zoom.csv").write_bytes(committed + b"7,112,icl,loss,9\n")
    assert RunReader(run).zoom_eval_table() is None  # not listed: never zoomed as far as readers know
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["zoom_eval"] = {"file": "eval_zoom.csv", "bytes": len(committed),
                             "sha256": hashlib.sha256(committed).hexdigest()}
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert RunReader(run).zoom_eval_table()["step"].tolist() == [5]
    (run / "eval_zoom.csv").write_bytes(committed[:-3])
    with pytest.raises(DataError, match="not the ones the manifest recorded"):
        RunReader(run).zoom_eval_table()


def test_skipped_checkpoints_and_analysis_tables_read_header_only(tmp_path):
    pd.DataFrame([], columns=list(SKIPPED_SCHEMA)).to_csv(tmp_path / "skipped_checkpoints.csv", index=False)
    skipped = read_skipped(tmp_path)  # what report_skipped writes when nothing was skipped
    assert len(skipped) == 0 and str(skipped["step"].dtype) == "int64"
    for name, schema in schemas().items():
        (tmp_path / f"{name}.csv").write_text(_header(schema))
        assert len(read_analysis_table(tmp_path, name)) == 0
