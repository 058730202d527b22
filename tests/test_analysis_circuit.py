"""The ``circuit`` analysis on the hand-built induction model (tests/analysis_handmade.py), where the graph is known:
exemplar -> previous-token head L0H0 (V) -> induction head L1H1 (K) -> logits, and label -> L1H1 (V) -> logits."""

import pandas as pd
import pytest
import torch

from coopetition.analysis.circuit import agreement, cache_names, circuit_rows, edges
from coopetition.analysis.pairs import exemplar_swap, icl_swap
from coopetition.interventions import Intervened, Patch, intervene
from coopetition.interventions.paths import patched_logits, sender_output
from coopetition.model import ICLTransformer, ModelConfig
from coopetition.pipeline import write_figures
from coopetition.plots.circuit import figure
from tests.analysis_handmade import INDUCTION, handmade_data, handmade_model

ONE_PREV = ((0, 0),)
K_EDGE = ("L0H0", "L1H1", "k")


def soft_model(query_scale: float = 0.1):
    """One previous-token head, and an induction head whose query is scaled down so its attention is not
    saturated (a saturated softmax has no gradient; see ``test_attribution_is_blind_to_a_saturated_head``)."""
    model = handmade_model(prev_heads=ONE_PREV)
    with torch.no_grad():
        model.blocks[INDUCTION[0]].attn.W_Q[INDUCTION[1]] *= query_scale
    return model


@pytest.fixture(scope="module")
def icl():
    return handmade_data("icl", n=48, relabel="01")


def effects(model, pair) -> pd.DataFrame:
    rows = pd.DataFrame(circuit_rows(Intervened(model), pair, max_rows=4096))
    edges_only = rows[rows["method"].isin(("exact", "attribution"))]
    return edges_only.pivot_table(index=["sender", "receiver", "input"], columns="method", values="effect")


def test_the_graph_has_every_edge_once():
    found = edges(ModelConfig(n_layers=2, d_model=48, n_heads=4))
    # 3 embeddings into 4 heads x 3 inputs per layer, 4 layer-0 heads into layer 1, 3 + 8 nodes into the logits
    assert len(found) == 3 * 12 * 2 + 4 * 12 + 11 == len({(e.sender, e.receiver, e.input) for e in found})
    rotary = edges(ModelConfig(n_layers=2, d_model=48, n_heads=4, positional="rotary"))
    assert len(rotary) == len(found) - 2 * 12 - 1 and all(e.sender != "position" for e in rotary)


def test_sender_outputs_decompose_the_residual_stream(icl):
    """What path patching rests on: embeddings sum to the stream entering block 0, and block 0's heads add theirs."""
    model = handmade_model()
    with model.per_head_hooks():
        _, cache = model.run_cached(icl.exemplars, icl.context_labels, names=cache_names(model.model_config))
    embeds = sum(sender_output(cache, s) for s in ("exemplar", "label", "position"))
    torch.testing.assert_close(embeds, cache["blocks.0.hook_resid_pre"])
    heads = sum(sender_output(cache, f"L0H{h}") for h in range(4))
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"] + heads, cache["blocks.1.hook_resid_pre"],
                               atol=1e-5, rtol=1e-5)


def test_patching_every_edge_out_of_a_head_is_patching_the_head(icl):
    """Residual-stream decomposition, end to end: all of L0H0's outgoing edges at once (every layer-1 Q/K/V input
    and the logits) move the logits exactly as patching its output ``z`` does (``patching``'s intervention)."""
    model = handmade_model(prev_heads=ONE_PREV)
    forward, pair = Intervened(model), exemplar_swap(icl)
    cfg = model.model_config
    outgoing = tuple(e for e in edges(cfg) if e.sender == "L0H0")
    with model.per_head_hooks():
        _, clean = forward.run_cached(pair.clean.exemplars, pair.clean.context_labels, names=cache_names(cfg))
        _, corrupt = forward.run_cached(pair.corrupt.exemplars, pair.corrupt.context_labels, names=None)
        paths = forward.run_variants(pair.corrupt.exemplars, pair.corrupt.context_labels, None, [outgoing],
                                     pair.answers, baseline=corrupt, source=clean)
    _, clean_plain = forward.run_cached(pair.clean.exemplars, pair.clean.context_labels)
    node = forward.run_variants(pair.corrupt.exemplars, pair.corrupt.context_labels, None, [(Patch("z", 0, 0),)],
                                pair.answers, source=clean_plain)
    torch.testing.assert_close(paths, node, atol=1e-4, rtol=1e-4)
    assert (paths[0, :, 0] - paths[0, :, 1]).mean() > 10  # the corrupted run (LD ~ -20) now gives the clean answer


