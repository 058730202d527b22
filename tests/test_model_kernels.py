"""The fused training kernels compute the hooked path's function: with ``fuse_training_kernels`` on, in train mode
and with nothing attached, attention runs ``scaled_dot_product_attention`` and LayerNorm ``F.layer_norm``; logits and
every gradient agree with the hooked path (which ``tests/test_model_reference.py`` holds to the previous release).
Attaching a hook, eval mode and rotary attention take the hooked path."""

import pytest
import torch

from coopetition.model import ICLTransformer, ModelConfig
from coopetition.model.components import Attention

CONFIGS = {
    "attn-only learned": ModelConfig(n_layers=2, d_model=32, n_heads=4),
    "mlp sinusoidal": ModelConfig(n_layers=2, d_model=32, n_heads=4, mlp_ratio=4, positional="sinusoidal"),
    "rotary 3 layers": ModelConfig(n_layers=3, d_model=32, n_heads=4, positional="rotary"),
}
DIM, LABELS, N_CTX = 12, 7, 4


def _pair(config):
    plain = ICLTransformer(config, DIM, LABELS, LABELS, init_seed=3)
    fused = ICLTransformer(config, DIM, LABELS, LABELS, init_seed=3)
    fused.fuse_training_kernels()
    return plain, fused


def _batch(seed=0, n=6):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, N_CTX + 1, DIM, generator=gen), torch.randint(0, LABELS, (n, N_CTX), generator=gen)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_the_fused_kernels_with_nothing_attached_compute_the_hooked_function(config, monkeypatch):
    """Switched on, in train mode, no hook attached: attention runs scaled_dot_product_attention (except rotary
    attention) and LayerNorm F.layer_norm; logits and every gradient agree with the hooked path."""
    stock, lean = _pair(config)
    exemplars, labels = _batch(seed=2)
    stock_logits = stock(exemplars, labels, positions="all")
    stock_logits.logsumexp(-1).sum().backward()
    fused = []
    layer_norms = []
    real_ln = torch.nn.functional.layer_norm
    monkeypatch.setattr(torch.nn.functional, "layer_norm", lambda *a, **k: layer_norms.append(1) or real_ln(*a, **k))
    real_sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: fused.append(1) or real_sdpa(*a, **k))
    lean_logits = lean(exemplars, labels, positions="all")
    lean_logits.logsumexp(-1).sum().backward()
    assert len(fused) == (0 if config.positional == "rotary" else config.n_layers)
    assert len(layer_norms) == config.n_layers * (1 if config.attn_only else 2) + 1
    torch.testing.assert_close(lean_logits, stock_logits, atol=1e-5, rtol=0)
    for (name, stock_param), lean_param in zip(stock.named_parameters(), lean.parameters()):
        torch.testing.assert_close(lean_param.grad, stock_param.grad, atol=1e-5, rtol=1e-5, msg=name)  # sums of ~50


def test_attaching_a_hook_takes_the_hooked_path_and_detaching_it_restores_the_kernel(monkeypatch):
    _, lean = _pair(CONFIGS["attn-only learned"])
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
    lean.eval()  # evaluation and analysis: the hooked path, the bits eval.csv and analyze share
    lean(exemplars, labels)
    assert len(fused) == 3


def test_the_trainer_switches_the_kernels_on():
    from coopetition.presets import get_preset
    from coopetition.train.loop import build_training

    config = get_preset("quick")
    small = config.to_dict()
    small["bank"].update(classes=40, exemplars=4, dim=8)
    small["eval"]["n_seqs"] = 20
    from coopetition.config import config_from_dict

    run = build_training(config_from_dict(small), None)
    assert all(m.fused for m in run.model.modules() if isinstance(m, Attention))
