"""Known answers on the hand-built induction model (tests/analysis_handmade.py)."""

import pandas as pd
import pytest
import torch

from coopetition.analysis.ablation import HEAD_METHODS, ablation_rows, variant_scores
from coopetition.analysis.clamp import clamp_variants
from coopetition.analysis.pairs import build_pairs
from coopetition.analysis.patching import agreement, patching_rows
from coopetition.analysis.progress import head_measures
from coopetition.interventions import intervene
from tests.analysis_handmade import INDUCTION, PREV_HEADS, handmade_data, handmade_model


@pytest.fixture(scope="module")
def model():
    return handmade_model()


@pytest.fixture(scope="module")
def flip():
    return handmade_data("flip", relabel="flip")


@pytest.fixture(scope="module")
def forward(model):
    return intervene((), model)


@pytest.fixture(scope="module")
def flip_ablation_rows(forward, flip):
    _, cache = forward.run_cached(flip.exemplars, flip.context_labels, flip.target)
    return pd.DataFrame(ablation_rows(forward, flip, cache, max_rows=4096))


@pytest.fixture(scope="module")
def flip_ablation(flip_ablation_rows):
    rows = flip_ablation_rows
    return rows[rows["metric"] == "in_context_acc"].set_index(["unit", "method"])["value"]


@pytest.fixture(scope="module")
def flip_ablation_prob(flip_ablation_rows):
    """Probability mass on the right in-context label: exactly 0.5 when the two labels' logits tie, where accuracy
    would depend on which tied logit rounding happens to favour."""
    rows = flip_ablation_rows
    return rows[rows["metric"] == "in_context_prob"].set_index(["unit", "method"])["value"]


def test_the_model_does_icl(flip_ablation):
    assert flip_ablation["none", "clean"] == 1.0


@pytest.mark.parametrize("method", ["zero", "mean", "resample", "zero_keep_patterns", "zero_keep_values"])
def test_ablating_the_induction_head_drops_flip_to_chance(flip_ablation, method):
    layer, head = INDUCTION
    assert abs(flip_ablation[f"L{layer}H{head}", method] - 0.5) < 0.12


def test_ablating_any_other_head_does_not(flip_ablation):
    others = [u for u in flip_ablation.index.get_level_values(0).unique() if u.startswith("L") and "H" in u
              and u != "L{}H{}".format(*INDUCTION)]
    assert len(others) == 7
    for unit in others:
        for method in HEAD_METHODS:
            assert flip_ablation[unit, method] > 0.97, (unit, method)


def test_layer_ablations_and_composition(flip_ablation, flip_ablation_prob):
    assert abs(flip_ablation_prob["L0", "zero"] - 0.5) < 0.01  # both previous-token heads gone
    assert abs(flip_ablation_prob["L1", "zero"] - 0.5) < 0.01
    # The circuit is K-composition only: recomputing layer 1's keys after ablating layer 0 breaks it.
    assert flip_ablation["recompute_none", "qkv_composition"] > 0.97
    assert flip_ablation["recompute_q", "qkv_composition"] > 0.97
    assert flip_ablation["recompute_v", "qkv_composition"] > 0.97
    assert abs(flip_ablation["recompute_k", "qkv_composition"] - 0.5) < 0.12
    assert flip_ablation["token_embed", "zero_keep_patterns_values"] > 0.97  # no direct embedding path


@pytest.fixture(scope="module")
def flip_patching(forward, flip):
    [pair] = build_pairs({"flip": flip.head(96)})
    clean_logits, clean = forward.run_cached(pair.clean.exemplars, pair.clean.context_labels)
    corrupt_logits, corrupt = forward.run_cached(pair.corrupt.exemplars, pair.corrupt.context_labels)
    return pd.DataFrame(patching_rows(forward, pair, clean, clean_logits, corrupt, corrupt_logits, 4096))


def test_patching_the_final_residual_at_the_query_transfers_the_clean_answer(flip_patching):
    exact = flip_patching[(flip_patching["kind"] == "exact") & (flip_patching["component"] == "resid")]
    final = exact[(exact["layer"] == 2) & (exact["position"] == 4)]["value"].item()
    assert final == pytest.approx(1.0, abs=1e-4)
    baseline = flip_patching[flip_patching["kind"] == "baseline"].set_index("component")["value"]
    assert baseline["clean"] > 1 and baseline["corrupt"] < -1  # ICL: the two runs answer differently


