"""The model adapter (with ``lean.py``, the only modules that import TransformerLens): our sequence classifier as a
``HookedTransformer`` subclass.

Inputs are exemplar vectors and context labels, not token ids. They are embedded by ``InterleavedEmbed`` (hook points
``embed.hook_exemplar_embed`` and ``embed.hook_label_embed``), interleaved as ``x1 y1 ... xN yN xq`` into
``hook_embed``, given positions (``hook_pos_embed``) and run through TransformerLens's own blocks, so every standard
hook name (``blocks.{l}.attn.hook_pattern``, ``blocks.{l}.hook_resid_post`` ...) and ``run_with_cache`` /
``run_with_hooks`` work unchanged. The reference has no attention biases: TransformerLens's b_Q/b_K/b_V/b_O are
turned into zero buffers, so they are neither trained nor counted. Blocks are TransformerLens's, made lean
(``coopetition/model/lean.py``: one LayerNorm and one Q/K/V matmul per block, same hooks and values).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor, nn

from coopetition.model import init as model_init
from coopetition.model.config import ModelConfig
from coopetition.model.lean import fuse_training_kernels, make_lean, make_lean_norm, make_lean_unembed

from transformer_lens import ActivationCache, HookedTransformer, HookedTransformerConfig
from transformer_lens.hook_points import HookPoint

# TransformerLens 3.x warns on every HookedTransformer construction that the class goes in 4.0 (which pyproject
# excludes). It is not the user's to act on, so it is dropped here, by its message, and nothing else is.
warnings.filterwarnings("ignore", message=r"HookedTransformer is deprecated", category=DeprecationWarning)

# Blocks are built lean (coopetition/model/lean.py) unless ``lean=False`` asks for TransformerLens's stock blocks
# (tests/test_model_lean.py compares the two; bench/train_vs_plain.py --stock times them).
LEAN_DEFAULT = True

__all__ = ["ActivationCache", "HookPoint", "ICLTransformer", "InterleavedEmbed", "build_model", "slice_cache", "splice"]


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
        n_ctx = y.shape[1]
        pairs = rearrange(torch.stack([x[:, :n_ctx], y], dim=2), "batch ctx pair d -> batch (ctx pair) d")
        return torch.cat([pairs, x[:, n_ctx:]], dim=1)


class ICLTransformer(HookedTransformer):
    """``model(exemplars, context_labels)`` -> query logits ``[batch, n_outputs]`` (or every position's with
    ``positions="all"``). Token positions: exemplar i at ``2i``, its label at ``2i+1``, the query at ``2N``."""

    def __init__(self, config: ModelConfig, input_dim: int, n_labels: int, n_outputs: int,
                 init_seed: int, device: str | torch.device = "cpu", lean: bool = LEAN_DEFAULT):
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
            if lean:
                make_lean(block)  # one LayerNorm and one QKV matmul per block; same hooks (coopetition/model/lean.py)
        if lean:
            make_lean_norm(self.ln_final)
            make_lean_unembed(self.unembed)  # W_U as stored, not TL 3's per-call transposed copy
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

    # --- the one forward path: embed, run blocks (from any layer), read out the query -------------------------

    def embed_input(self, exemplars: Float[Tensor, "batch item dim"],
                    context_labels: Int[Tensor, "batch ctx"]) -> Float[Tensor, "batch pos d_model"]:
        """The residual stream entering block 0: interleaved token embeddings (``hook_embed``) plus positions
        (``hook_pos_embed``; none for rotary models, which rotate queries and keys instead)."""
        residual = self.hook_embed(self.embed(exemplars, context_labels))
        if self.cfg.positional_embedding_type != "rotary":
            n_pos = residual.shape[1]
            residual = residual + self.hook_pos_embed(self.pos_embed.W_pos[:n_pos].expand_as(residual))
        return residual

    def run_blocks(self, residual: Float[Tensor, "batch pos d_model"], start: int = 0,
                   stop: int | None = None) -> Float[Tensor, "batch pos d_model"]:
        """Blocks ``start`` .. ``stop - 1`` (default: to the end) on a residual stream; their hook points fire, so a
        pass may start from a cached ``blocks.{start}.hook_resid_pre``."""
        stop = self.cfg.n_layers if stop is None else stop
        if start >= stop:
            return residual
        return super().forward(residual, start_at_layer=start, stop_at_layer=stop)

    def unembed_query(self, residual: Float[Tensor, "batch pos d_model"],
                      labels: Int[Tensor, "batch k"] | None = None) -> Tensor:
        """Final LayerNorm and unembedding at the query (last) position: every class ``[batch, n_outputs]``, or only
        the columns of ``labels`` ``[batch, k]``. Analyses multiply the batch by their number of variants and need
        a few labels' logits (the context labels and the target), not 12,800 classes. Labels past the output layer
        read as the last class; callers mask them."""
        normalized = self.ln_final(residual)[:, -1]  # 2-D: no [batch, 1, classes] zero-fill + copy in the backward
        if labels is None:
            return self.unembed(normalized)
        labels = labels.clamp(max=self.n_outputs - 1)
        columns = self.unembed.W_U.T[labels]  # [batch, k, d_model]
        return torch.einsum("bd,bkd->bk", normalized, columns) + self.unembed.b_U[labels]

    def forward(self, exemplars: Float[Tensor, "batch item dim"], context_labels: Int[Tensor, "batch ctx"],
                positions: Literal["query", "all"] = "query", labels: Int[Tensor, "batch k"] | None = None) -> Tensor:
        """Query logits (``labels``: only those columns), or every position's with ``positions="all"``."""
        residual = self.run_blocks(self.embed_input(exemplars, context_labels))
        if positions == "all":
            return self.unembed(self.ln_final(residual))
        return self.unembed_query(residual, labels)

    def forward_from(self, residual: Float[Tensor, "batch pos d_model"], start: int,
                     labels: Int[Tensor, "batch k"] | None = None) -> Tensor:
        """Query logits from the residual stream entering block ``start`` (``start = n_layers``: the final one)."""
        return self.unembed_query(self.run_blocks(residual, start), labels)

    # --- hooks: the rest of the package installs and reads them only through these -------------------------------

    @contextmanager
    def hooked(self, fwd_hooks: Sequence[tuple[str, Callable]]) -> Iterator["ICLTransformer"]:
        """Forward hooks ``(hook name, fn(activation, hook) -> activation | None)`` for the passes inside the block,
        removed on exit (also on error)."""
        with self.hooks(fwd_hooks=list(fwd_hooks)):
            yield self

    def run_cached(self, exemplars: Tensor, context_labels: Tensor, names: Collection[str] | None = None,
                   labels: Tensor | None = None) -> tuple[Tensor, ActivationCache]:
        """``(query logits, cache)`` of one pass; ``names`` limits what is cached (default: every hook point). The
        cache holds each activation as it left its hook, i.e. after any installed hook edited it."""
        wanted = None if names is None else set(names)
        return self.run_with_cache(exemplars, context_labels, labels=labels,
                                   names_filter=None if wanted is None else (lambda name: name in wanted))

    @contextmanager
    def per_head_hooks(self) -> Iterator["ICLTransformer"]:
        """Inside the block, every attention layer also exposes each head's own input and output:
        ``blocks.{l}.hook_q_input`` / ``hook_k_input`` / ``hook_v_input`` ``[batch, pos, head, d_model]`` (the
        residual stream as that head's query, key or value reads it, before LayerNorm) and ``blocks.{l}.attn.hook_result``
        ``[batch, pos, head, d_model]`` (what the head writes). Path patching and edge attribution edit one head's
        input alone; the values are the same as without it, it only costs memory."""
        before = (self.cfg.use_split_qkv_input, self.cfg.use_attn_result)
        self.set_use_split_qkv_input(True)
        self.set_use_attn_result(True)
        try:
            yield self
        finally:
            self.set_use_split_qkv_input(before[0])
            self.set_use_attn_result(before[1])

    def fuse_training_kernels(self, on: bool = True) -> None:
        """Fused attention and LayerNorm kernels in train mode while no hook listens (``model/lean.py`` says why
        only there); a stock-block model (``lean=False``) is unaffected."""
        fuse_training_kernels(self, on)

    def hook_names(self) -> list[str]:
        return list(self.hook_dict)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _to_zero_buffer(module: nn.Module, name: str) -> None:
    value = torch.zeros_like(getattr(module, name).data)
    delattr(module, name)
    module.register_buffer(name, value)


