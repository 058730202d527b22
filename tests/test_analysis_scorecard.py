"""The scorecard: the paper table, each check on known answers (hand-built model, hand-written eval log, analytic
curves), and the table and page a run gets."""

import math

import pandas as pd
import pytest
import torch

from coopetition.analysis.ablation import ablation_rows
from coopetition.analysis.clamp import STRENGTHS, clamp_rows, clamp_variants
from coopetition.analysis.config import AnalysisConfig
from coopetition.store.run import Run
from coopetition.analysis.paper import BY_CHECK, PAPER, PaperCheck
from coopetition.pipeline import analyze
from coopetition.analysis.scorecard import COLUMNS, copier_summary, label_attention, table_checks, timeline
from coopetition.interventions import intervene
from coopetition.pipeline import replot
from coopetition.plots.scorecard import figure, verdict
from tests.analysis_handmade import PREV_HEADS, handmade_data, handmade_model
from tests.test_analysis_strategies import log

STEP_CURVE_SLOPE = 3 / 4.4  # least-squares slope of a 0 -> 1 step at delta 0 over delta = -1, -0.8, ..., 1


# --- the paper table ---------------------------------------------------------------------------------------------

def test_every_check_cites_a_section_and_has_a_unit():
    assert len({c.check for c in PAPER}) == len(PAPER) == len(BY_CHECK)
    for c in PAPER:
        assert c.section.startswith("§") and c.unit and c.stated, c
        assert math.isnan(c.low) or c.low <= c.high


def test_paper_numbers_are_the_references():
    assert BY_CHECK["final_acc_flip"].paper == 0.0146
    assert BY_CHECK["recompute_k_train"].paper == 0.5706
    assert BY_CHECK["all_heads_removed_train"].paper == 0.6268
    assert BY_CHECK["l0_direct_effect_train"].paper == pytest.approx(-0.001)
    assert BY_CHECK["flip_peak"].paper == 4.25e6 and BY_CHECK["flip_peak"].unit == "sequences"
    assert BY_CHECK["flip_peak_fraction"].paper == pytest.approx(4.25 / 64)
    assert math.isnan(BY_CHECK["copier_slope"].paper)  # stated in words only


def test_agreement_band():
    check = PaperCheck("x", 0.5, "in-context acc", 0.45, 0.55, "§9", "0.5")
    assert check.agrees(0.5) and check.agrees(0.45) and not check.agrees(0.6)
    assert check.agrees(math.nan) is None
    assert PaperCheck("y", 4e6, "sequences", math.nan, math.nan, "§9", "4M").agrees(1e5) is None
    with pytest.raises(ValueError):
        PaperCheck("z", 0.5, "u", 0.6, 0.4, "§9", "empty")


# --- peaks from a hand-written eval log (flip peaks at 200, ICL eval at 300; 32 sequences per step) ---------------

def test_timeline_on_a_hand_written_log():
    out = timeline(log(), total_steps=800)
    assert out["flip_peak"] == 32 * 200 and out["flip_peak_fraction"] == 200 / 800
    assert out["icl_eval_peak"] == 32 * 300 and out["icl_eval_peak_fraction"] == 300 / 800
    assert out["peak_ratio"] == 1.5
    assert math.isnan(out["flip_near_zero"])  # flip bottoms out at 0.1: never ~0


def test_flip_near_zero_is_the_first_step_after_the_peak_at_or_below_005():
    table = pd.concat([log(), pd.DataFrame([{"step": s, "sequences": 32 * s, "evaluator": "flip",
                                             "metric": "in_context_acc", "value": v}
                                            for s, v in ((700, 0.05), (800, 0.0))])])
    out = timeline(table, total_steps=800)
    assert out["flip_near_zero"] == 32 * 700 and out["flip_near_zero_fraction"] == 700 / 800


