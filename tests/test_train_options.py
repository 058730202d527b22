"""Training's device and speed options: ``--device cuda`` end to end (skipped without a GPU), mixed precision,
the fused optimizer and ``torch.compile``'s refusal of hook interventions."""

import math
from dataclasses import replace

import pytest
import torch

from coopetition.errors import ConfigError
from coopetition.store.rundir import RunReader
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
