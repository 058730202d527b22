"""``analyze`` dissects the network that ran: a run's own interventions (grafts from its kept sources, clamps) are on
at every analysed checkpoint, ``--intervene`` adds more, and an analysis is one registered class."""

import json
import shutil
from dataclasses import replace
from typing import ClassVar

import pandas as pd
import pytest

from coopetition.analysis.base import REGISTRY, Analysis
from coopetition.analysis.config import AnalysisConfig
from coopetition.pipeline import analyze
from coopetition.cli import build_parser, main
from coopetition.train.loop import train
from coopetition.tables import FLOAT, INT, STR
from tests.conftest import tiny_run_config

pytestmark = pytest.mark.e2e

FULL = dict(n_seqs=64, analyses=("ablation",), evaluators=None)  # the tiny config's whole eval sets: 64 each


def _train(path, **changes):
    config = tiny_run_config(steps=20, checkpoint_schedule="every:10", eval_schedule="every:10")
    train(replace(config, **changes), path, progress=False)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("intervened")
    source = _train(root / "source")
    return {
        "source": source,
        "graft_out": _train(root / "graft_out", interventions=(f"graft_out:{source}@20:0",)),
        "graft_in": _train(root / "graft_in", interventions=(f"graft_in:{source}@20:0",)),
        "clamp": _train(root / "clamp", interventions=("induction:1:0:0.8", "ablate:0:1")),
    }


def clean_vs_log(run, out):
    """Analysis's baseline in-context accuracy and the run's eval.csv, per (step, evaluator)."""
    result = analyze(run, "0:", AnalysisConfig(**FULL), out, progress_bar=False)
    ours = (pd.read_csv(result.tables["ablation"]).query("method == 'clean' and metric == 'in_context_acc'")
            .set_index(["step", "evaluator"])["value"])
    log = (pd.read_csv(run / "eval.csv").query("metric == 'in_context_acc'")
           .set_index(["step", "evaluator"])["value"])
    return ours.sort_index(), log.loc[ours.index].sort_index()


@pytest.mark.parametrize("kind", ["graft_out", "graft_in", "clamp"])
def test_clean_accuracy_equals_the_runs_eval_log(runs, tmp_path, kind):
    ours, log = clean_vs_log(runs[kind], tmp_path)
    assert len(ours) == 15  # 3 checkpoints x 5 evaluators
    pd.testing.assert_series_equal(ours, log, check_exact=False, atol=1e-6, rtol=0)


def test_the_grafted_run_stays_analysable_without_its_source(runs, tmp_path):
    """The run kept the source checkpoint's bytes: moved, and with the source run gone, it analyses the same."""
    moved = tmp_path / "moved"
    shutil.copytree(runs["graft_out"], moved)
    hidden = tmp_path / "hidden"
    shutil.move(str(runs["source"]), hidden)
    try:
        ours, log = clean_vs_log(moved, tmp_path / "out")
    finally:
        shutil.move(str(hidden), runs["source"])
    pd.testing.assert_series_equal(ours, log, check_exact=False, atol=1e-6, rtol=0)


def test_without_the_runs_interventions_the_numbers_would_differ(runs, tmp_path):
    """The equality above is not vacuous: the bare checkpoints score differently."""
    from coopetition.store.run import Run, load_checkpoint
    from coopetition.train.evaluate import evaluate, prepare_eval_sets

    run = Run.open(runs["graft_out"])
    bank = run.bank()
    model = run.build_model(bank)
    load_checkpoint(model, run.checkpoints[-1])
    bare = evaluate(model, prepare_eval_sets(run.eval_sets(), bank.features), 64)
    log = pd.read_csv(runs["graft_out"] / "eval.csv").query("step == 20").set_index(["evaluator", "metric"])["value"]
    assert max(abs(bare[(e, "loss")] - log[(e, "loss")]) for e in ("train", "flip", "ciwl")) > 1e-3


