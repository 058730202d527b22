"""Validation at the boundary, one rule per case: a bad config value, cross-field rule or data file is one line on
stderr naming the problem, exit code 2, and no run dir."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from coopetition.cli import main
from tests.conftest import tiny_run_config


@pytest.fixture
def tiny_file(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_run_config(steps=2).to_dict()))
    return path


def refuse(tmp_path, capsys, argv, message):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not run.exists()


@pytest.mark.parametrize("overrides, message", [
    (["--set", "task.mixture.0.burstiness=2"], "2B <= N"),                      # 2B <= N with a distractor
    (["--set", "bank.class_split=[40, 4, 0]"], "must sum to bank.classes = 48"),  # splits sum to the bank
    (["--set", "bank.exemplar_split=[6, 1, 0]"], "must sum to bank.exemplars = 6"),
    (["--set", "eval.suite=\"ctx8\"", "--set", "model.max_seq_len=9"], "eval.suite 'ctx8'"),
    (["--set", "train.steps=true"], "train.steps must be int"),               # JSON true is not 1
    (["--set", "train.lr=true"], "train.lr must be float"),
    (["--lr", "nan"], "train.lr"),
    (["--weight-decay", "inf"], "train.weight_decay must be finite"),
    (["--set", "task.zipf_alpha=Infinity"], "task.zipf_alpha"),
    (["--set", "task.mixture_weights=[NaN]"], "task.mixture_weights"),
    (["--set", "bank.within_class_noise=Infinity"], "bank.within_class_noise"),
    (["--device", "cuda:x"], "train.device"),
    (["--seed", "-1"], "seeds.init"),
    (["--eval-seed", str(2**40)], "seeds.eval"),
    (["--threads", "0"], "train.threads"),
    (["--checkpoints", "every:1", "--steps", "2000000000"], "at most 1000000"),  # a typo, not a run
    (["--evals", "log:1G"], "at most 1000000"),
    (["--set", "task.class_split=\"tset\""], "task.class_split"),
    (["--set", "model.d_model=15"], "divisible"),
    (["--classes", "2"], "bank.classes"),
    (["--set", "bank.dim=100000000"], "exceeds"),
    (["--set", "task.mixture.0.fewshot_labels=-1"], "fewshot_labels"),
    (["--set", "task.mixture=[]"], "task.mixture"),
    (["--set", "task={\"mixture\": 3}"], "bad config"),
    (["--resume", "a", "--run-dir", "b"], "different runs"),
])
def test_bad_config_values_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, tiny_file, overrides, message):
    refuse(tmp_path, capsys, ["--config", str(tiny_file), *overrides], message)


def bank_file(tmp_path, name, array):
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, array)
    elif name.endswith(".npz"):
        np.savez(path, a=array, b=array)
    else:
        save_file({"feat": array}, str(path))
    return path


@pytest.mark.parametrize("name, array, message", [
    ("rank2.npy", np.zeros((48, 16), np.float32), "must be [classes, exemplars, dim]"),
    ("nan.npy", np.full((48, 6, 16), np.nan, np.float32), "NaN or inf"),
    ("inf.safetensors", np.full((48, 6, 16), np.inf, np.float32), "NaN or inf"),
    ("huge.npy", np.full((48, 6, 16), 1e300, np.float64), "NaN or inf"),  # overflows float32
    ("two_classes.npy", np.zeros((2, 6, 16), np.float32), "too small"),
    ("no_exemplars.npy", np.zeros((48, 0, 16), np.float32), "too small"),
    ("text.npy", np.array([["a"] * 16] * 6 * 48).reshape(48, 6, 16), "numeric array"),
    ("two_arrays.npz", np.zeros((48, 6, 16), np.float32), "bank.array_key"),
    ("bank.txt", np.zeros(1), "unsupported bank file type"),
])
def test_bad_bank_files_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, tiny_file, name, array, message):
    if name.endswith(".txt"):
        path = tmp_path / name
        path.write_text("1 2 3")
    else:
        path = bank_file(tmp_path, name, array)
    refuse(tmp_path, capsys, ["--config", str(tiny_file), "--bank", str(path)], message)


def test_a_bank_too_small_for_its_splits_is_refused(tmp_path, capsys, tiny_file):
    path = bank_file(tmp_path, "small.npy", np.random.default_rng(0).normal(size=(10, 6, 16)).astype(np.float32))
    refuse(tmp_path, capsys, ["--config", str(tiny_file), "--bank", str(path),
                              "--set", "bank.class_split=[48, 0, 0]"], "must sum to the bank's 10 classes")
    refuse(tmp_path, capsys, ["--config", str(tiny_file), "--bank", str(path),
                              "--set", "bank.exemplar_split=[3, 0, 4]"], "must sum to the bank's 6 exemplars")
    refuse(tmp_path, capsys, ["--config", str(tiny_file), "--bank", str(path),
                              "--set", "bank.class_split=[1, 0, 9]"], "needs 2")


def test_a_good_bank_file_trains(tmp_path, capsys, tiny_file):
    path = bank_file(tmp_path, "good.npy", np.random.default_rng(0).normal(size=(48, 6, 16)).astype(np.float32))
    assert main(["train", "--run-dir", str(tmp_path / "run"), "--no-progress", "--config", str(tiny_file),
                 "--bank", str(path)]) == 0
