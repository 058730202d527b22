"""Architecture config. Sizes that come from the data (input dim, label vocabulary, output classes) are not here:
they are derived from the bank and task when the model is built, and recorded in the run's metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from coopetition.errors import ConfigError

Positional = Literal["learned", "sinusoidal", "rotary"]
POSITIONALS = ("learned", "sinusoidal", "rotary")


@dataclass(frozen=True)
class ModelConfig:
    """Reference defaults: 2 layers, d_model 64, 8 heads of 8 dims, attention-only, LayerNorm, causal.

    ``mlp_ratio`` None means attention-only (no LN2, no MLP). ``positional`` is ``learned`` (the reference's
    ``ape``: a 32-row table), ``sinusoidal`` (fixed, interleaved sin/cos with time constant ``sin_time``) or
    ``rotary`` (GPT-J adjacent pairs over the whole head, base ``sin_time``).
    """

    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 8
    mlp_ratio: int | None = None
    positional: Positional = "learned"
    sin_time: float = 10000.0
    max_seq_len: int = 32
    init_rescale: float = 1.0

    def __post_init__(self) -> None:
        for name, high in (("n_layers", 256), ("d_model", 65536), ("n_heads", 4096), ("max_seq_len", 65536)):
            if not 1 <= getattr(self, name) <= high:
                raise ConfigError(f"model.{name} must be in [1, {high}], got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"model.d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        if self.positional not in POSITIONALS:
            raise ConfigError(f"model.positional must be one of {POSITIONALS}, got {self.positional!r}")
        if self.positional == "rotary" and self.d_head % 2:
            raise ConfigError(f"rotary positions need an even d_head, got {self.d_head}")
        if self.mlp_ratio is not None and not 1 <= self.mlp_ratio <= 64:
            raise ConfigError(f"model.mlp_ratio must be in [1, 64] or null (attention-only), got {self.mlp_ratio}")
        for name in ("sin_time", "init_rescale"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ConfigError(f"model.{name} must be finite and > 0, got {getattr(self, name)}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def attn_only(self) -> bool:
        return self.mlp_ratio is None
