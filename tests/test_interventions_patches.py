"""The fast exact activation patching (``interventions.patches``) against one hooked ``Patch`` variant per site
(``Intervened.run_variants``), on random networks of every architecture the model builds."""

from dataclasses import replace

import pytest
import torch

from coopetition.analysis.pairs import ciwl_vs_iwl, icl_swap
from coopetition.analysis.patching import patch_variants
from coopetition.interventions import Intervened, Patch, intervene
from coopetition.interventions.patches import patched_logits, usable
from coopetition.model import ICLTransformer, ModelConfig
from tests.analysis_handmade import handmade_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _both(model, pair, patches, max_rows=256):
    forward = Intervened(model)
    x = pair.corrupt
    _, clean = forward.run_cached(pair.clean.exemplars, pair.clean.context_labels)
    reference, corrupt = forward.run_cached(x.exemplars, x.context_labels, labels=pair.answers)
    slow = forward.run_variants(x.exemplars, x.context_labels, None, [(p,) for p in patches], pair.answers,
                                baseline=corrupt, source=clean, max_rows=max_rows)
    fast = patched_logits(model, patches, corrupt, clean, pair.answers, reference, max_rows=max_rows)
    return slow, fast, reference


def _cast(pair, dtype):
    return replace(pair, clean=replace(pair.clean, exemplars=pair.clean.exemplars.to(dtype)),
                   corrupt=replace(pair.corrupt, exemplars=pair.corrupt.exemplars.to(dtype)))


@pytest.mark.parametrize("config", [
    dict(n_layers=2, d_model=32, n_heads=4),
    dict(n_layers=3, d_model=32, n_heads=4, mlp_ratio=2),
    dict(n_layers=2, d_model=32, n_heads=4, positional="rotary"),
    dict(n_layers=3, d_model=32, n_heads=2, positional="sinusoidal", mlp_ratio=1),
    dict(n_layers=1, d_model=32, n_heads=2),
], ids=["attn-only", "mlp", "rotary", "sinusoidal-mlp", "one-layer"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fast_patching_equals_one_hooked_variant_per_site(config, dtype):
    """Known answer: the hooked path on random weights, every site of the patching analysis (resid at every
    boundary x position, each head's z over all positions and per position, q, k, v, pattern), plus per-position
    q/k/v/pattern patches it does not use. float64: equal to 1e-10 (the same function); float32: to rounding."""
    icl = handmade_data("icl", n=12, relabel="01")
    ciwl = handmade_data("ciwl", n=12, burstiness=0, assign_query_label_random=True)
    cfg = ModelConfig(**config)
    model = ICLTransformer(cfg, input_dim=icl.exemplars.shape[-1], n_labels=64, n_outputs=64, init_seed=3).to(dtype)
    with torch.no_grad():  # larger weights than the init's, so that patches move the logits well above rounding
        for p in model.parameters():
            p.mul_(2.0)
    n_pos = icl.classes.shape[1] * 2 - 1
    patches = [p for _, p in patch_variants(cfg.n_layers, cfg.n_heads, n_pos)]
    patches += [Patch(part, l, h, pos) for part in ("q", "k", "v", "pattern") for l in range(cfg.n_layers)
                for h in (0, cfg.n_heads - 1) for pos in (0, n_pos - 1)]
    assert usable(Intervened(model), patches)
    for pair in (icl_swap(icl), ciwl_vs_iwl(ciwl)):
        slow, fast, reference = _both(model, _cast(pair, dtype), patches)
        assert (slow - reference).abs().amax() > 0.5  # the test can fail: patches do change the logits
        tolerance = 1e-10 if dtype == torch.float64 else 5e-6 * float(slow.abs().amax())
        torch.testing.assert_close(fast, slow, atol=tolerance, rtol=0)
        # the clean stream after the last block at the query restores the clean logits exactly on both paths
        final = patches.index(Patch("resid", cfg.n_layers, None, n_pos - 1))
        assert (fast[final] - slow[final]).abs().amax() <= tolerance


def test_chunking_does_not_change_the_answer():
    icl = handmade_data("icl", n=12, relabel="01")
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4)
    model = ICLTransformer(cfg, input_dim=icl.exemplars.shape[-1], n_labels=64, n_outputs=64, init_seed=5)
    model = model.double()
    patches = [p for _, p in patch_variants(2, 4, 5)]
    pair = _cast(icl_swap(icl), torch.float64)
    _, one, _ = _both(model, pair, patches, max_rows=12)
    _, many, _ = _both(model, pair, patches, max_rows=4096)
    torch.testing.assert_close(one, many, atol=1e-12, rtol=0)


def test_not_usable_under_hook_interventions():
    """The run's own hook interventions edit every pass: the fast path would skip them, so it declines."""
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4)
    model = ICLTransformer(cfg, input_dim=16, n_labels=64, n_outputs=64, init_seed=3)
    patches = [Patch("z", 0, 1)]
    assert usable(Intervened(model), patches)
    assert not usable(intervene(["ablate:0:1"], model), patches)
    with model.per_head_hooks():
        assert not usable(Intervened(model), patches)