def test_no_peak_rows_without_icl():
    table = log()
    table.loc[table["evaluator"] == "flip", "value"] = 0.2
    out = timeline(table, total_steps=800)
    assert "flip_peak" not in out and "peak_ratio" not in out and "flip_near_zero" not in out
    assert out["icl_eval_peak"] == 32 * 300


# --- the copier curve, analytically ------------------------------------------------------------------------------

def test_copier_summary_of_analytic_curves():
    s = torch.tensor(STRENGTHS)
    linear = copier_summary(STRENGTHS, s[None])  # acc = S = (delta + 1) / 2
    assert linear["copier_slope"] == pytest.approx(0.5) and linear["copier_acc_at_delta0"] == pytest.approx(0.5)
    assert linear["copier_monotone_fraction"] == 1.0
    step = (s > 0.5).float()
    flat = torch.full_like(s, 0.5)
    both = copier_summary(STRENGTHS, torch.stack([step, flat]))
    assert both["copier_slope"] == pytest.approx(STEP_CURVE_SLOPE / 2)
    assert both["copier_monotone_fraction"] == 0.5  # the flat head is no copier
    falling = copier_summary(STRENGTHS, (1 - s)[None])
    assert falling["copier_slope"] == pytest.approx(-0.5) and falling["copier_monotone_fraction"] == 0.0


def test_copier_summary_interpolates_delta_zero_between_strengths():
    out = copier_summary((0.0, 0.4, 0.6, 1.0), torch.tensor([[0.0, 0.2, 0.6, 1.0]]))
    assert out["copier_acc_at_delta0"] == pytest.approx(0.4)


# --- mechanistic checks on the hand-built induction model with a direct in-weights path ----------------------------

@pytest.fixture(scope="module")
def handmade():
    """The induction model plus a weak direct path (the query's own class label): while the heads run, ICL wins
    (Flip 1); without them, or with the induction head's keys broken, the direct path answers (Train and CIWL 1,
    Flip 0). The checks are read, as the scorecard reads them, from the rows the ablation and clamp analyses
    compute."""
    model = handmade_model(direct=1.0)
    forward = intervene((), model)
    data = {"train": handmade_data("train"), "flip": handmade_data("flip", relabel="flip"),
            "ciwl": handmade_data("ciwl", burstiness=0, assign_query_label_random=True)}
    variants = clamp_variants(model.cfg.n_layers, model.cfg.n_heads, STRENGTHS)
    out = {}
    for name, d in data.items():
        _, cache = forward.run_cached(d.exemplars, d.context_labels, d.target)
        ablation = pd.DataFrame([{"evaluator": name, **r} for r in ablation_rows(forward, d, cache, 4096)])
        clamp = pd.DataFrame([{"evaluator": name, **r} for r in clamp_rows(forward, d, cache, variants, 4096,
                                                                             linear=False)])
        out[name] = table_checks(ablation, clamp)
        out[name + "_cache"] = cache
    return model, data, out


def test_clean_accuracies(handmade):
    _, _, out = handmade
    assert out["train"]["final_acc_train"] == 1.0
    assert out["flip"]["final_acc_flip"] == 1.0
    assert out["ciwl"]["final_acc_ciwl"] == 1.0


def test_all_heads_removed_leaves_the_direct_path(handmade):
    _, _, out = handmade
    assert out["train"]["all_heads_removed_train"] == 1.0
    assert out["ciwl"]["all_heads_removed_ciwl"] == 1.0
    assert out["flip"]["all_heads_removed_flip"] == 0.0


def test_only_k_recomputed_breaks_the_k_composed_circuit(handmade):
    _, _, out = handmade
    # layer 0 gone and layer 1's keys recomputed: the induction head attends to both labels alike, the direct path
    # decides; recomputing only Q or V keeps the clean keys, so ICL survives
    assert out["flip"]["recompute_k_flip"] == 0.0
    assert out["train"]["recompute_k_train"] == 1.0
    for evaluator in ("train", "flip"):
        assert out[evaluator][f"recompute_q_{evaluator}"] == 1.0
        assert out[evaluator][f"recompute_v_{evaluator}"] == 1.0
        assert out[evaluator][f"l0_direct_effect_{evaluator}"] == 0.0  # layer 0 writes nothing the unembedding reads


