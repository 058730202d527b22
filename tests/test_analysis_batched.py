"""Batched interventions equal the simple path: one plain intervened forward pass per variant.

``Intervened.run_variants`` tiles the input once per variant, chunks the tiles to ``max_rows`` sequences, starts a
variant from the baseline's cached residual of its first edited block, applies the run's own interventions to every
row and each variant's to its own rows, and reads only a few logits; the oracle here does none of that. Every
ablation variant (all heads x five methods, layers, composition, embeddings), every clamp variant and every patching
variant is checked, on a 3-layer model so that some variants start mid-network and the clamps of later layers matter.
"""

import pytest
import torch

from coopetition.analysis.ablation import ablation_variants
from coopetition.analysis.clamp import clamp_variants
from coopetition.analysis.pairs import build_pairs
from coopetition.analysis.patching import patch_variants
from coopetition.interventions import intervene, parse_spec
from coopetition.model import ICLTransformer, ModelConfig
from coopetition.task.metrics import readout_labels
from tests.analysis_handmade import handmade_data, handmade_model

# The hand-built model's logits reach ~30, where float32 spacing is ~2e-6: a batched pass may round differently
# (under TransformerLens 3.9 by 1.1e-5 at a logit of ~28), so a few ulps of relative slack on top of atol 1e-5.
CLOSE = dict(atol=1e-5, rtol=1e-6)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def deep_model() -> ICLTransformer:
    return ICLTransformer(ModelConfig(n_layers=3, d_model=16, n_heads=2), input_dim=8, n_labels=8, n_outputs=8,
                          init_seed=4).eval()


@torch.no_grad()
def one_forward_per_variant(model, data, readout, variants, own=()) -> torch.Tensor:
    """Each variant on its own: one full forward (every class's logits), then the readout labels picked."""
    return torch.stack([intervene((*own, *v), model)(data.exemplars, data.context_labels, data.target)
                        .gather(1, readout) for v in variants])


@pytest.mark.parametrize("build", [handmade_model, deep_model], ids=["handmade", "3-layer"])
def test_batched_ablation_and_clamping_equal_the_oracle(build):
    model, data = build(), handmade_data("flip", n=24, relabel="flip")
    forward = intervene((), model)
    _, baseline = forward.run_cached(data.exemplars, data.context_labels, data.target)
    variants = [v for _, v in ablation_variants(model.cfg.n_layers, model.cfg.n_heads)[0]]
    variants += [v for _, v in clamp_variants(model.cfg.n_layers, model.cfg.n_heads, (0.0, 0.3, 1.0))]
    readout = readout_labels(data.context_labels, data.target)
    expected = one_forward_per_variant(model, data, readout, variants)
    for max_rows in (data.n, 5 * data.n + 3, 1 << 20):  # one variant per pass, uneven chunks, one pass per start
        got = forward.run_variants(data.exemplars, data.context_labels, data.target, variants, readout, baseline,
                                   max_rows=max_rows)
        torch.testing.assert_close(got, expected, **CLOSE)
    without_baseline = forward.run_variants(data.exemplars, data.context_labels, data.target, variants, readout)
    torch.testing.assert_close(without_baseline, expected, **CLOSE)


def test_the_runs_own_interventions_apply_to_every_variant():
    model, data = deep_model(), handmade_data("ciwl", n=20, burstiness=0, assign_query_label_random=True)
    own = tuple(parse_spec(s) for s in ("ablate:0:1", "induction:2:0:0.7", "copy:2:1"))
    forward = intervene(own, model)
    _, baseline = forward.run_cached(data.exemplars, data.context_labels, data.target)
    variants = [(), (parse_spec("ablate:1:0"),), (parse_spec("ablate:2:1"),), (parse_spec("ablate_embed"),),
                (parse_spec("prev_token:0:0:1"),), (parse_spec("temperature:2:1:3"),)]
    readout = readout_labels(data.context_labels, data.target)
    got = forward.run_variants(data.exemplars, data.context_labels, data.target, variants, readout, baseline,
                               max_rows=50)
    torch.testing.assert_close(got, one_forward_per_variant(model, data, readout, variants, own), **CLOSE)
    assert (got[1:] - got[:1]).abs().amax() > 0.01


def test_batched_patching_equals_the_oracle():
    model = deep_model()
    forward = intervene((), model)
    [pair] = build_pairs({"flip": handmade_data("flip", n=16, relabel="flip")})
    x, y, t = pair.corrupt.exemplars, pair.corrupt.context_labels, pair.corrupt.target
    _, clean = forward.run_cached(pair.clean.exemplars, pair.clean.context_labels)
    _, corrupt = forward.run_cached(x, y)
    variants = [(patch,) for _, patch in patch_variants(model.cfg.n_layers, model.cfg.n_heads, n_pos=5)]
    expected = []
    with torch.no_grad():
        for (patch,) in variants:  # the oracle writes the clean activation in by hand
            name, index = patch.hook_name(model.model_config), (slice(None), *patch.index())

            def write(act, hook, name=name, index=index):
                act = act.clone()
                act[index] = clean[name][index]
                return act
            with model.hooked([(name, write)]):
                expected.append(model(x, y).gather(1, pair.answers))
    got = forward.run_variants(x, y, t, variants, pair.answers, corrupt, source=clean, max_rows=7 * pair.corrupt.n)
    torch.testing.assert_close(got, torch.stack(expected), **CLOSE)
    assert (got - got[:1]).abs().amax() > 0.01  # the patches change the answer somewhere
