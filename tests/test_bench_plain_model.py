"""The benchmark's plain-PyTorch baseline computes exactly ICLTransformer's function, so the speed ratio that
``bench/train_vs_plain.py`` reports compares like with like."""

import sys
from pathlib import Path

import pytest
import torch

from coopetition.model import ModelConfig, build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from plain_model import PlainICLTransformer  # noqa: E402


@pytest.mark.parametrize("config", [ModelConfig(), ModelConfig(mlp_ratio=4), ModelConfig(positional="sinusoidal")])
def test_plain_model_gives_the_hooked_models_logits(config):
    model = build_model(config, 24, 40, 40, init_seed=5)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move every weight off its init value (LN scales 1, biases 0) so a mix-up shows
        for param in model.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=gen))
    plain = PlainICLTransformer.from_hooked(model)
    exemplars = torch.randn(8, 4, 24, generator=gen)
    labels = torch.randint(41, (8, 3), generator=gen)  # 40 = an unknown label, which embeds to zero
    with torch.no_grad():
        assert torch.allclose(model(exemplars, labels), plain(exemplars, labels), atol=1e-5)
