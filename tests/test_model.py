"""The HookedTransformer adapter: parameter counts of REFERENCE.md 3.4, hook points, token layout, init."""

import pytest
import torch

from coopetition.model import ModelConfig, build_model

C25 = ModelConfig(n_layers=2, d_model=64, n_heads=8, positional="learned")


@pytest.mark.parametrize("config, n_classes, expected", [
    (C25, 12800, 1_719_232),  # C25 main
    (ModelConfig(n_layers=1), 12800, 1_702_720),  # depth1
    (ModelConfig(mlp_ratio=4), 12800, 1_785_664),  # appendix mlp
    (ModelConfig(positional="rotary"), 12800, 1_717_184),
    (ModelConfig(positional="sinusoidal"), 12800, 1_717_184),
    (ModelConfig(positional="learned"), 1600, 274_432),
    (ModelConfig(n_layers=12, mlp_ratio=4, positional="sinusoidal", sin_time=30.0), 12800, 2_280_896),
    (ModelConfig(positional="rotary"), 5, 66_629),  # IH24
])
def test_parameter_counts_match_reference_table(config, n_classes, expected):
    assert build_model(config, 512, n_classes, n_classes, init_seed=5).n_parameters() == expected


def test_c25_component_counts():
    model = build_model(C25, 512, 12800, 12800, init_seed=5)
    sizes = {name: p.numel() for name, p in model.named_parameters()}
    assert sizes["embed.W_x"] + sizes["embed.b_x"] == 32_832
    assert sizes["embed.W_L"] == 819_200
    assert sizes["pos_embed.W_pos"] == 2_048
    assert sizes["unembed.W_U"] + sizes["unembed.b_U"] == 832_000
    assert not any(name.endswith(("b_Q", "b_K", "b_V", "b_O")) for name in sizes)  # no attention biases


def test_initialisation_statistics():
    model = build_model(C25, 512, 12800, 12800, init_seed=5)
    assert model.embed.W_L.std().item() == pytest.approx(0.0176, abs=0.0005)  # truncated, not renormalised
    assert model.embed.W_L.abs().max().item() <= 0.04 + 1e-6
    assert (model.blocks[0].attn.W_Q.std() * 64**0.5).item() == pytest.approx(1.0, abs=0.03)  # lecun: var 1/fan_in
    assert (model.unembed.W_U.std() * 64**0.5).item() == pytest.approx(1.0, abs=0.03)
    assert model.pos_embed.W_pos.abs().max().item() <= 32**-0.5
    assert model.embed.b_x.abs().sum() == 0 and model.unembed.b_U.abs().sum() == 0
    same = build_model(C25, 512, 12800, 12800, init_seed=5)
    assert torch.equal(model.embed.W_x, same.embed.W_x)  # init is a pure function of the seed


def test_tokens_are_interleaved_exemplar_label_pairs_then_query():
    model = build_model(ModelConfig(d_model=16, n_heads=2), 8, 10, 10, init_seed=0)
    exemplars = torch.randn(3, 4, 8)
    labels = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    _, cache = model.run_cached(exemplars, labels)
    embed = cache["hook_embed"]
    assert embed.shape == (3, 7, 16)
    x = exemplars @ model.embed.W_x + model.embed.b_x
    assert torch.allclose(embed[:, 0::2], x, atol=1e-6)  # x1, x2, x3, xq at even positions
    assert torch.allclose(embed[:, 1::2], model.embed.W_L[labels], atol=1e-6)
    assert torch.allclose(cache["embed.hook_label_embed"], model.embed.W_L[labels])
    assert cache["blocks.1.attn.hook_pattern"].shape == (3, 2, 7, 7)


def test_query_logits_equal_last_position_of_all_logits():
    model = build_model(ModelConfig(d_model=16, n_heads=2), 8, 10, 10, init_seed=0)
    exemplars, labels = torch.randn(4, 3, 8), torch.randint(0, 10, (4, 2))
    assert torch.allclose(model(exemplars, labels), model(exemplars, labels, positions="all")[:, -1], atol=1e-5)


def test_run_with_hooks_can_zero_a_head():
    model = build_model(ModelConfig(d_model=16, n_heads=2), 8, 10, 10, init_seed=0)
    exemplars, labels = torch.randn(4, 3, 8), torch.randint(0, 10, (4, 2))

    def zero_all_heads(z, hook):
        return torch.zeros_like(z)

    hooks = [(f"blocks.{layer}.attn.hook_z", zero_all_heads) for layer in range(2)]
    ablated = model.run_with_hooks(exemplars, labels, fwd_hooks=hooks)
    # With every head zeroed the query logits depend only on the query token's own embedding + position.
    other_context = model.run_with_hooks(exemplars, torch.randint(0, 10, (4, 2)), fwd_hooks=hooks)
    assert torch.allclose(ablated, other_context, atol=1e-5)


def test_sinusoidal_positions_are_fixed_and_interleaved():
    model = build_model(ModelConfig(d_model=16, n_heads=2, positional="sinusoidal", sin_time=30.0), 8, 10, 10, 0)
    table = model.pos_embed.W_pos
    assert not table.requires_grad
    assert table[0, 0].item() == 0.0 and table[0, 1].item() == 1.0  # sin(0), cos(0)
    assert table[3, 2].item() == pytest.approx(torch.sin(torch.tensor(3 / 30 ** (2 / 16))).item(), abs=1e-6)


def test_run_with_cache_returns_an_activation_cache_whose_methods_decompose_the_logits():
    """TransformerLens's ``ActivationCache`` on our model: the residual decomposition sums to the stream the final
    LayerNorm reads, per-head results sum to each layer's attention output, and (LayerNorm weight 1, biases 0 at
    init) the components' logit attributions sum to the query logits."""
    from coopetition.model import ActivationCache

    model = build_model(ModelConfig(d_model=16, n_heads=2), 8, 10, 10, init_seed=0)
    exemplars, labels = torch.randn(4, 3, 8), torch.randint(0, 10, (4, 2))
    logits, cache = model.run_with_cache(exemplars, labels)
    assert isinstance(cache, ActivationCache)
    parts = cache.decompose_resid(layer=-1, pos_slice=-1)  # embed, pos_embed, attn_out per layer
    torch.testing.assert_close(parts.sum(0), cache["blocks.1.hook_resid_post"][:, -1], atol=1e-5, rtol=0)
    heads = cache.stack_head_results(layer=-1)  # [(layer head), batch, pos, d_model]
    torch.testing.assert_close(heads[2:].sum(0), cache["blocks.1.hook_attn_out"], atol=1e-5, rtol=0)
    target = torch.tensor([3, 1, 4, 1])
    attrs = cache.logit_attrs(parts, tokens=target, pos_slice=-1)  # [component, batch]
    torch.testing.assert_close(attrs.sum(0), logits[torch.arange(4), target], atol=1e-5, rtol=0)
