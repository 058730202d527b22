"""The stream arithmetic (``interventions/stream.py``) behind the fast clamp and ablation analyses, against one
hooked pass per variant (``Intervened.run_variants``, the reference).

Random attention-only models of 1, 2 and 3 layers (learned and rotary positions), in float64 (equal to 1e-10:
the same function, the sums in another order) and float32 (to float rounding), on contexts of 2 and 4 pairs; the
variants are exactly the ones the analyses run. Where the arithmetic would not be exact (an MLP, a run edit, a
variant shape it does not know) the reference path runs instead, and the answers are still the reference's."""

from dataclasses import replace

import pytest
import torch

from coopetition.analysis.ablation import ablation_variants
from coopetition.analysis.clamp import _plan, clamp_variants, linear_applies, linear_logits
from coopetition.interventions import intervene, parse_spec, stream
from coopetition.model import ICLTransformer, ModelConfig
from coopetition.task.metrics import readout_labels
from tests.analysis_handmade import handmade_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPES = [(1, "learned", 2), (2, "learned", 2), (2, "rotary", 2), (3, "learned", 2), (2, "learned", 4)]
SHAPE_IDS = ["1-layer", "2-layer", "2-layer-rotary", "3-layer", "2-layer-ctx4"]
TOLERANCE = {torch.float64: dict(atol=1e-10, rtol=1e-10), torch.float32: dict(atol=2e-5, rtol=1e-5)}


def random_model(n_layers: int, positional: str = "learned", dtype=torch.float64, mlp_ratio=None,
                 seed: int = 4) -> ICLTransformer:
    """A random network with non-zero biases where the architecture has them (LayerNorm, unembedding, b_O), so a
    formula that forgets one is caught."""
    model = ICLTransformer(ModelConfig(n_layers=n_layers, d_model=16, n_heads=4, positional=positional,
                                       mlp_ratio=mlp_ratio), input_dim=8, n_labels=8, n_outputs=8,
                           init_seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".w", ".b", "b_U", "b_x")):
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
        for block in model.blocks:
            block.attn.b_O.add_(0.2 * torch.randn(block.attn.b_O.shape, generator=gen))
    return model.to(dtype)


def inputs(dtype, context_len: int = 2, n: int = 24):
    data = handmade_data("flip", n=n, relabel="flip", context_len=context_len,
                         burstiness=2 if context_len == 4 else 1)
    data = replace(data, exemplars=data.exemplars.to(dtype))
    return data, data.exemplars


def reference(forward, data, exemplars, variants, baseline):
    labels = readout_labels(data.context_labels, data.target)
    return forward.run_variants(exemplars, data.context_labels, data.target, variants, labels, baseline), labels


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("n_layers, positional, context_len", SHAPES, ids=SHAPE_IDS)
def test_ablation_stream_arithmetic_equals_one_pass_per_variant(n_layers, positional, context_len, dtype):
    model = random_model(n_layers, positional, dtype)
    data, exemplars = inputs(dtype, context_len)
    forward = intervene((), model)
    assert stream.applies(forward)
    _, baseline = forward.run_cached(exemplars, data.context_labels, data.target)
    labelled, _ = ablation_variants(n_layers, model.cfg.n_heads)
    variants = [()] + [v for _, v in labelled]
    slow, labels = reference(forward, data, exemplars, variants, baseline)
    plans = [stream.ablation_plan(v, forward.network) for v in variants]
    # two and fewer layers: every variant of the analysis; three: all but those preserving a middle block
    uncovered = [" + ".join(i.spec for i in v) for v, p in zip(variants, plans) if p is None]
    if n_layers <= 2:
        assert not uncovered
    else:
        assert uncovered and all("preserve" in spec for spec in uncovered)
    for max_rows in (data.n, 5 * data.n + 3, 4096):  # chunking must not matter
        fast = stream.ablation_logits(forward, exemplars, data.context_labels, data.target, variants, labels,
                                      baseline, max_rows)
        assert fast.dtype == dtype
        torch.testing.assert_close(fast, slow, **TOLERANCE[dtype])
    # the ablations change the answer (the comparison is not of constants)
    assert (slow - slow[:1]).abs().amax(dim=(1, 2)).gt(1e-3).sum() >= len(variants) // 2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("n_layers, positional, context_len", SHAPES, ids=SHAPE_IDS)
