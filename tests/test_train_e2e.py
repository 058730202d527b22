"""A real (tiny) training run end to end: files, tables, checkpoints, resume, and the CLI."""

import json
import re

import pandas as pd
import pytest
import torch

from coopetition.cli import main
from coopetition.store.checkpoint import load_tensors
from coopetition.store.reader import RunReader
from coopetition.train.loop import resume_config, train
from coopetition.store.build import derive_sizes, load_run_bank, model_for
from tests.conftest import tiny_run_config

pytestmark = pytest.mark.e2e


def test_training_writes_a_complete_run(tmp_path, tiny_config):
    result = train(tiny_config, tmp_path / "run", progress=False)
    run = RunReader.open(result.run_dir)
    meta = json.loads((run.path / "config.json").read_text())
    assert meta["config"]["train"]["lr"] == 1e-3 and meta["seeds"] == {"init": 5, "train": 2, "eval": 1}
    assert "torch" in meta["versions"] and meta["derived"]["n_labels"] == 48
    assert meta["derived"]["class_split"] == [48, 0, 0] and meta["derived"]["splits_from"] == "whole bank"
    assert [c.step for c in run.checkpoints(verify=True)] == [0, 10, 20, 30]
    frame = run.eval_table()
    assert list(frame.columns) == ["step", "sequences", "evaluator", "metric", "value"]
    assert sorted(frame.step.unique()) == [0, 15, 30]
    assert set(frame.evaluator) == {"train", "icl", "flip", "ciwl", "iwl"}
    assert (frame.sequences == frame.step * 16).all()
    assert not (run.path / ".lock").exists()
    # a checkpoint reloads into an identical model without running any code
    tensors, info = load_tensors(run.checkpoints()[-1].path)
    assert info["step"] == 30 and info["sequences"] == 480
    model = model_for(tiny_config, derive_sizes(tiny_config, load_run_bank(tiny_config)))
    model.load_state_dict(tensors)
    assert result.final_eval[("train", "loss")] == pytest.approx(
        frame.query("step == 30 and evaluator == 'train' and metric == 'loss'").value.item(), rel=1e-4)


def test_training_reduces_the_loss(tmp_path):
    config = tiny_run_config(steps=150, checkpoint_schedule="every:150", eval_schedule="every:150", lr=3e-3)
    train(config, tmp_path / "run", progress=False)
    loss = pd.read_csv(tmp_path / "run" / "train.csv").query("metric == 'loss'").value
    assert loss.iloc[-1] < 0.7 * loss.iloc[0]


def test_resume_continues_to_the_same_weights(tmp_path):
    full = tiny_run_config(steps=20, checkpoint_schedule="every:10", eval_schedule="every:5")
    train(full, tmp_path / "full", progress=False)
    part = tiny_run_config(steps=10, checkpoint_schedule="every:10", eval_schedule="every:5")
    train(part, tmp_path / "part", progress=False)
    # extend the interrupted run's recorded target, then resume it
    meta = json.loads((tmp_path / "part" / "config.json").read_text())
    meta["config"]["train"]["steps"] = 20
    (tmp_path / "part" / "config.json").write_text(json.dumps(meta))
    train(resume_config(tmp_path / "part"), tmp_path / "part", resume=True, progress=False)
    a, _ = load_tensors(tmp_path / "full" / "checkpoints" / "step_00000000020.safetensors")
    b, _ = load_tensors(tmp_path / "part" / "checkpoints" / "step_00000000020.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    full_eval = pd.read_csv(tmp_path / "full" / "eval.csv")
    part_eval = pd.read_csv(tmp_path / "part" / "eval.csv")
    pd.testing.assert_frame_equal(full_eval, part_eval, atol=1e-5)


def test_cli_train_runs_offline_and_reports(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text("""
[bank]
classes = 48
exemplars = 6
dim = 16
[model]
d_model = 16
n_heads = 2
[train]
steps = 12
batch_size = 8
lr = 1e-3
checkpoint_schedule = "every:6"
threads = 1
[eval]
n_seqs = 32
max_exemplars = 3
""")
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "r"), "--no-progress"]) == 0
    assert re.search(r"^train +[0-9.]+ +[0-9.]+ +[0-9.]+$", capsys.readouterr().out, re.M)  # the summary table
    assert [c.step for c in RunReader.open(tmp_path / "r").checkpoints()] == [0, 6, 12]
