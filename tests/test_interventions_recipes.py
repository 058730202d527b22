"""The analyses/ recipes run end to end at toy length and write their tables and figures (slow: quick-size bank)."""

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from coopetition.presets import get_preset
from coopetition.train.loop import train

pytestmark = pytest.mark.slow

ANALYSES = Path(__file__).resolve().parent.parent / "analyses"


def recipe(name):
    sys.path.insert(0, str(ANALYSES))
    spec = importlib.util.spec_from_file_location(name, ANALYSES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def short(preset, steps):
    config = get_preset(preset)
    return replace(config, train=replace(config.train, steps=steps, checkpoint_schedule=f"every:{max(steps, 1)}",
                                         eval_schedule=f"every:{max(steps, 1)}", threads=1),
                   eval=replace(config.eval, n_seqs=50))


TINY = ["--steps", "4", "--eval-every", "2", "--eval-seqs", "50"]


def test_cooperation_recipe(tmp_path):
    train(short("quick", 2), tmp_path / "main", progress=False)
    assert recipe("c25_cooperation").main(["--main", f"{tmp_path / 'main'}@last", "--out", str(tmp_path / "out"),
                                           *TINY]) == 0
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert list(summary.run) == ["scratch", "grafted"]
    assert (tmp_path / "out" / "icl_loss.html").stat().st_size > 100_000


def test_ciwl_source_recipes(tmp_path):
    train(short("ciwl-only", 2), tmp_path / "ciwl", progress=False)
    out = tmp_path / "window"
    assert recipe("c25_graft_window").main(["--ciwl", str(tmp_path / "ciwl"), "--sources", "0,2", "--no-scratch",
                                            "--out", str(out), *TINY]) == 0
    assert set(pd.read_csv(out / "summary.csv").source_step) == {0, 2}
    out = tmp_path / "init"
    assert recipe("c25_init_from_ciwl").main(["--ciwl", str(tmp_path / "ciwl"), "--sources", "2", "--out", str(out),
                                              *TINY]) == 0
    table = pd.read_csv(out / "eval.csv")
    assert table[table.run == "from 2"].total_step.min() == 2


def test_mq_and_weight_decay_recipes(tmp_path):
    train(short("quick", 2), tmp_path / "main", progress=False)
    train(short("mq", 2), tmp_path / "mq", progress=False)
    assert recipe("c25_matching_exemplars").main(["--main", str(tmp_path / "main"), "--mq", str(tmp_path / "mq"),
                                                  "--out", str(tmp_path / "mqout"), *TINY]) == 0
    assert set(pd.read_csv(tmp_path / "mqout" / "summary.csv").run) == {"main", "mq"}
    assert recipe("t23_weight_decay").main(["--decays", "0,1e-3", "--out", str(tmp_path / "wd"), *TINY]) == 0
    assert len(pd.read_csv(tmp_path / "wd" / "summary.csv")) == 4
