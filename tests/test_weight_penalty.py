"""The weight penalty against a hand computation over named tensors (REFERENCE 4.1: main.py L81-82).

The reference's ``unsquared`` penalty is a sum of L2 norms over its parameter arrays, and it has one fused QKV array
per layer: its norm is sqrt(|W_Q|^2 + |W_K|^2 + |W_V|^2), not |W_Q| + |W_K| + |W_V|.
"""

import pytest
import torch

from coopetition.model import ModelConfig, build_model
from coopetition.train.loop import train
from coopetition.train.step import TrainStep, parameter_names, reference_arrays, weight_penalty
from tests.conftest import tiny_run_config


@pytest.fixture
def model():
    """2 layers, attention-only, learned positions; every tensor random (at init biases are 0 and would hide terms)."""
    net = build_model(ModelConfig(n_layers=2, d_model=8, n_heads=2, positional="learned"), 4, 6, 6, init_seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return net


def norm(t):
    return t.pow(2).sum().sqrt()


def hand_unsquared(p: dict, layers=(0, 1), embed=True, final=True) -> torch.Tensor:
    total = torch.zeros(())
    if embed:  # exemplar-embed weight and bias, label table, APE table: four arrays
        total = total + norm(p["embed.W_x"]) + norm(p["embed.b_x"]) + norm(p["embed.W_L"]) + norm(p["pos_embed.W_pos"])
    for layer in layers:
        a = f"blocks.{layer}"
        qkv = (norm(p[f"{a}.attn.W_Q"]) ** 2 + norm(p[f"{a}.attn.W_K"]) ** 2 + norm(p[f"{a}.attn.W_V"]) ** 2).sqrt()
        total = total + norm(p[f"{a}.ln1.w"]) + norm(p[f"{a}.ln1.b"]) + qkv + norm(p[f"{a}.attn.W_O"])
    if final:  # final LN scale and shift, unembed weight and bias
        total = total + norm(p["ln_final.w"]) + norm(p["ln_final.b"]) + norm(p["unembed.W_U"]) + norm(p["unembed.b_U"])
    return total


def test_unsquared_penalty_is_the_reference_sum_over_its_arrays(model):
    p = dict(model.named_parameters())
    # the hand computation above names every parameter: nothing is left out, and no attention bias exists
    named = {"embed.W_x", "embed.b_x", "embed.W_L", "pos_embed.W_pos", "ln_final.w", "ln_final.b", "unembed.W_U",
             "unembed.b_U"} | {f"blocks.{l}.{n}" for l in (0, 1)
                               for n in ("ln1.w", "ln1.b", "attn.W_Q", "attn.W_K", "attn.W_V", "attn.W_O")}
    assert set(p) == named
    arrays = reference_arrays(parameter_names(model, list(model.parameters())))
    assert len(arrays) == 4 + 2 * 4 + 4  # 16 arrays: QKV fused, so 3 fewer per layer than our 20 tensors
    got = weight_penalty(arrays, "unsquared")
    assert got.item() == pytest.approx(hand_unsquared(p).item(), rel=1e-6)
    per_tensor = sum(norm(t) for t in p.values())  # the wrong answer: three separate Q/K/V norms
    assert per_tensor.item() > got.item() + 1.0


def test_l2_penalty_is_the_sum_of_squares_of_every_tensor(model):
    p = dict(model.named_parameters())
    arrays = reference_arrays(parameter_names(model, list(model.parameters())))
    assert weight_penalty(arrays, "l2").item() == pytest.approx(sum(t.pow(2).sum() for t in p.values()).item(),
                                                                rel=1e-6)


def test_a_trainable_subset_groups_by_name(model):
    """A graft that freezes layer 0 leaves layer 1, the final LN and the unembed trainable: same grouping, by name."""
    p = dict(model.named_parameters())
    subset = [t for n, t in model.named_parameters() if n.startswith(("blocks.1.", "ln_final.", "unembed."))]
    got = weight_penalty(reference_arrays(parameter_names(model, subset)), "unsquared")
    assert got.item() == pytest.approx(hand_unsquared(p, layers=(1,), embed=False).item(), rel=1e-6)
    only_qk = [p["blocks.0.attn.W_Q"], p["blocks.0.attn.W_K"]]  # a partial QKV array is still one array
    got = weight_penalty(reference_arrays(parameter_names(model, only_qk)), "unsquared")
    assert got.item() == pytest.approx((norm(only_qk[0]) ** 2 + norm(only_qk[1]) ** 2).sqrt().item(), rel=1e-6)


def test_zero_arrays_get_zero_gradient_not_nan():
    z, w = torch.zeros(3, requires_grad=True), torch.tensor([3.0, 4.0], requires_grad=True)
    weight_penalty([[z], [w, torch.zeros(2)]], "unsquared").backward()
    assert torch.equal(z.grad, torch.zeros(3)) and torch.allclose(w.grad, torch.tensor([0.6, 0.8]))


def test_training_passes_the_parameter_names_to_the_step(tmp_path, monkeypatch):
    seen = []

    class Recording(TrainStep):
        def __post_init__(self):
            super().__post_init__()
            seen.append(len(self.penalty_arrays))

    monkeypatch.setattr("coopetition.train.loop.TrainStep", Recording)
    config = tiny_run_config(steps=1, checkpoint_schedule="every:1", eval_schedule="every:1", weight_decay=1e-3,
                             weight_decay_form="unsquared")
    train(config, tmp_path / "run", progress=False)
    assert seen == [16]  # the tiny model is 2 attention-only layers with learned positions: 16 reference arrays
