"""The one module that knows TransformerLens: our sequence classifier as a ``HookedTransformer`` subclass.

Inputs are exemplar vectors and context labels, not token ids. They are embedded by ``InterleavedEmbed`` (hook points
``embed.hook_exemplar_embed`` and ``embed.hook_label_embed``), interleaved as ``x1 y1 ... xN yN xq`` into
``hook_embed``, given positions (``hook_pos_embed``) and run through TransformerLens's own blocks, so every standard
hook name (``blocks.{l}.attn.hook_pattern``, ``blocks.{l}.hook_resid_post`` ...) and ``run_with_cache`` /
``run_with_hooks`` work unchanged. The reference has no attention biases: TransformerLens's b_Q/b_K/b_V/b_O are
turned into zero buffers, so they are neither trained nor counted. A move to TransformerBridge touches only this file.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from coopetition.model import init as model_init
from coopetition.model.config import ModelConfig

with warnings.catch_warnings():  # keep third-party import-time deprecation chatter off the user's terminal
    warnings.simplefilter("ignore")
    from transformer_lens import ActivationCache, HookedTransformer, HookedTransformerConfig
    from transformer_lens.hook_points import HookPoint

__all__ = ["ActivationCache", "HookPoint", "ICLTransformer", "InterleavedEmbed", "build_model"]


class InterleavedEmbed(nn.Module):
    """Exemplars through a learned affine map, labels through a table (no bias), interleaved into one sequence."""

    def __init__(self, input_dim: int, n_labels: int, d_model: int):
        super().__init__()
        self.W_x = nn.Parameter(torch.empty(input_dim, d_model))
        self.b_x = nn.Parameter(torch.zeros(d_model))
        self.W_L = nn.Parameter(torch.empty(n_labels, d_model))
        self.hook_exemplar_embed = HookPoint()  # [batch, N+1, d_model]
        self.hook_label_embed = HookPoint()  # [batch, N, d_model]

    def forward(self, exemplars: Float[Tensor, "batch item dim"],
                context_labels: Int[Tensor, "batch ctx"]) -> Float[Tensor, "batch pos d_model"]:
        x = self.hook_exemplar_embed(exemplars @ self.W_x + self.b_x)
        n_labels = self.W_L.shape[0]
        known = (context_labels < n_labels).unsqueeze(-1)  # the reference's one-hot of an unknown label is zero
        y = self.hook_label_embed(self.W_L[context_labels.clamp(max=n_labels - 1)] * known)
        batch, n_ctx, d_model = y.shape
        pairs = torch.stack([x[:, :n_ctx], y], dim=2).reshape(batch, 2 * n_ctx, d_model)
        return torch.cat([pairs, x[:, n_ctx:]], dim=1)


class ICLTransformer(HookedTransformer):
    """``model(exemplars, context_labels)`` -> query logits ``[batch, n_outputs]`` (or every position's with
    ``positions="all"``). Token positions: exemplar i at ``2i``, its label at ``2i+1``, the query at ``2N``."""

    def __init__(self, config: ModelConfig, input_dim: int, n_labels: int, n_outputs: int,
                 init_seed: int, device: str | torch.device = "cpu"):
        tl_config = HookedTransformerConfig(
            n_layers=config.n_layers, d_model=config.d_model, n_heads=config.n_heads, d_head=config.d_head,
            n_ctx=config.max_seq_len, d_vocab=1, d_vocab_out=n_outputs, attn_only=config.attn_only,
            d_mlp=None if config.attn_only else config.d_model * config.mlp_ratio,
            act_fn=None if config.attn_only else "gelu_new",  # the reference's tanh-approximated GELU
            normalization_type="LN", eps=1e-5, init_weights=False, default_prepend_bos=False,
            positional_embedding_type="rotary" if config.positional == "rotary" else "standard",
            rotary_dim=config.d_head, rotary_adjacent_pairs=True, rotary_base=config.sin_time,
            device=str(device),
        )
        super().__init__(tl_config, move_to_device=False)
        self.model_config = config
        self.input_dim, self.n_labels, self.n_outputs = input_dim, n_labels, n_outputs
        self.embed = InterleavedEmbed(input_dim, n_labels, config.d_model)
        for block in self.blocks:
            for name in ("b_Q", "b_K", "b_V", "b_O"):
                _to_zero_buffer(block.attn, name)
        if config.positional == "sinusoidal":
            table = model_init.sinusoidal_table(config.max_seq_len, config.d_model, config.sin_time)
            del self.pos_embed.W_pos
            self.pos_embed.register_buffer("W_pos", table)
        self.reset_parameters(init_seed)
        self.setup()  # re-register hook points now that the embedding module is ours
        nn.Module.to(self, device)  # HookedTransformer.to prints a line on every call

    def reset_parameters(self, seed: int) -> None:
        """Reference initialisation from one seed, in a fixed parameter order."""
        gen = torch.Generator().manual_seed(seed)
        rescale = self.model_config.init_rescale
        model_init.lecun_normal_(self.embed.W_x, self.input_dim, gen, rescale)
        model_init.label_table_(self.embed.W_L, gen)
        if self.model_config.positional == "learned":
            model_init.learned_positions_(self.pos_embed.W_pos, self.model_config.max_seq_len, gen)
        for block in self.blocks:
            for weight in (block.attn.W_Q, block.attn.W_K, block.attn.W_V):
                model_init.lecun_normal_(weight, self.cfg.d_model, gen, rescale)
            model_init.lecun_normal_(block.attn.W_O, self.cfg.n_heads * self.cfg.d_head, gen, rescale)
            if not self.cfg.attn_only:
                model_init.lecun_normal_(block.mlp.W_in, self.cfg.d_model, gen, rescale)
                model_init.lecun_normal_(block.mlp.W_out, self.cfg.d_mlp, gen, rescale)
        model_init.lecun_normal_(self.unembed.W_U, self.cfg.d_model, gen, rescale)
        with torch.no_grad():
            self.embed.b_x.zero_()
            self.unembed.b_U.zero_()
            for name, param in self.named_parameters():
                if name.endswith((".b_in", ".b_out")):
                    param.zero_()
                elif name.endswith(".w") and "ln" in name:
                    param.fill_(1.0)
                elif name.endswith(".b") and "ln" in name:
                    param.zero_()

    def forward(self, exemplars: Float[Tensor, "batch item dim"], context_labels: Int[Tensor, "batch ctx"],
                positions: Literal["query", "all"] = "query") -> Tensor:
        residual = self.hook_embed(self.embed(exemplars, context_labels))
        if self.cfg.positional_embedding_type != "rotary":
            n_pos = residual.shape[1]
            residual = residual + self.hook_pos_embed(self.pos_embed.W_pos[:n_pos].expand_as(residual))
        residual = super().forward(residual, start_at_layer=0, stop_at_layer=self.cfg.n_layers)
        normalized = self.ln_final(residual)
        if positions == "all":
            return self.unembed(normalized)
        return self.unembed(normalized[:, -1])  # 2-D: no [batch, 1, classes] zero-fill + copy in the backward

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _to_zero_buffer(module: nn.Module, name: str) -> None:
    value = torch.zeros_like(getattr(module, name).data)
    delattr(module, name)
    module.register_buffer(name, value)


def build_model(config: ModelConfig, input_dim: int, n_labels: int, n_outputs: int, init_seed: int,
                device: str | torch.device = "cpu") -> ICLTransformer:
    return ICLTransformer(config, input_dim, n_labels, n_outputs, init_seed, device)
