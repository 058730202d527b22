"""train.unembed_lr_scale / train.label_lr_scale (issue 27, H1): the class-specific rows at their own learning rate."""

import pytest
import torch

from coopetition.errors import ConfigError
from coopetition.model import build_model
from coopetition.model.config import ModelConfig
from coopetition.train.config import TrainConfig
from coopetition.train.step import lr_groups, make_optimizer


def _model():
    return build_model(ModelConfig(n_layers=2, d_model=16, n_heads=2, positional="learned"), 8, 20, 20, 0, "cpu")


def _first_moves(model, optimizer, before) -> dict[str, float]:
    """One Adam step on a loss that touches every parameter; each tensor's largest move (Adam's first: lr)."""
    loss = model(torch.randn(2, 3, 8), torch.tensor([[3, 7], [1, 2]])).logsumexp(-1).sum() + \
        model.embed.W_L.pow(2).sum()
    loss.backward()
    optimizer.step()
    return {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters()}


def test_scales_of_one_give_the_plain_parameter_list():
    named = list(_model().named_parameters())
    assert lr_groups(named, 1e-3) == [p for _, p in named]


def test_first_adam_step_moves_each_group_by_its_own_learning_rate():
    """Adam's first step moves every coordinate with a non-zero gradient by lr (m / sqrt(v) = sign(g)), so the
    largest move of each tensor is its group's learning rate: a known answer for the scaling."""
    model = _model()
    named = list(model.named_parameters())
    assert {"unembed.W_U", "unembed.b_U", "embed.W_L"} <= {n for n, _ in named}
    before = {n: p.detach().clone() for n, p in named}
    optimizer = make_optimizer(lr_groups(named, 1e-2, unembed_scale=0.125, label_scale=0.5), 1e-2, fused=False)
    labels = torch.tensor([[3, 7], [1, 2]])
    loss = model(torch.randn(2, 3, 8), labels).logsumexp(-1).sum() + model.embed.W_L.pow(2).sum()
    loss.backward()
    optimizer.step()
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in named}
    assert moved["unembed.W_U"] == pytest.approx(1e-2 / 8, rel=1e-3)
    assert moved["unembed.b_U"] == pytest.approx(1e-2 / 8, rel=1e-3)
    assert moved["embed.W_L"] == pytest.approx(1e-2 / 2, rel=1e-3)
    assert moved["blocks.1.attn.W_V"] == pytest.approx(1e-2, rel=1e-3)


@pytest.mark.parametrize("field", ["unembed_lr_scale", "label_lr_scale"])
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), 1000.0])
def test_bad_scales_are_config_errors(field, value):
    with pytest.raises(ConfigError, match=f"train.{field}"):
        TrainConfig(**{field: value})


def test_label_ramp_scale_is_start_then_linear_then_final():
    from coopetition.train.step import label_scale_at

    ramp = (2.0, 100.0, 300.0)
    assert [label_scale_at(s, 6.0, ramp) for s in (0, 100, 200, 300, 1000)] == [2.0, 2.0, 4.0, 6.0, 6.0]
    assert label_scale_at(50, 6.0, None) == 6.0


def test_label_ramp_moves_the_label_table_by_the_ramped_rate():
    """With the label table in its own group, setting its rate changes only its first-step move (Adam: lr)."""
    from coopetition.train.step import set_lrs

    model = _model()
    named = list(model.named_parameters())
    before = {n: p.detach().clone() for n, p in named}
    optimizer = make_optimizer(lr_groups(named, 1e-2, label_scale=4.0, label_own_group=True), 1e-2, fused=False)
    set_lrs(optimizer, [g["lr"] for g in optimizer.param_groups], 1.0, label_lr=1e-2 * 0.25)
    moved = _first_moves(model, optimizer, before)
    assert moved["embed.W_L"] == pytest.approx(1e-2 / 4, rel=1e-3)
    assert moved["unembed.W_U"] == pytest.approx(1e-2, rel=1e-3)


def test_lr_decay_factor_is_one_then_linear_then_final():
    from coopetition.train.step import lr_factor_at

    decay = (0.25, 100.0, 400.0)
    assert [lr_factor_at(s, decay) for s in (0, 100, 200, 400, 9000)] == [1.0, 1.0, 0.75, 0.25, 0.25]
    assert lr_factor_at(50, None) == 1.0


