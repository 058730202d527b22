"""The lean block computes what TransformerLens's stock block computes: every activation ``run_with_cache`` records,
the logits and every gradient agree to 1e-5, with and without hooks that edit, on attention-only, MLP, sinusoidal
and rotary models; parameter names and shapes are the stock model's."""

import pytest
import torch

from coopetition.model import ICLTransformer, ModelConfig
from coopetition.model.lean import LeanAttention, LeanBlock, LeanUnembed

CONFIGS = {
    "attn-only learned": ModelConfig(n_layers=2, d_model=32, n_heads=4),
    "mlp sinusoidal": ModelConfig(n_layers=2, d_model=32, n_heads=4, mlp_ratio=4, positional="sinusoidal"),
    "rotary 3 layers": ModelConfig(n_layers=3, d_model=32, n_heads=4, positional="rotary"),
}
DIM, LABELS, N_CTX = 12, 7, 4


def _pair(config):
    stock = ICLTransformer(config, DIM, LABELS, LABELS, init_seed=3, lean=False)
    lean = ICLTransformer(config, DIM, LABELS, LABELS, init_seed=3, lean=True)
    assert all(type(b) is LeanBlock and type(b.attn) is LeanAttention for b in lean.blocks)
    assert type(lean.unembed) is LeanUnembed and type(stock.unembed) is not LeanUnembed
    assert not any(isinstance(b, LeanBlock) for b in stock.blocks)
    return stock, lean


def _batch(seed=0, n=6):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, N_CTX + 1, DIM, generator=gen), torch.randint(0, LABELS, (n, N_CTX), generator=gen)


def _no_stock_pass(monkeypatch):
    """From here on, a stock block or Q/K/V projection that runs is an error: the lean path must not fall back."""
    from transformer_lens.components import Attention, TransformerBlock, Unembed

    def refuse(*args, **kwargs):
        raise AssertionError("the lean model fell back to the stock block")

    monkeypatch.setattr(TransformerBlock, "forward", refuse)
    monkeypatch.setattr(Attention, "calculate_qkv_matrices", refuse)
    monkeypatch.setattr(Unembed, "forward", refuse)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_every_cached_activation_and_gradient_matches_the_stock_blocks(config, monkeypatch):
    stock, lean = _pair(config)
    assert [(n, p.shape) for n, p in stock.named_parameters()] == [(n, p.shape) for n, p in lean.named_parameters()]
    assert stock.hook_names() == lean.hook_names()
    exemplars, labels = _batch()
    stock_logits, stock_cache = stock.run_cached(exemplars, labels)
    stock_logits.logsumexp(-1).sum().backward()
    _no_stock_pass(monkeypatch)
    lean_logits, lean_cache = lean.run_cached(exemplars, labels)
    lean_logits.logsumexp(-1).sum().backward()
    assert set(stock_cache.keys()) == set(lean_cache.keys())
    assert len(stock_cache.keys()) >= 12 * config.n_layers  # resid, ln scale/normalized, q/k/v, scores, pattern, z ...
    for name in stock_cache.keys():
        torch.testing.assert_close(lean_cache[name], stock_cache[name], atol=1e-5, rtol=0, msg=name)
    torch.testing.assert_close(lean_logits, stock_logits, atol=1e-5, rtol=0)
    for (name, stock_param), lean_param in zip(stock.named_parameters(), lean.parameters()):
        torch.testing.assert_close(lean_param.grad, stock_param.grad, atol=1e-5, rtol=0, msg=name)


