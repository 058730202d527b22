"""The reference's initialisation (Equinox/JAX defaults), which TransformerLens's own init does not reproduce.

- Linear weights: ``lecun_normal`` = normal truncated to +-2 sigma, rescaled so the variance is 1/fan_in.
- Label table: 0.02 x standard normal truncated to [-2, 2] without renormalising (effective std ~ 0.0176).
- Learned positions: uniform +-1/sqrt(max_seq_len) (Equinox's Linear default on a one-hot input).
- Biases 0, LayerNorm scale 1 / shift 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# std of a standard normal truncated to [-2, 2]; JAX's variance_scaling divides by it.
TRUNCATED_NORMAL_STD = 0.87962566103423978


def lecun_normal_(tensor: Tensor, fan_in: int, gen: torch.Generator, rescale: float = 1.0) -> Tensor:
    std = rescale * math.sqrt(1.0 / fan_in) / TRUNCATED_NORMAL_STD
    with torch.no_grad():
        return torch.nn.init.trunc_normal_(tensor, 0.0, std, -2 * std, 2 * std, generator=gen)


def label_table_(tensor: Tensor, gen: torch.Generator) -> Tensor:
    with torch.no_grad():
        torch.nn.init.trunc_normal_(tensor, 0.0, 1.0, -2.0, 2.0, generator=gen)
        return tensor.mul_(0.02)


def learned_positions_(tensor: Tensor, max_seq_len: int, gen: torch.Generator) -> Tensor:
    bound = 1.0 / math.sqrt(max_seq_len)
    with torch.no_grad():
        return torch.nn.init.uniform_(tensor, -bound, bound, generator=gen)


def sinusoidal_table(n_pos: int, d_model: int, time_constant: float) -> Tensor:
    """Component i of position p: sin (even i) or cos (odd i) of p / T^(2*floor(i/2)/d), interleaved."""
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]
    i = torch.arange(d_model)
    angle = pos / time_constant ** (2 * (i // 2) / d_model)
    return torch.where(i % 2 == 0, torch.sin(angle), torch.cos(angle)).float()