def test_lr_decay_scales_every_group_and_keeps_their_ratios():
    """The factor multiplies each group's own rate, so the class-specific scales (and a ramped label rate) hold
    under the decay: each tensor's first Adam move is its group's rate times the factor."""
    from coopetition.train.step import set_lrs

    model = _model()
    named = list(model.named_parameters())
    before = {n: p.detach().clone() for n, p in named}
    optimizer = make_optimizer(lr_groups(named, 1e-2, unembed_scale=0.5, label_scale=4.0, label_own_group=True),
                               1e-2, fused=False)
    set_lrs(optimizer, [g["lr"] for g in optimizer.param_groups], 0.25, label_lr=1e-2 * 2.0)
    moved = _first_moves(model, optimizer, before)
    assert moved["blocks.1.attn.W_V"] == pytest.approx(1e-2 * 0.25, rel=1e-3)
    assert moved["unembed.W_U"] == pytest.approx(1e-2 * 0.5 * 0.25, rel=1e-3)
    assert moved["embed.W_L"] == pytest.approx(1e-2 * 2.0 * 0.25, rel=1e-3)


def test_lr_decay_segments_chain_each_from_the_factor_the_last_one_reached():
    from coopetition.train.step import lr_factor_at

    decay = ((0.5, 100.0, 200.0), (0.25, 300.0, 300.0), (0.125, 400.0, 500.0))
    steps = (0, 100, 150, 200, 250, 300, 301, 400, 450, 500, 9000)
    assert [lr_factor_at(s, decay) for s in steps] == [1.0, 1.0, 0.75, 0.5, 0.5, 0.5, 0.25, 0.25, 0.1875, 0.125,
                                                       0.125]
    # one segment, flat or nested, is the same schedule
    assert all(lr_factor_at(s, ((0.25, 100.0, 400.0),)) == lr_factor_at(s, (0.25, 100.0, 400.0)) for s in range(500))


def test_lr_decay_segments_round_trip_through_a_config_file_and_bad_ones_are_config_errors():
    from coopetition.config import config_from_dict
    from tests.conftest import tiny_run_config

    data = tiny_run_config(lr_decay=((0.5, 5, 7), (0.25, 25, 26))).to_dict()
    assert data["train"]["lr_decay"] == [[0.5, 5.0, 7.0], [0.25, 25.0, 26.0]]
    assert config_from_dict(data).train.lr_decay == ((0.5, 5.0, 7.0), (0.25, 25.0, 26.0))
    for bad in ([[0.5, 5, 7], [0.25, 6, 8]], [[0.5, 5, 7], [0.0, 25, 26]], [[0.5, 5]], [[0.5, 5, 7], 5], [],
                [[0.5, 1, 2]] * 17):
        data["train"]["lr_decay"] = bad
        with pytest.raises(ConfigError, match="lr_decay"):
            config_from_dict(data)


@pytest.mark.parametrize("decay", [(0.0, 1, 2), (0.5, 5, 3), (0.5, -1, 3), (0.5, 1), (200.0, 1, 2)])
def test_bad_lr_decays_are_config_errors(decay):
    with pytest.raises(ConfigError, match="train.lr_decay"):
        TrainConfig(lr_decay=decay)


