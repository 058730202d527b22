"""The cheap readout and the batched-variant runner reproduce the model's own forward pass."""

import torch

from coopetition.analysis.edits import Edit, Variant, run_variants
from coopetition.analysis.readout import in_context_scores, readout_labels
from coopetition.model import ICLTransformer, ModelConfig
from coopetition.task.metrics import query_metrics
from tests.analysis_handmade import handmade_data


def random_model(seed: int = 1) -> ICLTransformer:
    return ICLTransformer(ModelConfig(n_layers=2, d_model=16, n_heads=2), input_dim=8, n_labels=8, n_outputs=8,
                          init_seed=seed).eval()


def test_readout_matches_the_models_logits_and_metrics():
    model, data = random_model(), handmade_data("ciwl", burstiness=0, assign_query_label_random=True)
    readout = readout_labels(data.context_labels, data.target)
    with torch.no_grad():
        full = model(data.exemplars, data.context_labels)
    [clean] = run_variants(model, data.exemplars, data.context_labels, readout, [Variant({})])
    assert torch.allclose(clean, full.gather(1, readout), atol=1e-5)
    ours = in_context_scores(clean, data.context_labels, data.target)
    ref = query_metrics(full, data.target, data.context_labels)
    for metric in ("in_context_acc", "in_context_prob"):
        assert torch.allclose(ours[metric], ref[metric], atol=1e-5)


def test_starting_from_the_cached_residual_changes_nothing():
    model, data = random_model(), handmade_data("flip", relabel="flip")
    _, cache = model.run_with_cache(data.exemplars, data.context_labels)
    zero = torch.zeros_like(cache["blocks.1.attn.hook_z"][:1])
    variants = [Variant({"v": "l1"}, (Edit("blocks.1.attn.hook_z", zero, (slice(None), 0)),)),
                Variant({"v": "l0"}, (Edit("blocks.0.attn.hook_z", zero, (slice(None), 1)),)),
                Variant({"v": "clamped"}, (Edit("blocks.0.attn.hook_pattern", cache["blocks.0.attn.hook_pattern"],
                                                clamp=True),))]
    readout = readout_labels(data.context_labels, data.target)
    fast = run_variants(model, data.exemplars, data.context_labels, readout, variants, base=cache, max_rows=300)
    slow = run_variants(model, data.exemplars, data.context_labels, readout, variants)
    assert torch.allclose(fast, slow, atol=1e-5)
    assert not torch.allclose(fast[0], fast[2])  # the ablation did something; the clamp did not
    assert torch.allclose(fast[2], run_variants(model, data.exemplars, data.context_labels, readout, [Variant({})])[0],
                          atol=1e-5)


def test_keeping_patterns_or_values_is_moot_for_a_last_layer_head():
    """Why ablation reports zero_keep_* of last-layer units as plain zero without running them."""
    model, data = random_model(2), handmade_data("train")
    _, cache = model.run_with_cache(data.exemplars, data.context_labels)
    zero = Edit("blocks.1.attn.hook_z", torch.zeros_like(cache["blocks.1.attn.hook_z"][:1]), (slice(None), 1))
    keep = [Edit(f"blocks.{l}.attn.hook_{what}", cache[f"blocks.{l}.attn.hook_{what}"], clamp=True)
            for l in range(2) for what in ("pattern", "v")]
    readout = readout_labels(data.context_labels, data.target)
    plain, kept = run_variants(model, data.exemplars, data.context_labels, readout,
                               [Variant({}, (zero,)), Variant({}, (zero, *keep))])
    assert torch.allclose(plain, kept, atol=1e-6)