def test_previous_token_head_feeds_the_induction_head_through_k(icl):
    """Known answer: with the context exemplars swapped, the only route is exemplar -> L0H0 (V) -> L1H1 (K) ->
    logits. Exact path patching gives each link of that chain the whole effect (1) and nothing else any; both
    estimators rank L0H0 -> L1H1 through K first among the edges between heads and among the edges into heads
    (the direct L1H1 -> logits edge, which every route ends with, is linear and stays at the top of attribution)."""
    found = effects(soft_model(), exemplar_swap(icl))
    exact, attr = found["exact"], found["attribution"]
    chain = [("exemplar", "L0H0", "v"), K_EDGE, ("L1H1", "logits", "direct")]
    assert exact[chain].round(3).eq(1.0).all()
    assert exact.drop(chain).abs().max() < 0.02
    assert abs(exact[("L0H0", "L1H1", "q")]) < 0.02 and abs(exact[("L0H0", "L1H1", "v")]) < 0.02
    between_heads = [k for k in found.index if k[0].startswith("L") and k[1].startswith("L")]
    into_heads = [k for k in found.index if k[1] != "logits"]
    for values in (exact, attr):
        assert values[between_heads].abs().idxmax() == K_EDGE
        assert values[into_heads].abs().max() - abs(values[K_EDGE]) < 1e-3
    assert attr[K_EDGE] > 0.5 and attr[K_EDGE] > 1.2 * attr[("exemplar", "L0H0", "v")]


def test_a_label_only_pair_is_carried_by_the_label_value_edge(icl):
    """``icl_swap`` changes labels, not what the previous-token head copies: the label -> L1H1 (V) edge carries
    it all and the K edge none (why ``circuit`` adds ``exemplar_swap``)."""
    found = effects(soft_model(), icl_swap(icl))
    assert found.loc[("label", "L1H1", "v"), "exact"] == pytest.approx(1.0, abs=1e-3)
    assert abs(found.loc[K_EDGE, "exact"]) < 1e-3 and abs(found.loc[K_EDGE, "attribution"]) < 1e-3
    assert found.loc[("label", "L1H1", "v"), "attribution"] > 0.5


def test_attribution_is_blind_to_a_saturated_head(icl):
    """The known failure of one-gradient estimates: at full strength the induction head's attention is saturated
    on the corrupted run, so the exact effect of the K edge (1) gets almost no attribution."""
    found = effects(handmade_model(prev_heads=ONE_PREV), exemplar_swap(icl))
    assert found.loc[K_EDGE, "exact"] == pytest.approx(1.0, abs=1e-3)
    assert abs(found.loc[K_EDGE, "attribution"]) < 0.1


def test_agreement():
    assert agreement([1.0, 0.5, 0.0, -0.2], [0.9, 0.6, 0.1, -0.1], top=2) == {
        "spearman": pytest.approx(1.0), "top2_overlap": 1.0, "top1_match": 1.0}
    found = agreement([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], top=1)
    assert found["top1_match"] == 0.0 and found["top1_overlap"] == 0.0 and found["spearman"] < 0


def test_one_page_per_pair_from_the_table_alone(icl, tmp_path):
    model = soft_model()
    rows = []
    for step, pair in ((0, exemplar_swap(icl)), (0, icl_swap(icl)), (100, exemplar_swap(icl)), (100, icl_swap(icl))):
        rows += [{"step": step, "sequences": 10 * step, "pair": pair.name, **r}
                 for r in circuit_rows(Intervened(model), pair, 4096)]
    table = pd.DataFrame(rows)
    written = write_figures(tmp_path, {"circuit": table}, ("circuit",))
    assert {"circuit_exemplar_swap.html", "circuit_icl_swap.html", "circuit_agreement.html"} <= set(written)
    index = (tmp_path / "index.html").read_text()
    assert 'href="circuit_exemplar_swap.html"' in index and 'href="circuit_icl_swap.html"' in index
    fig = figure(table, "exemplar_swap")
    assert [f.name for f in fig.frames] == ["0", "100"] and len(fig.layout.sliders[0].steps) == 2
    hover = [t for f in fig.frames[:1] for d in f.data if d.text is not None for t in d.text if t]
    k_edge = next(t for t in hover if t.startswith("L0H0 → L1H1 (k)"))
    assert "exact +1.000" in k_edge and "attribution +0." in k_edge


# --- the fast exact path (paths.patched_logits) against one PathPatch variant per edge (run_variants) --------------