def test_added_intervention_moves_the_baseline_as_the_ablation_table_says(runs, tmp_path):
    run = runs["source"]
    plain = analyze(run, "0:", AnalysisConfig(**FULL), tmp_path / "plain", progress_bar=False)
    added = analyze(run, "0:", AnalysisConfig(**{**FULL, "interventions": ("ablate:0:1",)}), tmp_path / "added",
                    progress_bar=False)
    table = pd.read_csv(plain.tables["ablation"]).query("metric == 'in_context_acc'")
    row = table.query("unit == 'L0H1' and method == 'zero'").set_index(["step", "evaluator"])["value"]
    assert set(table.query("unit == 'L0H1' and method == 'zero'")["intervention"]) == {"ablate:0:1"}
    baseline = (pd.read_csv(added.tables["ablation"]).query("method == 'clean' and metric == 'in_context_acc'")
                .set_index(["step", "evaluator"])["value"])
    pd.testing.assert_series_equal(baseline.sort_index(), row.sort_index(), check_exact=False, atol=1e-6, rtol=0)
    record = json.loads((added.out_dir / "analysis.json").read_text())
    assert record["added_interventions"] == ["ablate:0:1"] and record["run_interventions"] == []


def test_analysis_json_lists_the_runs_own_interventions_and_sources(runs, tmp_path):
    result = analyze(runs["graft_in"], "-1", AnalysisConfig(**{**FULL, "interventions": ("ablate:1:0",)}), tmp_path,
                     progress_bar=False)
    record = json.loads((result.out_dir / "analysis.json").read_text())
    assert record["run_interventions"] == [f"graft_in:{runs['source']}@20:0"]
    assert record["added_interventions"] == ["ablate:1:0"]
    assert record["sources"][0]["file"] == "sources/graft_0.safetensors" and record["sources"][0]["step"] == 20


def test_cli_intervene_is_repeatable_and_bad_ones_write_nothing(runs, tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["analyze", str(runs["source"]), "--checkpoint-range", "-1", "--analyses", "ablation",
                 "--intervene", "ablate:0:1", "--intervene", "induction:1:0:1", "--out", str(out),
                 "--no-progress"]) == 0
    assert json.loads((out / "analysis.json").read_text())["added_interventions"] == ["ablate:0:1",
                                                                                      "induction:1:0:1"]
    capsys.readouterr()
    assert main(["analyze", str(runs["source"]), "--checkpoint-range", "-1", "--intervene", "patch:z:9:0",
                 "--out", str(tmp_path / "b"), "--no-progress"]) == 2
    assert "layer 9 must be in [0, 1]" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_adding_an_analysis_is_adding_one_class(runs, tmp_path):
    class QueryNorm(Analysis):
        """Mean norm of the residual stream at the query, per evaluator."""

        name: ClassVar[str] = "test_query_norm"
        caption: ClassVar[str] = "residual norm at the query"
        tables: ClassVar[dict] = {"query_norm": {"step": INT, "sequences": INT, "evaluator": STR, "value": FLOAT}}

        def checkpoint_rows(self, checkpoint):
            rows = []
            for name, data in self.context.data.items():
                _, cache = checkpoint.baseline(data)
                rows.append({"evaluator": name, "value": float(cache["blocks.1.hook_resid_post"][:, -1].norm(dim=-1)
                                                               .mean())})
            return {"query_norm": rows}

    try:
        analyze_help = build_parser()._subparsers._group_actions[0].choices["analyze"].format_help()
        assert "test_query_norm" in analyze_help
        result = analyze(runs["source"], "0:", AnalysisConfig(analyses=("test_query_norm",), n_seqs=16), tmp_path,
                         progress_bar=False)
        table = pd.read_csv(result.tables["query_norm"])
        assert list(table.columns) == ["step", "sequences", "evaluator", "value"] and len(table) == 15
        assert (table["value"] > 0).all()
        assert "query_norm.html" in result.figures  # a generic figure, built from the table
        assert 'href="query_norm.html"' in (tmp_path / "index.html").read_text()
    finally:
        del REGISTRY["test_query_norm"]