def build_model(config: ModelConfig, input_dim: int, n_labels: int, n_outputs: int, init_seed: int,
                device: str | torch.device = "cpu", lean: bool = LEAN_DEFAULT) -> ICLTransformer:
    return ICLTransformer(config, input_dim, n_labels, n_outputs, init_seed, device, lean)


def splice(front: ICLTransformer, back: ICLTransformer, layer: int) -> ICLTransformer:
    """One network sharing (not copying) ``front``'s embeddings and blocks ``0..layer`` and ``back``'s later blocks,
    final LayerNorm and unembedding, with every hook point registered under its usual name, so hooks and caches
    address the network that actually runs. Loading new weights into ``front`` or ``back`` updates it in place.
    ``layer`` -1 takes only the embeddings from ``front``. (Grafts: ``coopetition.interventions.graft``.)"""
    if not -1 <= layer < back.cfg.n_layers:
        raise ValueError(f"splice layer {layer} outside [-1, {back.cfg.n_layers - 1}]")
    device = next(back.parameters()).device
    shell = ICLTransformer(back.model_config, back.input_dim, back.n_labels, back.n_outputs, init_seed=0,
                           device=device)
    shell.embed, shell.pos_embed = front.embed, front.pos_embed
    shell.blocks = nn.ModuleList([*front.blocks[:layer + 1], *back.blocks[layer + 1:]])
    shell.ln_final, shell.unembed = back.ln_final, back.unembed
    shell.setup()  # re-register hook points: the modules are new
    return shell


def slice_cache(cache: ActivationCache, n: int) -> ActivationCache:
    """The first ``n`` sequences of a cache (every activation has the batch first)."""
    return cache.apply_slice_to_batch_dim((0, n))
