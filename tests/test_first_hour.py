"""What a newcomer meets in the first hour: the train summary, the progress bar, help vs README, "did you mean",
singular counts and readable output folders."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from coopetition.cli import build_parser, main, summary_table
from coopetition.errors import ConfigError
from coopetition.presets import DEFAULT_PRESET, get_preset
from coopetition.store.atomic import atomic_directory
from coopetition.train.loop import train
from tests.conftest import tiny_run_config

README = Path(__file__).resolve().parents[1] / "README.md"


def test_summary_is_a_table_with_a_dash_for_a_missing_metric():
    text = summary_table({("train", "in_context_acc"): 0.5, ("train", "loss"): 1.25, ("iwl", "acc"): 0.125})
    assert text.splitlines() == ["evaluator  in_context_acc     acc    loss",
                                 "train              0.5000       -  1.2500",
                                 "iwl                     -  0.1250       -"]


def test_progress_bar_ends_at_steps_over_steps(tmp_path, capsys):
    train(tiny_run_config(steps=12, checkpoint_schedule="every:6", eval_schedule="every:6"), tmp_path / "r")
    err = capsys.readouterr().err
    counts = re.findall(r"(\d+)/(\d+) \[", err)
    assert counts and counts[-1] == ("12", "12"), err[-400:]
    assert all(total == "12" for _, total in counts)


def test_help_names_the_readme_default_preset():
    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    preset_help = next(a.help for a in train_parser._actions if "--preset" in a.option_strings)
    assert f"default: {DEFAULT_PRESET}" in preset_help
    assert f"--preset {DEFAULT_PRESET} " in README.read_text() and DEFAULT_PRESET == "quick-circuit"


@pytest.mark.parametrize("typo, guess", [("quik-b256", "quick-b256"), ("c26", "c25"), ("ih42", "ih24")])
def test_unknown_preset_suggests_the_nearest(typo, guess):
    with pytest.raises(ConfigError, match=f"did you mean '{guess}'"):
        get_preset(typo)


def test_unrelated_preset_name_gets_no_guess(capsys):
    assert main(["train", "--preset", "zzzzzz", "--run-dir", "/nonexistent/r"]) == 2
    err = capsys.readouterr().err
    assert "did you mean" not in err and "choose from quick" in err and len(err.strip().splitlines()) == 1


def test_analysed_one_checkpoint_is_singular(trained_run, tmp_path, capsys):
    assert main(["analyze", str(trained_run), "--checkpoint-range", "30", "--analyses", "strategies",
                 "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    assert "analysed 1 checkpoint (steps 30..30)" in capsys.readouterr().out


def test_output_folders_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "out") as tmp:
            (tmp / "table.csv").write_text("step\n0\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
