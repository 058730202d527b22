"""The sweep end to end at CI size: four seeds of `quick` (tiny bank and model, 20 steps) through submitit's local
executor (real subprocesses) and its debug executor, aggregated; status; resumption of an interrupted point."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coopetition.cli import main
from coopetition.store.writer import RunWriter

pytestmark = pytest.mark.e2e  # real runs (four of them in subprocesses), kept in the default suite

CI_SWEEP = Path(__file__).resolve().parent.parent / "sweeps" / "quick_seeds_ci.toml"
SEEDS = [f"seeds={s}" for s in range(4)]
EVALUATORS = {"train", "icl", "flip", "ciwl", "iwl"}


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The shipped CI sweep file, run unchanged through the local executor (2 runs at a time, 1 thread each)."""
    out = tmp_path_factory.mktemp("sweep") / "local"
    started = time.perf_counter()
    code = main(["sweep", "run", str(CI_SWEEP), "--out", str(out)])
    print(f"\nlocal 4-seed CI sweep: {time.perf_counter() - started:.1f} s")
    assert code == 0
    return out


def fingerprint(run: Path) -> dict[str, tuple[float, str]]:
    files = [run / "manifest.json", *sorted((run / "checkpoints").iterdir())]
    return {f.name: (f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest()) for f in files}


def status_lines(sweep: Path, out: Path, capsys) -> dict[str, str]:
    capsys.readouterr()
    assert main(["sweep", "status", str(sweep), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["point", "run", "dir"]
    return {line.split()[0]: line for line in lines[1:]}


def test_local_sweep_runs_every_seed_through_submitit_and_aggregates(local_sweep):
    ledger = json.loads((local_sweep / "sweep.json").read_text())
    assert [p["name"] for p in ledger["points"]] == SEEDS and ledger["seed_axes"] == ["seeds"]
    for point in ledger["points"]:
        (job,) = point["jobs"]
        assert job["cluster"] == "local" and job["action"] == "start" and job["outcome"] == "done"
        assert (local_sweep / "submitit_logs" / job["job_id"]).is_dir()  # real subprocess, its own log folder
        run = local_sweep / point["run_dir"]
        assert json.loads((run / "config.json").read_text())["config"] == json.loads(json.dumps(point["config"]))

    table = pd.read_csv(local_sweep / "aggregate.csv")
    assert list(table.columns) == ["point", "group", "seeds", "step", "sequences", "evaluator", "metric", "value"]
    per_step = table.groupby("step").size()
    metrics = table["metric"].nunique()
    assert set(per_step.index) == {0, 10, 20} and (per_step == 4 * len(EVALUATORS) * metrics).all()
    assert set(table["evaluator"]) == EVALUATORS and sorted(table["seeds"].unique()) == [0, 1, 2, 3]

    # The summary, checked against the four runs' own eval.csv files.
    summary = pd.read_csv(local_sweep / "summary.csv")
    runs = [pd.read_csv(local_sweep / "runs" / name / "eval.csv") for name in SEEDS]
    def flip(frame, step):
        return frame[(frame["step"] == step) & (frame["evaluator"] == "flip") & (frame["metric"] == "in_context_acc")]

    for step in (10, 20):
        values = [flip(r, step)["value"].item() for r in runs]
        row = flip(summary, step)
        assert row["group"].item() == "all" and row["n"].item() == 4
        assert row["mean"].item() == pytest.approx(np.mean(values), abs=1e-5)
        assert row["std"].item() == pytest.approx(np.std(values, ddof=1), abs=1e-5)
        assert (row["min"].item(), row["max"].item()) == pytest.approx((min(values), max(values)), abs=1e-6)
    assert len(summary) == len(table) / 4

    html = (local_sweep / "sweep.html").read_text()
    assert '"name":"all"' in html and '"fill":"toself"' in html and "plotly.min.js" in html
    assert (local_sweep / "plotly.min.js").stat().st_size > 1_000_000


def test_debug_executor_gives_the_same_runs(local_sweep, tmp_path, capsys):
    out = tmp_path / "debug"
    assert main(["sweep", "run", str(CI_SWEEP), "--out", str(out), "--cluster", "debug"]) == 0
    jobs = [p["jobs"][0] for p in json.loads((out / "sweep.json").read_text())["points"]]
    assert {j["cluster"] for j in jobs} == {"debug"} and {j["outcome"] for j in jobs} == {"done"}
    debug, local = (pd.read_csv(o / "summary.csv") for o in (out, local_sweep))
    pd.testing.assert_frame_equal(debug, local, atol=1e-6)  # same configs, same CPU: same numbers


def test_rerun_continues_only_the_interrupted_point(local_sweep, tmp_path, capsys):
    out = tmp_path / "resume"
    shutil.copytree(local_sweep, out)
    before = pd.read_csv(out / "summary.csv")
    writer = RunWriter.reopen(out / "runs" / "seeds=2")  # as if killed right after its step-10 checkpoint
    writer.truncate_after(10)
    writer.close()
    untouched = {name: fingerprint(out / "runs" / name) for name in SEEDS if name != "seeds=2"}

    states = status_lines(CI_SWEEP, out, capsys)
    assert "partial (step 10 of 20)" in states["seeds=2"]
    assert all(states[name].split()[2] == "done" for name in untouched)
    assert main(["sweep", "run", str(CI_SWEEP), "--out", str(out), "--dry-run"]) == 0
    plan = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[2:]}
    assert plan == {"seeds=0": "skip", "seeds=1": "skip", "seeds=2": "resume", "seeds=3": "skip"}

    assert main(["sweep", "run", str(CI_SWEEP), "--out", str(out), "--cluster", "debug"]) == 0
    assert "1 of 4 runs to debug (1 resume)" in capsys.readouterr().out
    assert {name: fingerprint(out / "runs" / name) for name in untouched} == untouched
    jobs = {p["name"]: p["jobs"] for p in json.loads((out / "sweep.json").read_text())["points"]}
    assert [j["action"] for j in jobs["seeds=2"]] == ["start", "resume"] and jobs["seeds=2"][-1]["outcome"] == "done"
    assert all(len(jobs[name]) == 1 for name in untouched)
    assert all(line.split()[2] == "done" for line in status_lines(CI_SWEEP, out, capsys).values())
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), before, atol=1e-5)  # resume is exact

    assert main(["sweep", "run", str(CI_SWEEP), "--out", str(out)]) == 0  # all done: nothing to submit
    assert "nothing to run" in capsys.readouterr().out


