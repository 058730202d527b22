"""The clamp analysis's stream arithmetic (``clamp.linear_scores``) against one pass per strength.

In an attention-only network every clamp of ``clamp_variants`` is computed from the baseline cache and one batched
pass of the later blocks (module docstring of ``analysis/clamp.py``). Checked here against ``variant_scores`` (one
pass per variant) on the hand-built copier model (the C25 known answers hold through the fast path) and on a random
3-layer model, with strengths that include neither end; and it is not used where it would not be exact (MLPs, run
edits). ``tests/test_analysis_fast_clamp_ablation.py`` covers more shapes, float64 and the ablation analysis."""

import pytest
import torch

from coopetition.analysis.clamp import clamp_variants, linear_applies, linear_logits, linear_scores
from coopetition.interventions import intervene, parse_spec
from coopetition.model import ICLTransformer, ModelConfig
from coopetition.task.metrics import in_context_scores, readout_labels
from tests.analysis_handmade import handmade_data, handmade_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def deep_model(mlp_ratio=None) -> ICLTransformer:
    return ICLTransformer(ModelConfig(n_layers=3, d_model=16, n_heads=2, mlp_ratio=mlp_ratio), input_dim=8,
                          n_labels=8, n_outputs=8, init_seed=4).eval()


@pytest.mark.parametrize("build, strengths", [(handmade_model, (0.0, 0.25, 0.5, 0.75, 1.0)),
                                              (deep_model, (0.2, 0.35, 0.6, 0.9))], ids=["handmade", "3-layer"])
def test_the_stream_arithmetic_gives_every_strength_of_every_clamp(build, strengths):
    model, data = build(), handmade_data("flip", n=32, relabel="flip")
    forward = intervene((), model)
    assert linear_applies(forward)
    _, baseline = forward.run_cached(data.exemplars, data.context_labels, data.target)
    labelled = clamp_variants(model.cfg.n_layers, model.cfg.n_heads, strengths)
    variants = [v for _, v in labelled]
    readout = readout_labels(data.context_labels, data.target)
    exact = forward.run_variants(data.exemplars, data.context_labels, data.target, variants, readout, baseline)
    truth = in_context_scores(exact, data.context_labels, data.target)
    # sequences whose best two label logits are within rounding of each other: argmax there is a coin toss
    top2 = exact[..., :-1].topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 1e-4
    for max_rows in (data.n, 7 * data.n + 5, 4096):  # the fast path's own chunking must not matter
        fast = linear_logits(forward, data, baseline, variants, max_rows)
        torch.testing.assert_close(fast, exact, atol=2e-5, rtol=1e-5)
        got = in_context_scores(fast, data.context_labels, data.target)
        assert torch.equal(got["in_context_acc"][clear], truth["in_context_acc"][clear])
    scores = linear_scores(forward, data, baseline, variants, 4096)
    assert scores == {m: v.mean(dim=1).tolist() for m, v in got.items()}
    exact = {m: v.mean(dim=1).tolist() for m, v in truth.items()}
    induction = [i for i, (lab, _) in enumerate(labelled) if lab["intervention"] == "induction"]
    assert len(induction) == 3 * model.cfg.n_heads * len(strengths)
    # the S-dependence is real (not a constant curve that any method would reproduce)
    assert max(exact["in_context_prob"][i] for i in induction) - min(exact["in_context_prob"][i]
                                                                     for i in induction) > 0.1


def test_the_copier_known_answer_holds_on_the_fast_path():
    model, flip = handmade_model(), handmade_data("flip", relabel="flip")
    forward = intervene((), model)
    labelled = clamp_variants(2, 4, (0.0, 0.5, 1.0))
    _, cache = forward.run_cached(flip.exemplars, flip.context_labels, flip.target)
    scores = linear_scores(forward, flip, cache, [v for _, v in labelled], 4096)
    got = {(lab["condition"], lab["head"], lab["strength"]): (scores["in_context_acc"][i],
                                                                scores["in_context_prob"][i])
           for i, (lab, _) in enumerate(labelled) if lab["intervention"] == "induction"}
    from tests.test_analysis_known_answers import INDUCTION

    head = "L{}H{}".format(*INDUCTION)
    assert got["isolated", head, 0.0][0] == 0.0 and got["isolated", head, 1.0][0] == 1.0
    assert got["isolated", head, 0.5][1] == pytest.approx(0.5, abs=1e-4)


def test_not_used_where_it_would_not_be_exact():
    assert not linear_applies(intervene((), deep_model(mlp_ratio=2)))
    assert not linear_applies(intervene((parse_spec("ablate:0:1"),), deep_model()))
