"""What an evaluator means comes from its spec (``EvaluatorSpec``), never from its name: a figure plots the spec's
headline metric in the spec's colour, the patching pairs are the ones the spec names, the training progress bar shows
the evaluators the specs mark, and figures open on the spec with the lowest display rank."""

from dataclasses import replace

import pandas as pd
import pytest

from coopetition.analysis.pairs import EXEMPLAR_PAIRS, build_pairs
from coopetition.errors import ConfigError
from coopetition.plots import circuit, llc, strategies
from coopetition.plots.common import colour, headline, preferred
from coopetition.sweep.figure import metric_of
from coopetition.task.evaluators import (DEFAULT_COLOUR, EvalConfig, EvaluatorSpec, display_order, progress_metrics,
                                         spec_for)
from coopetition.task.sequence import SequenceSpec
from tests.analysis_handmade import handmade_data

MINE = EvaluatorSpec("mine", SequenceSpec(context_len=2, burstiness=1), headline_metric="prob", colour="#123456",
                     patch_pairs=("flip_vs_train",), progress=True, display_rank=-1)


def curves(evaluators: dict[str, dict[str, float]]) -> pd.DataFrame:
    """A strategies-shaped table: one step per value, every metric given for each evaluator."""
    return pd.DataFrame([{"step": 100 * i, "sequences": 3200 * i, "evaluator": e, "metric": m, "value": v}
                         for e, metrics in evaluators.items() for m, values in metrics.items()
                         for i, v in enumerate(values)])


def traces(fig, name: str) -> list:
    return [t for t in fig.data if t.name == name]


def test_the_built_in_suites_carry_what_figures_and_training_read():
    ctx2 = {spec.name: spec for spec in EvalConfig("ctx2").evaluators()}
    ctx8 = {spec.name: spec for spec in EvalConfig("ctx8").evaluators()}
    assert ctx2["iwl"].headline_metric == ctx8["iwl"].headline_metric == "acc"
    assert {ctx2[n].headline_metric for n in ("train", "icl", "flip", "ciwl")} == {"in_context_acc"}
    assert ctx2["flip"].colour == ctx8["flip"].colour == "#d62728" and ctx8["b2_train"].colour == "#7f7f7f"
    assert ctx2["icl"].patch_pairs == ("icl_swap", "exemplar_swap") and ctx2["iwl"].patch_pairs == ()
    assert progress_metrics(ctx2.values()) == [("flip", "in_context_acc"), ("ciwl", "in_context_acc"),
                                               ("icl", "in_context_acc")]
    assert display_order(["iwl", "train", "icl", "ciwl", "flip", "other"]) == ["flip", "ciwl", "train", "icl", "iwl",
                                                                              "other"]


def test_a_name_no_suite_knows_gets_the_plain_spec_and_a_runs_own_spec_wins():
    assert spec_for("unheard_of").headline_metric == "in_context_acc"
    assert spec_for("unheard_of").colour == DEFAULT_COLOUR and spec_for("unheard_of").patch_pairs == ()
    own = replace(spec_for("iwl"), colour="#000001", headline_metric="prob")
    assert colour("iwl", {"iwl": own}) == "#000001" and headline("iwl", {"iwl": own}) == "prob"
    assert colour("iwl") == "#9467bd" and headline("iwl") == "acc" and metric_of("iwl") == "acc"


def test_a_custom_evaluator_gets_its_specs_headline_metric_and_colour_in_the_figures():
    table = curves({"mine": {"in_context_acc": [0.1, 0.2, 0.3], "prob": [0.7, 0.8, 0.9], "loss": [1.0, 0.9, 0.8]},
                    "iwl": {"in_context_acc": [0.0, 0.0, 0.0], "acc": [0.4, 0.5, 0.6], "loss": [2.0, 2.0, 2.0]}})
    specs = {"mine": MINE}
    for fig in (strategies.figure(table, specs), llc.figure(llc_table(), table, specs)):
        mine, iwl = traces(fig, "mine")[0], traces(fig, "iwl")[0]
        assert list(mine.y) == [0.7, 0.8, 0.9] and mine.line.color == "#123456"
        assert list(iwl.y) == [0.4, 0.5, 0.6] and iwl.line.color == "#9467bd"  # built-in: full accuracy
    # without the run's specs the name means nothing special: in-context accuracy, the default colour
    plain = traces(strategies.figure(table), "mine")[0]
    assert list(plain.y) == [0.1, 0.2, 0.3] and plain.line.color == DEFAULT_COLOUR


def test_circuit_strategy_panel_reads_the_spec_too():
    table = curves({"mine": {"in_context_acc": [0.1, 0.2], "prob": [0.7, 0.8]}})
    fig = circuit_figure(table, {"mine": MINE})
    [mine] = traces(fig, "mine")
    assert list(mine.y) == [0.7, 0.8] and mine.line.color == "#123456"


def test_figures_open_on_the_lowest_display_rank():
    assert preferred(["train", "iwl", "flip"]) == 2
    assert preferred(["train", "mine", "flip"], {"mine": MINE}) == 1
    assert preferred(["a", "b"]) == 0


def test_patching_pairs_are_the_ones_each_spec_names():
    flip = handmade_data("flip", n=8, relabel="flip")
    assert [p.name for p in build_pairs({"flip": flip})] == ["flip_vs_train"]
    # the same sequences under another name: a pair only if that evaluator's spec names one
    assert build_pairs({"mine": flip}) == []
    assert [p.name for p in build_pairs({"mine": flip}, {"mine": MINE})] == ["flip_vs_train"]
    assert build_pairs({"flip": flip}, {"flip": replace(spec_for("flip"), patch_pairs=())}) == []
    icl = handmade_data("icl", n=8, relabel="01")
    assert [p.name for p in build_pairs({"icl": icl})] == ["icl_swap"]
    assert [p.name for p in build_pairs({"icl": icl}, builders=EXEMPLAR_PAIRS)] == ["exemplar_swap"]
    with pytest.raises(ConfigError, match="no_such_pair"):
        build_pairs({"mine": flip}, {"mine": replace(MINE, patch_pairs=("no_such_pair",))})


def test_the_progress_bar_shows_what_the_specs_mark():
    assert progress_metrics([spec_for("iwl"), MINE, spec_for("ciwl")]) == [("mine", "prob"),
                                                                          ("ciwl", "in_context_acc")]


def llc_table() -> pd.DataFrame:
    return pd.DataFrame([{"step": s, "chain": -1, "llc_mean": 1.0, "llc_std": 0.1, "init_loss": 2.0,
                          "nbeta": 10.0} for s in (0, 100, 200)])


def circuit_figure(strategy_table: pd.DataFrame, specs):
    rows = [{"step": s, "sequences": 32 * s, "pair": "icl_swap", "sender": "label", "receiver": "logits",
             "input": "direct", "method": m, "effect": 0.5} for s in (0, 100) for m in ("exact", "attribution")]
    return circuit.figure(pd.DataFrame(rows), "icl_swap", strategy_table, specs)
