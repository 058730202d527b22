"""``coopetition zoom``: a window re-trained from a saved state gives exactly the checkpoints and eval rows of a run
that had the dense schedule from the start; everything the run had keeps its bytes; a machine that does not
reproduce the run, a run still being written and bad input are one-line refusals that write nothing."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from coopetition.store.run import Run
from coopetition.cli import main
from coopetition.store.checkpoint import file_sha256
from coopetition.store.reader import RunReader
from coopetition.store.writer import RunWriter
from coopetition.train.loop import train
from coopetition.train.schedule import kept_resume_steps
from coopetition.zoom.window import Window, event_steps, parse_window, phase_change, window_steps
from tests.conftest import tiny_run_config

SPARSE = dict(steps=30, checkpoint_schedule="every:10", eval_schedule="every:15", resume_schedule="at:10")
DENSE = dict(steps=30, checkpoint_schedule="every:1", eval_schedule="every:1")


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _pair(tmp_path_factory, name: str, **changes) -> tuple[Path, Path]:
    """The same run trained twice: sparse checkpoints (resume state kept at 10) and dense ones from the start."""
    root = tmp_path_factory.mktemp(name)
    runs = []
    for label, schedule in (("sparse", SPARSE), ("dense", DENSE)):
        config = tiny_run_config(**schedule, **changes.get("train", {}))
        if "interventions" in changes:
            config = replace(config, interventions=changes["interventions"])
        train(config, root / label, progress=False)
        runs.append(root / label)
    return runs[0], runs[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return _pair(tmp_path_factory, "zoom")


def _zoom(run: Path, window: str, checkpoints: str = "every:2", *extra: str) -> int:
    return main(["zoom", str(run), "--window", window, "--checkpoints", checkpoints, "--no-progress", *extra])


def _assert_matches_dense(run: Path, dense: Path, steps: list[int]) -> None:
    for step in steps:
        name = f"checkpoints/step_{step:011d}.safetensors"
        assert (run / name).read_bytes() == (dense / name).read_bytes(), step
    listed = {c.step: c.sha256 for c in RunReader(run).checkpoints(verify=True)}
    assert {s: listed[s] for s in steps} == {s: file_sha256(dense / f"checkpoints/step_{s:011d}.safetensors")
                                             for s in steps}
    zoomed = RunReader(run).zoom_eval_table()
    truth = pd.read_csv(dense / "eval.csv")
    truth = truth[truth.step.isin(zoomed.step.unique())].reset_index(drop=True)
    pd.testing.assert_frame_equal(zoomed.sort_values(["step"], kind="stable").reset_index(drop=True), truth)


def test_zoom_from_the_seeds_gives_the_dense_runs_checkpoints_and_keeps_every_file(runs, tmp_path, capsys):
    sparse, dense = runs
    run = tmp_path / "run"
    shutil.copytree(sparse, run)
    before = _files(run)
    assert _zoom(run, "2:8") == 0
    out = capsys.readouterr().out
    assert "4 new checkpoints" in out and "re-trained steps 0..10 from the seeds" in out
    assert "2 existing checkpoints reproduced" in out  # step 0 (rebuilt from the seeds) and 10
    _assert_matches_dense(run, dense, [2, 4, 6, 8])
    after = _files(run)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"manifest.json"}
    old, new = (json.loads(x["manifest.json"]) for x in (before, after))
    assert all(entry in new["checkpoints"] for entry in old["checkpoints"]) and old["resume"] == new["resume"]
    assert set(after) - set(before) == {f"checkpoints/step_{s:011d}.safetensors" for s in (2, 4, 6, 8)} | {
        "eval_zoom.csv"}
    loaded = Run.open(run)  # what analyze sees: the zoomed checkpoints and the merged eval log
    assert [c.step for c in loaded.checkpoints] == [0, 2, 4, 6, 8, 10, 20, 30]
    assert sorted(loaded.eval_table().step.unique()) == [0, 2, 4, 6, 8, 15, 30]
    # zooming what is there already is a no-op; a second zoom appends, keeping eval_zoom.csv's bytes as a prefix
    assert _zoom(run, "2:8") == 0 and "nothing to do" in capsys.readouterr().out and _files(run) == after
    assert _zoom(run, "0:9", "at:1,3") == 0
    assert (run / "eval_zoom.csv").read_bytes().startswith(after["eval_zoom.csv"])
    _assert_matches_dense(run, dense, [1, 2, 3, 4, 6, 8])
    zoomed = (run / "eval_zoom.csv").read_bytes()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0  # --resume keeps what zooms added
    assert [c.step for c in RunReader(run).checkpoints(verify=True)] == [0, 1, 2, 3, 4, 6, 8, 10, 20, 30]
    assert (run / "eval_zoom.csv").read_bytes() == zoomed


def test_zoom_starts_from_the_nearest_kept_resume_state(runs, tmp_path, capsys):
    sparse, dense = runs
    assert [e.step for e in RunReader(sparse).manifest().resume] == [10, 20, 30]  # at:10, then the newest two
    run = tmp_path / "run"
    shutil.copytree(sparse, run)
    assert _zoom(run, "11:19", "every:2", "--evals", "at:13") == 0
    out = capsys.readouterr().out
    assert "re-trained steps 10..20 from the resume state at step 10" in out and "1 new eval steps" in out
    _assert_matches_dense(run, dense, [12, 14, 16, 18])
    assert sorted(RunReader(run).zoom_eval_table().step.unique()) == [13]


def test_a_run_with_an_intervention_and_init_from_zooms_the_same_way(runs, tmp_path_factory, tmp_path):
    source, _ = runs
    sparse, dense = _pair(tmp_path_factory, "init", train={"init_from": f"{source}@30"},
                          interventions=("ablate:0:1",))
    run = tmp_path / "run"
    shutil.copytree(sparse, run)
    assert _zoom(run, "4:6") == 0
    _assert_matches_dense(run, dense, [4, 6])


def test_a_machine_that_does_not_reproduce_the_run_is_refused_and_nothing_is_written(runs, tmp_path, capsys):
    """Stand-in for another machine: the run's step-10 checkpoint (and its manifest entry) are those of a
    different trajectory, so the re-trained step 10 cannot match."""
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    other = run / "checkpoints" / "step_00000000020.safetensors"
    shutil.copy(other, run / "checkpoints" / "step_00000000010.safetensors")
    manifest = json.loads((run / "manifest.json").read_text())
    for entry in manifest["checkpoints"]:
        if entry["step"] == 10:
            entry["sha256"], entry["bytes"] = file_sha256(other), other.stat().st_size
    (run / "manifest.json").write_text(json.dumps(manifest))
    before = _files(run)
    assert _zoom(run, "2:8") == 2
    err = capsys.readouterr().err.strip()
    assert "does not reproduce the run" in err and "step 10" in err and len(err.splitlines()) == 1
    assert _files(run) == before


def test_a_run_still_being_written_is_refused(runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    holder = RunWriter.reopen(run)  # the lock a training process holds
    try:
        before = _files(run)
        assert _zoom(run, "2:8") == 2
        err = capsys.readouterr().err.strip()
        assert "still being written" in err and len(err.splitlines()) == 1
        assert _files(run) == before
    finally:
        holder.close()


@pytest.mark.parametrize("argv, message", [
    (["--window", "0:40", "--checkpoints", "every:2"], "past the run's last checkpoint (30)"),
    (["--window", "8:2", "--checkpoints", "every:2"], "is after the last"),
    (["--window", "icl_peak±5", "--checkpoints", "every:2"], "has no icl_peak"),
    (["--window", "phase_change+-5", "--checkpoints", "every:2"], "has no phase_change"),
    (["--window", "crossover", "--checkpoints", "every:2"], "give a width"),
    (["--window", "peak±5", "--checkpoints", "every:2"], "use A:B or EVENT"),
    (["--window", "2:8", "--checkpoints", "at:25"], "names no step in the window"),
    (["--window", "2:8", "--checkpoints", "every:2", "--evals", "at:30"], "names no step in the window"),
    (["--window", "2:8", "--checkpoints", "every:0"], "interval must be > 0"),
    (["--window", "2:8", "--checkpoints", "every:2", "--threads", "0"], "--threads must be in"),
])
def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, capsys, argv, message):
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    eval_csv = pd.read_csv(run / "eval.csv")  # a flat Flip curve: no ICL peak, no phase change
    eval_csv.loc[eval_csv.evaluator == "flip", "value"] = 0.3
    eval_csv.to_csv(run / "eval.csv", index=False)
    before = _files(run)
    assert main(["zoom", str(run), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert _files(run) == before


def _flip(steps, values) -> pd.DataFrame:
    return pd.DataFrame({"step": steps, "sequences": [s * 10 for s in steps], "evaluator": "flip",
                         "metric": "in_context_acc", "value": values})


def test_phase_change_is_the_steepest_real_change_of_flip():
    """Steps 0-1-2 move by 0.01-0.02 per step (noise, below PHASE_MIN_CHANGE); 100->200 rises 0.35, steeper per
    step than 2->100 (0.11 over 98): the event is the midpoint, 150. The steeper fall 300->400 is not a rise."""
    table = _flip([0, 1, 2, 100, 200, 300, 400], [0.5, 0.51, 0.49, 0.6, 0.95, 0.96, 0.3])
    assert phase_change(table)["step"] == 150
    assert event_steps(table) == {"icl_peak": 300, "crossover": 370, "phase_change": 150}
    assert phase_change(_flip([0, 1, 2, 100], [0.5, 0.52, 0.5, 0.53])) is None


def test_an_event_window_is_clipped_to_the_run_and_takes_both_spellings():
    table = _flip([0, 100, 200, 300], [0.4, 0.5, 0.9, 0.8])
    assert parse_window("icl_peak±150", table, 16, 300) == Window(50, 300, "icl_peak 200 ± 150: steps 50..300")
    assert parse_window("icl_peak+-150", table, 16, 300) == parse_window("icl_peak±150", table, 16, 300)
    assert parse_window("icl_peak±1k", table, 16, 300).first == 0
    assert parse_window("1.6kseq:200", table, 16, 300) == Window(100, 200, "steps 100..200")  # 1600 seq / 16
    window = Window(10, 30, "w")
    assert window_steps("every:10+at:13", window, 30, 16, "--checkpoints") == [10, 13, 20]  # 30 is the implicit end


def test_resume_schedule_keeps_states_at_checkpoints():
    assert kept_resume_steps("every:10", None, 300, 1) == frozenset({100, 200, 300})  # every 10th checkpoint
    assert kept_resume_steps("every:10", "none", 300, 1) == frozenset()
    assert kept_resume_steps("every:10", "at:15,95", 100, 1) == frozenset({10, 90, 100})  # the checkpoint before


def test_a_zoom_interrupted_before_its_commit_leaves_the_run_as_it_was(runs, tmp_path, monkeypatch):
    """Interrupted after staging every checkpoint, before the commit: the staged files go, the lock goes, nothing
    else changed; a temporary left by a killed zoom is removed by the next writer (here, the next zoom)."""
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    before = _files(run)

    def interrupted(self, staged, rows):
        assert len(staged) == 4 and all(path.exists() for path, _ in staged)
        raise KeyboardInterrupt

    monkeypatch.setattr(RunWriter, "commit_zoom", interrupted)
    assert _zoom(run, "2:8") == 130  # the CLI's exit code for an interrupt
    assert _files(run) == before
    monkeypatch.undo()
    (run / "checkpoints" / ".step_00000000004.safetensors.zoom.tmp").write_bytes(b"half a file")
    assert _zoom(run, "2:8") == 0
    assert not list((run / "checkpoints").glob(".*.tmp"))
