"""The label readout and the batched-variant runner reproduce the model's own forward pass."""

import torch

from coopetition.interventions import intervene, parse_spec
from coopetition.model import ICLTransformer, ModelConfig
from coopetition.task.metrics import in_context_scores, query_metrics, readout_labels
from tests.analysis_handmade import handmade_data


def random_model(seed: int = 1) -> ICLTransformer:
    return ICLTransformer(ModelConfig(n_layers=2, d_model=16, n_heads=2), input_dim=8, n_labels=8, n_outputs=8,
                          init_seed=seed).eval()


def test_readout_matches_the_models_logits_and_metrics():
    model, data = random_model(), handmade_data("ciwl", burstiness=0, assign_query_label_random=True)
    readout = readout_labels(data.context_labels, data.target)
    with torch.no_grad():
        full = model(data.exemplars, data.context_labels)
        picked = model(data.exemplars, data.context_labels, labels=readout)
        [clean] = intervene((), model).run_variants(data.exemplars, data.context_labels, data.target, [()], readout)
    torch.testing.assert_close(picked, full.gather(1, readout), atol=1e-5, rtol=0)
    torch.testing.assert_close(clean, picked, atol=0, rtol=0)
    ours = in_context_scores(clean, data.context_labels, data.target)
    ref = query_metrics(full, data.target, data.context_labels)
    for metric in ("in_context_acc", "in_context_prob"):
        assert torch.allclose(ours[metric], ref[metric], atol=1e-5)


def test_starting_from_the_cached_residual_changes_nothing():
    model, data = random_model(), handmade_data("flip", relabel="flip")
    forward = intervene((), model)
    _, cache = forward.run_cached(data.exemplars, data.context_labels)
    variants = [(parse_spec("ablate:1:0"),), (parse_spec("ablate:0:1"),), (parse_spec("preserve:patterns:0"),), ()]
    readout = readout_labels(data.context_labels, data.target)
    args = (data.exemplars, data.context_labels, data.target, variants, readout)
    fast = forward.run_variants(*args, baseline=cache, max_rows=300)
    slow = forward.run_variants(*args)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    assert not torch.allclose(fast[0], fast[2])  # the ablation did something; the clamp did not
    torch.testing.assert_close(fast[2], fast[3], atol=1e-5, rtol=0)


def test_keeping_patterns_or_values_is_moot_for_a_last_layer_head():
    """Why ablation reports zero_keep_* of last-layer units as plain zero without running them."""
    model, data = random_model(2), handmade_data("train")
    forward = intervene((), model)
    _, cache = forward.run_cached(data.exemplars, data.context_labels)
    readout = readout_labels(data.context_labels, data.target)
    plain, kept = forward.run_variants(data.exemplars, data.context_labels, data.target,
                                       [(parse_spec("ablate:1:1"),),
                                        (parse_spec("ablate:1:1"), parse_spec("preserve:patterns+values"))],
                                       readout, cache)
    torch.testing.assert_close(plain, kept, atol=1e-6, rtol=0)