def test_clamp_stream_arithmetic_equals_one_pass_per_variant(n_layers, positional, context_len, dtype):
    model = random_model(n_layers, positional, dtype, seed=7)
    data, exemplars = inputs(dtype, context_len)
    forward = intervene((), model)
    assert linear_applies(forward)
    _, baseline = forward.run_cached(exemplars, data.context_labels, data.target)
    variants = [v for _, v in clamp_variants(n_layers, model.cfg.n_heads, (0.0, 0.3, 0.55, 1.0))]
    assert all(_plan(v, n_layers, model.cfg.n_heads) is not None for v in variants)
    slow, _ = reference(forward, data, exemplars, variants, baseline)
    for max_rows in (data.n, 7 * data.n + 5, 4096):
        fast = linear_logits(forward, data, baseline, variants,
                             max_rows)
        torch.testing.assert_close(fast, slow, **TOLERANCE[dtype])
    # the strength matters for both clamp kinds
    for kind in ("induction", "prev_token"):
        members = [i for i, v in enumerate(variants) if type(v[-1]).__name__ == {"induction": "Induction",
                                                                                  "prev_token": "PrevToken"}[kind]]
        if members:
            assert (slow[members] - slow[members].mean(0)).abs().max() > 1e-3


def test_unknown_variant_shapes_run_one_pass_each():
    """Variants the arithmetic does not cover take the reference path, mixed with covered ones."""
    model = random_model(3, dtype=torch.float64)
    data, exemplars = inputs(torch.float64)
    forward = intervene((), model)
    _, baseline = forward.run_cached(exemplars, data.context_labels, data.target)
    specs = [(), ("ablate:0:1,2:0",), ("ablate:0:1", "preserve:values:1"), ("ablate:1:*,2:*:mean",),
             ("temperature:1:0:2",), ("ablate_embed", "preserve:patterns"), ("ablate:1:2:resample",)]
    variants = [tuple(parse_spec(s) for s in spec) for spec in specs]
    covered = [stream.ablation_plan(v, forward.network) is not None for v in variants]
    assert covered == [True, False, False, True, False, False, True]
    slow, labels = reference(forward, data, exemplars, variants, baseline)
    fast = stream.ablation_logits(forward, exemplars, data.context_labels, data.target, variants, labels, baseline,
                                  4096)
    torch.testing.assert_close(fast, slow, **TOLERANCE[torch.float64])
    clamps = [(parse_spec("prev_token:0:1:0.5:labels"),), (parse_spec("induction:2:0,2:1:0.5"),),
              (parse_spec("ablate:2:1"), parse_spec("induction:2:0:0.4"))]
    assert all(_plan(v, 3, model.cfg.n_heads) is None for v in clamps)
    slow, _ = reference(forward, data, exemplars, clamps, baseline)
    fast = linear_logits(forward, data, baseline, clamps, 4096)
    torch.testing.assert_close(fast, slow, **TOLERANCE[torch.float64])


@pytest.mark.parametrize("forward", [
    lambda: intervene((), random_model(2, mlp_ratio=2)),
    lambda: intervene((parse_spec("ablate:0:1"),), random_model(2)),
    lambda: intervene((parse_spec("temperature:1:0:2"),), random_model(2)),
], ids=["mlp", "run-ablation", "run-temperature"])
def test_falls_back_where_not_exact(forward):
    """An MLP after the change, or a run edit that could act anywhere: every variant runs through the reference
    path, so the answers are the reference's exactly (bit for bit)."""
    forward = forward()
    assert not stream.applies(forward) and not linear_applies(forward)
    data, exemplars = inputs(torch.float64)
    _, baseline = forward.run_cached(exemplars, data.context_labels, data.target)
    labelled, _ = ablation_variants(2, 4)
    variants = [()] + [v for _, v in labelled]
    slow, labels = reference(forward, data, exemplars, variants, baseline)
    fast = stream.ablation_logits(forward, exemplars, data.context_labels, data.target, variants, labels, baseline,
                                  2048)
    assert torch.equal(fast, slow)
