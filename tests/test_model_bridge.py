"""``to_hooked_transformer()``: on TransformerLens 2.x/3.x a real ``HookedTransformer`` with our weights whose logits
(and cached activations) equal ours; on 4.x, which removed ``HookedTransformer``, a one-line error saying so."""

import warnings

import pytest
import torch

from coopetition.model import ModelConfig, build_model
from coopetition.model.tl import TL_MAJOR

CONFIGS = {
    "learned": ModelConfig(n_layers=2, d_model=16, n_heads=2),
    "sinusoidal mlp": ModelConfig(n_layers=2, d_model=16, n_heads=4, mlp_ratio=2, positional="sinusoidal"),
    "rotary": ModelConfig(n_layers=1, d_model=16, n_heads=2, positional="rotary", sin_time=100.0),
}


def _inputs(model, n=5, n_ctx=3):
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(n, n_ctx + 1, model.input_dim, generator=gen),
            torch.randint(0, model.n_labels, (n, n_ctx), generator=gen))


@pytest.mark.skipif(TL_MAJOR >= 4, reason="TransformerLens 4 has no HookedTransformer")
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_the_hooked_transformer_computes_our_logits(config):
    from transformer_lens import HookedTransformer

    model = build_model(config, 6, 5, 9, init_seed=4)
    with torch.no_grad():  # trained-looking weights: biases and LayerNorm parameters away from their init
        for name, param in model.named_parameters():
            param.add_(0.05 * torch.randn_like(param))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TL 3.x: "HookedTransformer is deprecated"
        ht = model.to_hooked_transformer()
    assert type(ht) is HookedTransformer
    exemplars, labels = _inputs(model)
    with torch.no_grad():
        ours, cache = model.run_with_cache(exemplars, labels, positions="all")
        theirs, their_cache = ht.run_with_cache(model.embed_input(exemplars, labels), start_at_layer=0)
    assert theirs.shape == ours.shape == (5, 7, 9)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    for name in (f"blocks.{config.n_layers - 1}.attn.hook_pattern", "blocks.0.attn.hook_z", "ln_final.hook_scale"):
        torch.testing.assert_close(their_cache[name], cache[name], atol=1e-5, rtol=0, msg=name)
    with torch.no_grad():
        ht.blocks[0].attn.W_Q.zero_()
    assert model.blocks[0].attn.W_Q.abs().sum() > 0  # a copy: editing it leaves ours alone


@pytest.mark.skipif(TL_MAJOR < 4, reason="the bridge exists on TransformerLens 2.x/3.x")
def test_on_transformer_lens_4_the_bridge_is_a_one_line_error():
    from coopetition.model.bridge import BridgeUnavailable

    model = build_model(CONFIGS["learned"], 6, 5, 9, init_seed=4)
    with pytest.raises(BridgeUnavailable, match=r"needs TransformerLens 2.x or 3.x: 4\.\d+\.\d+ removed") as err:
        model.to_hooked_transformer()
    assert "\n" not in str(err.value)
