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


@dataclass(frozen=True)
class HookedConfig:
    """The network's ``cfg``: the fields of TransformerLens's ``HookedTransformerConfig`` that this architecture
    uses, under the same names, so ``ActivationCache`` methods and users' notebooks read ``model.cfg.n_layers``,
    ``d_head``, ``normalization_type`` ... as they would on a ``HookedTransformer``. Built from a ``ModelConfig``
    and the data's sizes (``from_model``); frozen: ``per_head_hooks`` swaps in a copy with its two switches on."""

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    n_ctx: int
    d_vocab: int
    d_vocab_out: int
    attn_only: bool
    d_mlp: int | None
    act_fn: str | None
    positional_embedding_type: str
    rotary_dim: int
    rotary_base: float
    rotary_adjacent_pairs: bool = True
    normalization_type: str = "LN"
    eps: float = 1e-5
    attention_dir: str = "causal"
    use_attn_scale: bool = True
    use_attn_result: bool = False
    use_split_qkv_input: bool = False
    use_attn_in: bool = False
    use_hook_mlp_in: bool = False
    parallel_attn_mlp: bool = False
    original_architecture: str = "coopetition.ICLTransformer"
    model_name: str = "ICLTransformer"
    device: str = "cpu"

    @classmethod
    def from_model(cls, config: ModelConfig, n_outputs: int, device: str = "cpu") -> "HookedConfig":
        return cls(n_layers=config.n_layers, d_model=config.d_model, n_heads=config.n_heads, d_head=config.d_head,
                   n_ctx=config.max_seq_len, d_vocab=1, d_vocab_out=n_outputs, attn_only=config.attn_only,
                   d_mlp=None if config.attn_only else config.d_model * config.mlp_ratio,
                   act_fn=None if config.attn_only else "gelu_new",  # the reference's tanh-approximated GELU
                   positional_embedding_type="rotary" if config.positional == "rotary" else "standard",
                   rotary_dim=config.d_head, rotary_base=config.sin_time, device=device)