def test_attribution_agrees_with_exact_patching_in_sign_and_rank(flip_patching):
    heads = flip_patching[(flip_patching["component"].isin(["z", "resid"])) & (flip_patching["layer"] >= 0)]
    keys = ["component", "layer", "head", "position"]
    both = heads[heads["kind"] == "exact"].merge(heads[heads["kind"] == "attribution"], on=keys,
                                                 suffixes=("_exact", "_attr"))
    per_head = both[(both["component"] == "z") & (both["position"] == -1)]
    top = per_head.loc[per_head["value_exact"].abs().idxmax()]
    assert (top["layer"], top["head"]) == INDUCTION and top["value_exact"] > 0.9 and top["value_attr"] > 0.5
    large = both[both["value_exact"].abs() > 0.05]
    assert len(large) >= 3
    assert (large["value_exact"].gt(0) == large["value_attr"].gt(0)).all()
    assert agreement(large["value_exact"].tolist(), large["value_attr"].tolist())["spearman"] > 0.7
    rows = flip_patching[flip_patching["kind"] == "agreement"].set_index("metric")["value"]
    assert rows["top1_match"] == 1.0


def test_progress_measures_find_the_circuit(model, flip):
    _, cache = model.run_cached(flip.exemplars, flip.context_labels)
    measures = head_measures(model, flip, cache)
    layer, head = INDUCTION
    assert measures["induction_strength"][layer, head] > 0.95
    assert measures["induction_strength"][layer].abs().sort().values[-2] < 0.1
    assert measures["copy_score"][layer, head] > 1 and measures["dla"][layer, head] > 1
    for l, h in PREV_HEADS:
        assert measures["label_to_prev"][l, h] > 0.99 and measures["label_to_self"][l, h] < 0.01
        assert measures["prev_token_score"][l, h] > 0.9
    others = [h for h in range(4) if (0, h) not in PREV_HEADS]
    assert (measures["prev_token_score"][0, others] < 0.2).all()


def test_on_ciwl_data_the_icl_model_is_at_chance(model):
    ciwl = handmade_data("ciwl", burstiness=0, assign_query_label_random=True)
    _, cache = model.run_cached(ciwl.exemplars, ciwl.context_labels)
    assert abs(float(head_measures(model, ciwl, cache)["induction_strength"][INDUCTION])) < 0.1
    assert torch.isfinite(cache["blocks.1.attn.hook_pattern"]).all()


@pytest.fixture(scope="module")
def clamped(model, forward, flip):
    """Clamp scores on Flip: ``{(intervention, condition, head, strength): (acc, prob)}``."""
    strengths = (0.0, 0.25, 0.5, 0.75, 1.0)
    variants = clamp_variants(2, 4, strengths)
    _, cache = forward.run_cached(flip.exemplars, flip.context_labels, flip.target)
    scores = variant_scores(forward, flip, cache, [v for _, v in variants], 4096)
    return {(lab["intervention"], lab["condition"], lab["head"], lab["strength"]):
            (scores["in_context_acc"][i], scores["in_context_prob"][i]) for i, (lab, _) in enumerate(variants)}


def test_the_isolated_induction_head_is_a_copier(clamped):
    """C25 Fig 2b on a known copier: accuracy follows the clamped strength, and at delta 0 the two labels tie."""
    head = "L{}H{}".format(*INDUCTION)
    curve = [clamped["induction", "isolated", head, s] for s in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert curve[0][0] == 0.0 and curve[-1][0] == 1.0
    assert [p for _, p in curve] == sorted(p for _, p in curve)  # monotone in the probability
    assert curve[2][1] == pytest.approx(0.5, abs=1e-4)  # delta 0: equal mass on both labels


def test_clamping_a_head_that_copies_nothing_does_nothing(clamped):
    """A head that writes a constant: with its layer-mates kept (the induction head still works), any clamp of it
    leaves Flip at 1; isolated, it carries no label at all, so both labels tie at every strength."""
    for s in (0.0, 0.5, 1.0):
        assert clamped["induction", "others_kept", "L1H0", s][0] == 1.0
        assert clamped["induction", "isolated", "L1H0", s][1] == pytest.approx(0.5, abs=1e-4)


def test_a_previous_token_clamp_of_one_redundant_head_keeps_icl(clamped):
    """Each of the three previous-token heads carries a third of the signal: clamping one to a perfect previous-
    token pattern changes nothing, and setting it to self attention (S = 0) with the others kept still leaves ICL."""
    for l, h in PREV_HEADS:
        assert clamped["prev_token", "others_kept", f"L{l}H{h}", 1.0][0] == 1.0
        assert clamped["prev_token", "others_kept", f"L{l}H{h}", 0.0][0] > 0.97