def test_hooks_that_edit_see_and_change_the_same_values():
    """An in-place edit of one head's values, a rescaled LayerNorm output and a zeroed pattern row, on both."""
    stock, lean = _pair(CONFIGS["mlp sinusoidal"])

    def zero_head(value, hook):
        value[:, :, 1] = 0.0  # in place, on the lean model a view into the fused Q/K/V product

    def rescale(value, hook):
        return 2.0 * value

    def drop_first_key(pattern, hook):
        return torch.cat([torch.zeros_like(pattern[..., :1]), pattern[..., 1:]], dim=-1)

    hooks = [("blocks.0.attn.hook_v", zero_head), ("blocks.1.ln1.hook_normalized", rescale),
             ("blocks.1.attn.hook_pattern", drop_first_key)]
    exemplars, labels = _batch(seed=1)
    with stock.hooked(hooks):
        expected = stock(exemplars, labels, positions="all")
    with lean.hooked(hooks):
        got = lean(exemplars, labels, positions="all")
    plain = lean(exemplars, labels, positions="all")
    assert (got - plain).abs().max() > 1e-2  # the edits matter
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_per_head_hooks_hand_the_pass_to_the_stock_block():
    """Split Q/K/V inputs are the stock block's hooks: the lean model serves them by falling back, same values."""
    stock, lean = _pair(CONFIGS["attn-only learned"])
    exemplars, labels = _batch(seed=2)
    with stock.per_head_hooks():
        _, expected = stock.run_cached(exemplars, labels)
    with lean.per_head_hooks():
        _, got = lean.run_cached(exemplars, labels)
    assert "blocks.0.hook_q_input" in got.keys() and set(got.keys()) == set(expected.keys())
    for name in expected.keys():
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_the_fused_kernels_with_nothing_attached_compute_the_stock_function(config, monkeypatch):
    """Switched on, in train mode, no hook attached: attention runs scaled_dot_product_attention and LayerNorm
    F.layer_norm (except rotary attention, which keeps TransformerLens's path); logits and every gradient agree with
    the stock blocks."""
    from transformer_lens.components import LayerNorm

    stock, lean = _pair(config)
    lean.fuse_training_kernels()
    exemplars, labels = _batch(seed=2)
    stock_logits = stock(exemplars, labels, positions="all")
    stock_logits.logsumexp(-1).sum().backward()
    fused = []
    monkeypatch.setattr(LayerNorm, "forward", lambda *a, **k: (_ for _ in ()).throw(AssertionError("stock LN ran")))
    real_sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: fused.append(1) or real_sdpa(*a, **k))
    lean_logits = lean(exemplars, labels, positions="all")
    lean_logits.logsumexp(-1).sum().backward()
    assert len(fused) == (0 if config.positional == "rotary" else config.n_layers)
    torch.testing.assert_close(lean_logits, stock_logits, atol=1e-5, rtol=0)
    for (name, stock_param), lean_param in zip(stock.named_parameters(), lean.parameters()):
        torch.testing.assert_close(lean_param.grad, stock_param.grad, atol=1e-5, rtol=1e-5, msg=name)  # sums of ~50


def test_attaching_a_hook_takes_the_hooked_path_and_detaching_it_restores_the_kernel(monkeypatch):
    _, lean = _pair(CONFIGS["attn-only learned"])
    lean.fuse_training_kernels()
    exemplars, labels = _batch(seed=3)
    seen, fused = [], []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: fused.append(1) or real_sdpa(*a, **k))
    plain = lean(exemplars, labels)
    assert len(fused) == 2
    with lean.hooked([("blocks.1.attn.hook_pattern", lambda pattern, hook: seen.append(pattern.shape))]):
        hooked = lean(exemplars, labels)
    assert seen == [torch.Size([6, 4, 2 * N_CTX + 1, 2 * N_CTX + 1])]
    torch.testing.assert_close(hooked, plain, atol=1e-5, rtol=0)
    assert len(fused) == 3  # layer 0 had no hook attached: still fused
    assert not any(p._forward_hooks for p in lean.hook_dict.values())  # nothing left attached
    lean.eval()  # evaluation and analysis: TransformerLens's path, the bits eval.csv and analyze share
    lean(exemplars, labels)
    assert len(fused) == 3


def test_the_trainer_switches_the_kernels_on():
    from coopetition.model.lean import LeanAttention
    from coopetition.presets import get_preset
    from coopetition.train.loop import build_training

    config = get_preset("quick")
    small = config.to_dict()
    small["bank"].update(classes=40, exemplars=4, dim=8)
    small["eval"]["n_seqs"] = 20
    from coopetition.config import config_from_dict

    run = build_training(config_from_dict(small), None)
    assert all(m.fused for m in run.model.modules() if isinstance(m, LeanAttention))
