"""Training's device and speed options: ``--device cuda`` end to end (skipped without a GPU), mixed precision,
the fused optimizer and ``torch.compile``'s refusal of hook interventions."""

import math
from dataclasses import replace

import pytest
import torch

from coopetition.errors import ConfigError
from coopetition.store.reader import RunReader
from coopetition.task.sequence import SequenceSpec
from coopetition.train.loop import train
from tests.conftest import tiny_run_config


def _mixture(config):
    """Two specs, so the per-sequence spec draw (a multinomial on the data generator's device) runs too."""
    specs = (SequenceSpec(context_len=2, burstiness=1), SequenceSpec(context_len=2, burstiness=0))
    return replace(config, task=replace(config.task, mixture=specs, mixture_weights=(0.7, 0.3), zipf_alpha=1.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_and_evaluation_run_on_cuda(tmp_path):
    config = _mixture(tiny_run_config(steps=20, device="cuda"))
    result = train(config, tmp_path / "run", progress=False)
    assert [c.step for c in RunReader.open(result.run_dir).checkpoints()] == [0, 10, 20]
    assert all(math.isfinite(v) for v in result.final_eval.values())


def test_mixed_precision_and_fused_adam_train(tmp_path):
    base = tiny_run_config(steps=10, checkpoint_schedule="every:10", eval_schedule="every:10")
    for name, options in [("amp", dict(amp=True)), ("fused", dict(fused_adam=True))]:
        config = _mixture(replace(base, train=replace(base.train, **options)))
        result = train(config, tmp_path / name, progress=False)
        assert result.final_eval[("train", "loss")] > 0


def test_compile_refuses_hook_interventions(tmp_path):
    config = tiny_run_config(steps=2, compile=True)
    config = replace(config, interventions=("ablate:0:1",))
    with pytest.raises(ConfigError, match="compile"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_fused_adam_is_the_default_and_follows_the_single_tensor_kernel():
    """The default optimizer is PyTorch's fused Adam; it rounds differently from the single-tensor kernel that runs
    before it used, and by no more than that: 60 steps of the tiny run from the same weights and batches move some
    weight by 0.05 and leave the two kernels' weights within 1e-7 and losses within 5e-7 (measured; asserted to
    1e-5)."""
    from coopetition.interventions import intervene
    from coopetition.store.build import derive_sizes, load_run_bank, model_for, training_pool
    from coopetition.train.step import TrainStep, make_optimizer

    config = tiny_run_config()
    assert config.train.fused_adam
    bank = load_run_bank(config)
    pool, sizes = training_pool(config, bank), derive_sizes(config, bank)
    start = [p.detach().clone() for p in intervene([], model_for(config, sizes)).trainable_parameters()]
    runs = {}
    for fused in (True, False):
        forward = intervene([], model_for(config, sizes))
        params = forward.trainable_parameters()
        optimizer = make_optimizer(params, config.train.lr, fused)
        assert bool(optimizer.param_groups[0]["fused"]) is fused
        step = TrainStep(forward, optimizer, params, bank.features, pool, config.task.mixture,
                         config.task.mixture_weights, config.train.batch_size, torch.Generator().manual_seed(0))
        losses = torch.stack([step() for _ in range(60)])
        runs[fused] = losses, [p.detach().clone() for p in params]
    (fused_losses, fused_params), (single_losses, single_params) = runs[True], runs[False]
    moved = max((p - s).abs().max().item() for p, s in zip(fused_params, start))
    assert moved > 1e-2
    torch.testing.assert_close(fused_losses, single_losses, atol=1e-5, rtol=0)
    for fused_param, single_param in zip(fused_params, single_params):
        torch.testing.assert_close(fused_param, single_param, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_compile_with_the_fused_loss_follows_the_eager_step():
    """``train.compile`` compiles the network up to the unembedding and keeps the fused loss after it: 10 steps
    from the same weights and batches stay within float rounding of the eager fused step."""
    from coopetition.train.loop import build_training

    config = tiny_run_config()
    losses = {}
    for compiled in (False, True):
        run = build_training(replace(config, train=replace(config.train, compile=compiled)), None)
        assert run.step.loss_forward is not None
        losses[compiled] = torch.stack([run.step() for _ in range(10)])
    torch.testing.assert_close(losses[True], losses[False], atol=1e-5, rtol=0)