def _variant_and_fast_logits(model, pair):
    """Both methods' patched logits of every edge, from the same caches."""
    forward, cfg = Intervened(model), model.model_config
    found = edges(cfg)
    with model.per_head_hooks():
        _, clean = forward.run_cached(pair.clean.exemplars, pair.clean.context_labels, names=cache_names(cfg),
                                      labels=pair.answers)
        reference, corrupt = forward.run_cached(pair.corrupt.exemplars, pair.corrupt.context_labels,
                                                names=cache_names(cfg), labels=pair.answers)
        slow = forward.run_variants(pair.corrupt.exemplars, pair.corrupt.context_labels, None, [(e,) for e in found],
                                    pair.answers, baseline=corrupt, source=clean, max_rows=512)
    fast = patched_logits(model, found, corrupt, clean, pair.answers, reference, max_rows=512)
    return found, slow, fast, reference


@pytest.mark.parametrize("config", [
    dict(n_layers=2, d_model=48, n_heads=4),
    dict(n_layers=3, d_model=48, n_heads=4, mlp_ratio=2),
    dict(n_layers=2, d_model=48, n_heads=4, positional="rotary"),
    dict(n_layers=3, d_model=48, n_heads=4, positional="sinusoidal", mlp_ratio=1),
], ids=["attn-only", "mlp", "rotary", "sinusoidal-mlp"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fast_path_patching_equals_one_variant_per_edge(config, dtype):
    """Known answer: the slow path (every edge its own hooked pass from the receiver's block, all heads split) on
    random weights of every architecture the model builds. In float64 the two agree to 1e-10 (the same function);
    in float32 to rounding; and both give exactly the corrupted logits where the sender writes the same on both runs
    (position: both runs share positions)."""
    from dataclasses import replace

    icl = handmade_data("icl", n=12, relabel="01")
    model = ICLTransformer(ModelConfig(**config), input_dim=8, n_labels=8, n_outputs=8, init_seed=3).to(dtype)
    with torch.no_grad():  # larger weights than the init's, so that edges move the logits well above rounding
        for p in model.parameters():
            p.mul_(2.0)
    for pair in (exemplar_swap(icl), icl_swap(icl)):
        pair = replace(pair, clean=replace(pair.clean, exemplars=pair.clean.exemplars.to(dtype)),
                       corrupt=replace(pair.corrupt, exemplars=pair.corrupt.exemplars.to(dtype)))
        found, slow, fast, reference = _variant_and_fast_logits(model, pair)
        assert (slow - reference).abs().amax() > 1  # the test can fail: edges do change the logits
        tolerance = 1e-10 if dtype == torch.float64 else 5e-6 * float(slow.abs().amax())
        torch.testing.assert_close(fast, slow, atol=tolerance, rtol=0)
        for i, edge in enumerate(found):
            if edge.sender == "position":
                assert torch.equal(fast[i], reference) and torch.equal(slow[i], reference)


def test_fast_rows_equal_the_variant_rows_on_the_handmade_circuit(icl):
    """The table itself: every exact effect within float rounding, baselines and attribution identical."""
    for model in (soft_model(), handmade_model(prev_heads=ONE_PREV)):
        for pair in (exemplar_swap(icl), icl_swap(icl)):
            slow = circuit_rows(Intervened(model), pair, 4096, exact_path="variants")
            fast = circuit_rows(Intervened(model), pair, 4096, exact_path="fast")
            assert [r for r in slow if r["method"] != "exact" and r["method"] != "agreement"] == \
                [r for r in fast if r["method"] != "exact" and r["method"] != "agreement"]
            for a, b in zip(slow, fast):
                assert (a["sender"], a["receiver"], a["input"], a["method"]) == \
                    (b["sender"], b["receiver"], b["input"], b["method"])
                if a["method"] == "exact":
                    assert b["effect"] == pytest.approx(a["effect"], abs=1e-5)
            assert circuit_rows(Intervened(model), pair, 4096) == fast  # the default is the fast path


def test_a_run_with_hook_interventions_keeps_the_engine_path(icl):
    """The fast path computes the bare network; a run's own hook interventions (here the induction head's attention
    softened) are applied by the engine only, so ``auto`` takes the variants there."""
    model, pair = handmade_model(prev_heads=ONE_PREV), exemplar_swap(icl)
    forward = intervene(["temperature:1:1:3"], model)
    auto = circuit_rows(forward, pair, 4096)
    assert auto == circuit_rows(forward, pair, 4096, exact_path="variants")
    assert auto != circuit_rows(forward, pair, 4096, exact_path="fast")