def test_copier_checks_find_the_one_copier(handmade):
    _, _, out = handmade
    assert out["ciwl"]["copier_monotone_fraction"] == 0.25  # 1 of 4 last-layer heads copies
    # the copier's curve is an exact 0 -> 1 step; the other three are flat up to tie-breaking noise
    assert abs(out["ciwl"]["copier_slope"] - STEP_CURVE_SLOPE / 4) < 0.03
    assert abs(out["ciwl"]["copier_acc_at_delta0"] - 0.5) < 0.06
    assert "copier_slope" not in out["train"]  # C25's protocol is on CIWL data only


def test_label_attention_finds_the_previous_token_heads(handmade):
    model, data, out = handmade
    prev, self_ = label_attention(model, data["train"], out["train_cache"])
    assert prev.tolist() == [(0, h) in PREV_HEADS for h in range(4)]
    assert not self_.any()  # the fourth head attends uniformly: neither


# --- the table and page of a run -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scorecard(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("scorecard")
    result = analyze(trained_run, "10,30", AnalysisConfig(analyses=("scorecard",), n_seqs=32, workers=1), out,
                     progress_bar=False)
    return result, pd.read_csv(result.tables["scorecard"])


def test_table_is_one_row_per_check_and_step(scorecard, trained_run):
    _, table = scorecard
    assert tuple(table.columns) == COLUMNS
    assert sorted(table["step"].unique()) == [10, 30]
    run = Run.open(trained_run)
    events = timeline(run.eval_table(), run.config.train.steps)
    expected = [c.check for c in PAPER if c.evaluator is not None or c.check in events]
    if "flip_peak" not in events:  # the layer-0 switch is measured against the checkpoint at the flip peak
        expected.remove("l0_switched_to_self")
    for _, rows in table.groupby("step"):
        assert list(rows["check"]) == expected  # the paper table's order
    for _, row in table.iterrows():
        check = BY_CHECK[row["check"]]
        assert row["unit"] == check.unit and row["section"] == check.section
        assert row["paper"] == pytest.approx(check.paper, rel=1e-5, nan_ok=True)  # the CSV keeps 6 digits


def test_page_is_linked_and_rebuilt_from_the_table(scorecard):
    result, _ = scorecard
    assert "scorecard.html" in result.figures
    assert 'href="scorecard.html"' in (result.out_dir / "index.html").read_text()
    (result.out_dir / "scorecard.html").unlink()
    assert "scorecard.html" in replot(result.out_dir)


def test_figure_shows_verdicts_from_the_table_alone():
    table = pd.DataFrame([
        {"step": 5, "sequences": 160, "check": "a", "paper": 0.5, "measured": 0.52, "unit": "in-context acc",
         "low": 0.45, "high": 0.55, "section": "§9.5"},
        {"step": 5, "sequences": 160, "check": "b", "paper": 0.5, "measured": 0.9, "unit": "in-context acc",
         "low": 0.45, "high": 0.55, "section": "§9.5"},
        {"step": 5, "sequences": 160, "check": "c", "paper": 4e6, "measured": 1e5, "unit": "sequences",
         "low": math.nan, "high": math.nan, "section": "§9.6"}])
    assert [verdict(r) for _, r in table.iterrows()] == ["as paper", "differs", "not compared"]
    fig = figure(table)
    cells = fig.data[0].cells.values
    assert list(cells[0]) == ["a", "b", "c"] and list(cells[-1]) == ["as paper", "differs", "not compared"]
    assert list(cells[4]) == ["0.52", "0.9", "0.1M"]