def test_a_run_with_lr_decay_trains_at_the_decayed_rate_and_resumes_to_the_same_weights(tmp_path):
    """End to end: a decayed run is bit-identical to a constant-rate one up to from_step and differs after it, and a
    run cut at from_step resumes through the decay to the same weights (the rates follow from the step alone)."""
    import json

    from coopetition.store.checkpoint import load_tensors
    from coopetition.train.loop import resume_config, train
    from tests.conftest import tiny_run_config

    def weights(run, step):
        return load_tensors(run / "checkpoints" / f"step_{step:011d}.safetensors")[0]

    decayed = tiny_run_config(steps=20, lr_decay=(0.1, 10, 15))
    train(decayed, tmp_path / "decayed", progress=False)
    train(tiny_run_config(steps=20), tmp_path / "constant", progress=False)
    at10 = weights(tmp_path / "decayed", 10), weights(tmp_path / "constant", 10)
    assert all(torch.equal(at10[0][k], at10[1][k]) for k in at10[0])
    at20 = weights(tmp_path / "decayed", 20), weights(tmp_path / "constant", 20)
    assert not all(torch.equal(at20[0][k], at20[1][k]) for k in at20[0])

    train(tiny_run_config(steps=10, lr_decay=(0.1, 10, 15)), tmp_path / "part", progress=False)
    meta = json.loads((tmp_path / "part" / "config.json").read_text())
    meta["config"]["train"]["steps"] = 20
    (tmp_path / "part" / "config.json").write_text(json.dumps(meta))
    train(resume_config(tmp_path / "part"), tmp_path / "part", resume=True, progress=False)
    resumed = weights(tmp_path / "part", 20)
    assert all(torch.allclose(at20[0][k], resumed[k], atol=1e-6) for k in resumed)


def test_a_later_decay_segment_branches_a_run_exactly_from_where_it_starts(tmp_path):
    """A segment that starts at or after a run's last step changes nothing before it, so adding it (and steps) to a
    finished run's config.json and resuming gives the run that had the segment from the start (how issue 27's
    end-of-run anneal was measured on 25k-step runs: docs/quick_search.md)."""
    import json

    from coopetition.store.checkpoint import load_tensors
    from coopetition.train.loop import resume_config, train
    from tests.conftest import tiny_run_config

    both = ((0.5, 2.0, 4.0), (0.1, 10.0, 12.0))
    train(tiny_run_config(steps=16, lr_decay=both), tmp_path / "whole", progress=False)
    train(tiny_run_config(steps=10, lr_decay=(0.5, 2, 4)), tmp_path / "branch", progress=False)
    meta = json.loads((tmp_path / "branch" / "config.json").read_text())
    meta["config"]["train"].update(steps=16, lr_decay=[list(s) for s in both])
    (tmp_path / "branch" / "config.json").write_text(json.dumps(meta))
    train(resume_config(tmp_path / "branch"), tmp_path / "branch", resume=True, progress=False)
    whole, branch = (load_tensors(tmp_path / r / "checkpoints" / "step_00000000016.safetensors")[0]
                     for r in ("whole", "branch"))
    assert all(torch.allclose(whole[k], branch[k], atol=1e-6) for k in whole)
    train(tiny_run_config(steps=16, lr_decay=(0.5, 2, 4)), tmp_path / "first_only", progress=False)
    first_only = load_tensors(tmp_path / "first_only" / "checkpoints" / "step_00000000016.safetensors")[0]
    assert not all(torch.allclose(whole[k], first_only[k], atol=1e-6) for k in whole)  # the segment acted


@pytest.mark.parametrize("ramp", [(0.0, 1, 2), (2.0, 5, 3), (2.0, -1, 3), (2.0, 1)])
def test_bad_label_ramps_are_config_errors(ramp):
    with pytest.raises(ConfigError, match="train.label_lr_ramp"):
        TrainConfig(label_lr_ramp=ramp)


def test_quick_circuit_is_quick_b256_with_the_family_bank_and_class_rates_only():
    """The README default (issue 27's preset) differs from quick-b256 in exactly the fields its docs name."""
    from coopetition.presets import get_preset

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    base, circuit = flat(get_preset("quick-b256").to_dict()), flat(get_preset("quick-circuit").to_dict())
    changed = {k: circuit[k] for k in circuit if circuit[k] != base.get(k)}
    assert changed == {"preset": "quick-circuit", "bank.siblings": 8, "bank.transforms": 8,
                       "bank.transform_share": 0.7, "bank.drawing_noise": 0.3, "bank.within_class_noise": 0.3,
                       "bank.rectify": True, "train.steps": 35000, "train.label_lr_scale": 3.0,
                       "train.unembed_lr_scale": 0.3, "train.label_lr_ramp": [0.3, 5000.0, 6000.0],
                       "train.lr_decay": [[0.5, 5000.0, 7000.0], [0.25, 25000.0, 26000.0]]}
