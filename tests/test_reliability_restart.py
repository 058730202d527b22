"""``--resume`` on a run with no checkpoint yet starts it from step 0 (one warning line) and ends identical to an
uninterrupted run; it still refuses, in one line with exit 2, a config that is incomplete or forged. Run-time
settings (``--threads``, ``--device``) are allowed on resume and recorded; result-changing flags are refused by
name. A resume of a finished run says so and reports the run's final scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from coopetition.cli import main
from coopetition.store.reader import RunReader
from tests.conftest import tiny_run_config
from tests.test_reliability_resume import assert_identical

pytestmark = pytest.mark.e2e


def _unstarted(trained_run: Path, tmp_path: Path, keep_eval_sets: bool = True) -> Path:
    """``trained_run`` as a kill before its first checkpoint commit leaves it: config (and eval sets) recorded,
    no checkpoint listed, stale tables and unlisted checkpoint files on disk."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest = {"checkpoints": [], "resume": [],
                **({"eval_sets": manifest["eval_sets"]} if keep_eval_sets else {})}
    (run / "manifest.json").write_text(json.dumps(manifest))
    if not keep_eval_sets:
        (run / "eval_sets.safetensors").unlink()
    return run


@pytest.mark.parametrize("keep_eval_sets", [True, False])
def test_resume_with_no_checkpoint_yet_starts_from_step_0_and_ends_identical(trained_run, tmp_path, capsys,
                                                                            keep_eval_sets):
    run = _unstarted(trained_run, tmp_path, keep_eval_sets)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no checkpoint yet: starting it from step 0 with its recorded config" in err[0]
    assert_identical(run, trained_run)
    assert [s.how for s in RunReader(run).manifest().sessions][-1] == "restart"


@pytest.mark.parametrize("edit, why", [
    (lambda c: c["derived"].update(n_parameters=c["derived"]["n_parameters"] + 1), "derived.n_parameters"),
    (lambda c: c["derived"].update(bank_fingerprint="0" * 16), "fingerprint"),
    (lambda c: c["derived"].pop("n_labels"), "lacks derived"),
    (lambda c: c.pop("derived"), "no 'derived' section"),
    (lambda c: c["config"]["seeds"].update(init=c["config"]["seeds"]["init"] + 1), "records seeds"),
    (lambda c: c["config"]["train"].update(steps="many"), "config.json"),
    (lambda c: c.pop("config"), "no 'config' section"),
])
def test_resume_with_no_checkpoint_refuses_an_incomplete_or_forged_config(trained_run, tmp_path, capsys, edit, why):
    run = _unstarted(trained_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("coopetition: error:") and why in err[0], err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing changed


def test_resume_allows_run_time_settings_and_records_them(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["train", "--resume", str(run), "--threads", "2", "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "already complete at step 30; nothing to train" in out
    flip = [line.split() for line in out.splitlines() if line.startswith("flip ")]  # the final scores' table row
    assert "{}" not in out and len(flip) == 1 and 0.0 <= float(flip[0][1]) <= 1.0, out
    session = RunReader(run).manifest().sessions[-1]
    assert (session.how, session.threads, session.device, session.from_step) == ("resume", 2, "cpu", 30)
    assert_identical(run, trained_run)


@pytest.mark.parametrize("flags, named", [(["--lr", "0.1"], "--lr"), (["--set", "train.lr=0.1"], "--set"),
                                          (["--preset", "quick"], "--preset"),
                                          (["--steps", "9", "--threads", "1"], "--steps")])
def test_resume_refuses_result_changing_flags_by_name(trained_run, capsys, flags, named):
    assert main(["train", "--resume", str(trained_run), *flags, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and "would change its results" in err[0]
    assert "--threads" in err[0]  # says what is allowed


def test_a_folder_left_by_a_kill_before_the_config_restarts_with_the_same_command(tmp_path, capsys):
    """Killed right after the run dir appeared: only an (unheld) lock and a temporary are in it. ``--resume`` says
    why it cannot in one line; the creating command counts the folder as empty."""
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("12345")
    (run / ".config.json.abc.tmp").write_text("{")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no config.json" in err[0] and "start it again" in err[0]
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny_run_config(steps=2, checkpoint_schedule="every:1").to_dict()))
    argv = ["train", "--config", str(config), "--run-dir", str(run), "--no-progress"]
    (run / "notes.txt").write_text("mine")  # anything else in it: not a leftover, still refused without --overwrite
    assert main(argv) == 2
    (run / "notes.txt").unlink()
    assert main(argv) == 0
    assert not list(run.glob(".*.tmp")) and RunReader(run).checkpoints(verify=True)