def test_scorecard_equals_the_owning_analyses_tables(trained_run, tmp_path):
    """Reuse, not re-implementation: the same numbers as the ablation, clamp and progress tables."""
    import numpy as np

    result = analyze(trained_run, "30", AnalysisConfig(analyses=("ablation", "clamp", "progress", "scorecard"),
                                                       n_seqs=32, workers=1), tmp_path, progress_bar=False)
    card = pd.read_csv(result.tables["scorecard"]).set_index("check")["measured"]
    ablation = pd.read_csv(result.tables["ablation"])
    ablation = ablation[ablation["metric"] == "in_context_acc"]
    for evaluator in ("train", "ciwl", "flip"):
        rows = ablation[ablation["evaluator"] == evaluator].set_index(["unit", "method"])
        assert card[f"final_acc_{evaluator}"] == pytest.approx(rows.loc[("none", "clean"), "value"])
        assert card[f"l0_direct_effect_{evaluator}"] == pytest.approx(
            rows.loc[("recompute_none", "qkv_composition"), "delta"], abs=1e-5)
        for qkv in "qkv":
            assert card[f"recompute_{qkv}_{evaluator}"] == pytest.approx(
                rows.loc[(f"recompute_{qkv}", "qkv_composition"), "value"])
        assert card[f"all_heads_removed_{evaluator}"] == pytest.approx(rows.loc[("all_heads", "zero"), "value"])
    clamp = pd.read_csv(result.tables["clamp"])
    curve = clamp[(clamp["metric"] == "in_context_acc") & (clamp["intervention"] == "induction")
                  & (clamp["condition"] == "isolated") & (clamp["evaluator"] == "ciwl")]
    mean = curve.groupby("strength")["value"].mean()
    assert card["copier_slope"] == pytest.approx(np.polyfit(2 * mean.index.values - 1, mean.values, 1)[0], abs=1e-5)
    assert card["copier_acc_at_delta0"] == pytest.approx(mean.loc[0.5], abs=1e-5)
    progress = pd.read_csv(result.tables["progress"])
    layer0 = progress[(progress["evaluator"] == "train") & (progress["layer"] == 0)]
    heads = layer0.pivot_table(index="head", columns="measure", values="value")
    assert card["l0_prev_token_heads"] == pytest.approx((heads["label_to_prev"] > heads["label_to_self"]).mean())


def test_layer0_switch_is_measured_against_the_flip_peak_checkpoint(trained_run, tmp_path):
    """With a flip peak written into the eval log at step 15, the reference is the nearest checkpoint, 10 (the
    first of the two as near): at each step the switched heads are those whose label tokens attend more to the
    previous token at 10 and more to themselves at that step (progress's measures)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    log = pd.read_csv(run / "eval.csv")
    flip = (log["evaluator"] == "flip") & (log["metric"] == "in_context_acc")
    log.loc[flip, "value"] = 0.1
    log.loc[flip & (log["step"] == 15), "value"] = 0.9
    log.to_csv(run / "eval.csv", index=False)
    result = analyze(run, "10,30", AnalysisConfig(analyses=("progress", "scorecard"), n_seqs=32, workers=1),
                     tmp_path / "out", progress_bar=False)
    card = pd.read_csv(result.tables["scorecard"]).set_index(["check", "step"])["measured"]
    progress = pd.read_csv(result.tables["progress"])
    layer0 = progress[(progress["evaluator"] == "train") & (progress["layer"] == 0)]
    heads = {step: rows.pivot_table(index="head", columns="measure", values="value")
             for step, rows in layer0.groupby("step")}
    prev_at_peak = heads[10]["label_to_prev"] > heads[10]["label_to_self"]
    for step in (10, 30):
        self_now = heads[step]["label_to_self"] > heads[step]["label_to_prev"]
        assert card["l0_switched_to_self", step] == pytest.approx((prev_at_peak & self_now).mean())
    assert card["l0_switched_to_self", 10] == 0.0  # a head cannot attend more to both
    assert card["l0_switched_to_self", 30] > 0  # this tiny run does switch a head (the test is not vacuous)
    assert card["flip_peak", 10] == card["flip_peak", 30] == 15 * 16  # run-level: repeated at every step
