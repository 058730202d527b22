"""Runs written by the previous release (``HookedTransformer``-based model) under TransformerLens 2.18 and 3.9 load
and analyse to the numbers that release computed from them (``tests/data/old_runs/README.md``), whatever
TransformerLens line is installed now; they also resume."""

import gzip
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

DATA = Path(__file__).parent / "data" / "old_runs"
TABLES = ("progress", "progress_attention", "patching", "strategies", "circuit")
ANALYZE = ["--checkpoint-range", "20:", "--analyses", "progress,patching,strategies,circuit", "--n-seqs", "32",
           "--patch-seqs", "16", "--workers", "1", "--no-progress"]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.run([sys.executable, "-m", "coopetition", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def _compare(got: pd.DataFrame, want: pd.DataFrame, table: str) -> None:
    """Same rows (matched on every non-value column) and values within float32 rounding of reordered sums."""
    assert list(got.columns) == list(want.columns), table
    values = [c for c in want.columns if pd.api.types.is_float_dtype(want[c])]
    keys = [c for c in want.columns if c not in values]
    merged = want.merge(got, on=keys, how="outer", suffixes=("_want", "_got"), indicator=True)
    assert (merged["_merge"] == "both").all(), f"{table}: rows differ"
    for column in values:
        a, b = merged[f"{column}_want"].astype(float), merged[f"{column}_got"].astype(float)
        close = (a - b).abs() <= 1e-4 * (1 + a.abs())
        assert (close | (a.isna() & b.isna())).all(), f"{table}.{column}: {(a - b).abs().max()}"


@pytest.mark.parametrize("tag", ["tl2", "tl3"])
def test_an_old_run_analyses_to_the_same_numbers(tag, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(DATA / tag, run)
    result = _run(["analyze", str(run), *ANALYZE])
    assert result.returncode == 0 and result.stderr == "", result.stderr
    for table in TABLES:
        want = pd.read_csv(io.BytesIO(gzip.decompress((DATA / f"expected_{tag}" / f"{table}.csv.gz").read_bytes())))
        _compare(pd.read_csv(run / "analysis" / f"{table}.csv"), want, table)


@pytest.mark.parametrize("tag", ["tl2", "tl3"])
def test_an_old_run_resumes(tag, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(DATA / tag, run)
    from coopetition.store.reader import RunReader
    from coopetition.train.loop import train
    from tests.conftest import tiny_run_config

    train(tiny_run_config(steps=40), run, progress=False, resume=True)
    assert 40 in [c.step for c in RunReader(run).checkpoints()]