def test_status_shows_running_and_failed_points(tmp_path, capsys):
    bad_bank = tmp_path / "garbage.npy"
    bad_bank.write_bytes(b"not an array")
    sweep = tmp_path / "s.toml"
    sweep.write_text(CI_SWEEP.read_text().replace("seeds = [0, 1, 2, 3]",
                                                  f'seeds = [0]\nbank.source = ["synthetic", "{bad_bank}"]'))
    out = tmp_path / "out"
    assert main(["sweep", "run", str(sweep), "--out", str(out), "--cluster", "debug"]) == 1  # a run failed
    good, bad = "seeds=0__bank.source=synthetic", f"seeds=0__bank.source={str(bad_bank).replace('/', '-')}"
    states = status_lines(sweep, out, capsys)
    assert states[good].split()[2] == "done" and states[bad].split()[2] == "failed"
    assert "DataError: cannot read exemplar bank" in states[bad]  # the job's own exception, one line

    writer = RunWriter.reopen(out / "runs" / good)  # a live writer holds the run
    try:
        assert "running (step 20 of 20)" in status_lines(sweep, out, capsys)[good]
    finally:
        writer.close()

    assert main(["sweep", "aggregate", str(sweep), "--out", str(out)]) == 0
    assert f"left out, unfinished: {bad}" in capsys.readouterr().out
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["group"]) == {"bank.source=synthetic"} and set(summary["n"]) == {1}
    assert summary["std"].isna().all()  # one seed: no spread
