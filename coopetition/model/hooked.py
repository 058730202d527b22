"""The model adapter: our sequence classifier as a TransformerLens ``HookedRootModule``.

Inputs are exemplar vectors and context labels, not token ids. They are embedded by ``InterleavedEmbed`` (hook points
``embed.hook_exemplar_embed`` and ``embed.hook_label_embed``), interleaved as ``x1 y1 ... xN yN xq`` into
``hook_embed``, given positions (``hook_pos_embed``) and run through our own blocks (``model/components.py``), whose
parameters, buffers and hook points carry TransformerLens's names (``blocks.{l}.attn.hook_pattern``, ``W_Q`` ...), so
``run_with_cache`` / ``run_with_hooks``, hook strings and checkpoints of the earlier ``HookedTransformer``-based model
work unchanged. ``run_with_cache`` returns TransformerLens's ``ActivationCache``. TransformerLens's permanent core
(``model/tl.py``) is all this needs, so it runs on TransformerLens 2.x, 3.x and 4.x alike; ``to_hooked_transformer``
(``model/bridge.py``) hands a 2.x/3.x user a real ``HookedTransformer`` with the same weights.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from coopetition.bounded import TensorLayout
from coopetition.model import init as model_init
from coopetition.model.components import (InterleavedEmbed, LayerNorm, PosEmbed, TransformerBlock, Unembed,
                                          fuse_training_kernels)
from coopetition.model.config import HookedConfig, ModelConfig
from coopetition.model.fused_loss import unembed_cross_entropy
from coopetition.model.tl import ActivationCache, HookedRootModule, HookPoint

__all__ = ["ActivationCache", "HookPoint", "ICLTransformer", "InterleavedEmbed", "build_model", "slice_cache", "splice"]

# Buffers that checkpoints of the HookedTransformer-based model carry and this one does not store (they are fixed
# functions of the config): TransformerLens 2.x saved the causal mask [n_ctx, n_ctx], 3.x an empty one, both the
# -inf fill value and, for rotary models, the sin/cos tables. Loading drops them.
LEGACY_BUFFERS = re.compile(r"blocks\.\d+\.attn\.(mask|IGNORE|rotary_sin|rotary_cos)")


class ICLTransformer(HookedRootModule):
    """``model(exemplars, context_labels)`` -> query logits ``[batch, n_outputs]`` (or every position's with
    ``positions="all"``). Token positions: exemplar i at ``2i``, its label at ``2i+1``, the query at ``2N``."""

    fused_loss = False  # query_loss's fused unembedding + cross-entropy (fuse_training_kernels switches it on)

    def __init__(self, config: ModelConfig, input_dim: int, n_labels: int, n_outputs: int,
                 init_seed: int, device: str | torch.device = "cpu"):
        super().__init__()
        self.model_config = config
        self.cfg = HookedConfig.from_model(config, n_outputs, str(device))
        self.input_dim, self.n_labels, self.n_outputs = input_dim, n_labels, n_outputs
        self.embed = InterleavedEmbed(input_dim, n_labels, config.d_model)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        if config.positional != "rotary":
            table = None
            if config.positional == "sinusoidal":
                table = model_init.sinusoidal_table(config.max_seq_len, config.d_model, config.sin_time)
            self.pos_embed = PosEmbed(self.cfg, table)
            self.hook_pos_embed = HookPoint()  # [batch, pos, d_model]
        self.blocks = nn.ModuleList([TransformerBlock(self.cfg, layer) for layer in range(config.n_layers)])
        self.ln_final = LayerNorm(self.cfg)
        self.unembed = Unembed(self.cfg)
        self.reset_parameters(init_seed)
        self.register_load_state_dict_pre_hook(_drop_legacy_buffers)
        self.setup()
        nn.Module.to(self, device)

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
            for module in self.modules():
                if isinstance(module, LayerNorm):
                    module.w.fill_(1.0)
                    module.b.zero_()
                elif hasattr(module, "b_in"):
                    module.b_in.zero_()
                    module.b_out.zero_()

    # --- the one forward path: embed, run blocks (from any layer), read out the query -------------------------

    def embed_input(self, exemplars: Float[Tensor, "batch item dim"],
                    context_labels: Int[Tensor, "batch ctx"]) -> Float[Tensor, "batch pos d_model"]:
        """The residual stream entering block 0: interleaved token embeddings (``hook_embed``) plus positions
        (``hook_pos_embed``; none for rotary models, which rotate queries and keys instead)."""
        residual = self.hook_embed(self.embed(exemplars, context_labels))
        if self.cfg.positional_embedding_type != "rotary":
            residual = residual + self.hook_pos_embed(self.pos_embed(residual))
        return residual

    def run_blocks(self, residual: Float[Tensor, "batch pos d_model"], start: int = 0,
                   stop: int | None = None) -> Float[Tensor, "batch pos d_model"]:
        """Blocks ``start`` .. ``stop - 1`` (default: to the end) on a residual stream; their hook points fire, so a
        pass may start from a cached ``blocks.{start}.hook_resid_pre``."""
        for block in self.blocks[start:stop]:
            residual = block(residual)
        return residual

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

    def query_loss(self, exemplars: Float[Tensor, "batch item dim"], context_labels: Int[Tensor, "batch ctx"],
                   target: Int[Tensor, " batch"]) -> Float[Tensor, ""]:
        """The training loss, mean cross-entropy of the query logits against ``target``. In train mode with
        ``fuse_training_kernels`` on, in float32 or float64 and outside autocast, the unembedding and the loss are one fused,
        blockwise kernel (``model/fused_loss.py``) that never writes the ``[batch, classes]`` logits; otherwise the
        logits are computed and ``F.cross_entropy`` taken. The unembedding has no hook point, so every hook of the
        pass (``ln_final`` and before) fires either way."""
        return self.loss_from(self.query_normalized(exemplars, context_labels), target)

    def query_normalized(self, exemplars: Float[Tensor, "batch item dim"],
                         context_labels: Int[Tensor, "batch ctx"]) -> Float[Tensor, "batch d_model"]:
        """The query row after the final LayerNorm: what the unembedding reads (``query_loss``'s trunk, the part
        ``train.compile`` compiles)."""
        return self.ln_final(self.run_blocks(self.embed_input(exemplars, context_labels)))[:, -1]

    def loss_from(self, normalized: Float[Tensor, "batch d_model"], target: Int[Tensor, " batch"]) -> Tensor:
        """``query_loss`` from the final-LayerNorm query row (see there for when it is fused)."""
        if (self.fused_loss and self.training and normalized.dtype in (torch.float32, torch.float64)
                and not torch.is_autocast_enabled(normalized.device.type)):
            return unembed_cross_entropy(normalized, self.unembed.W_U, self.unembed.b_U, target)
        return F.cross_entropy(_at_least_float32(self.unembed(normalized)), target)

    def forward_from(self, residual: Float[Tensor, "batch pos d_model"], start: int,
                     labels: Int[Tensor, "batch k"] | None = None) -> Tensor:
        """Query logits from the residual stream entering block ``start`` (``start = n_layers``: the final one)."""
        return self.unembed_query(self.run_blocks(residual, start), labels)

    # --- hooks: the rest of the package installs and reads them only through these -------------------------------

    def run_with_cache(self, *args: Any, **kwargs: Any) -> tuple[Tensor, ActivationCache]:
        """TransformerLens's ``run_with_cache``, returning an ``ActivationCache`` (as ``HookedTransformer``'s does):
        ``decompose_resid``, ``apply_ln_to_stack``, ``stack_head_results``, ``logit_attrs`` work on it."""
        out, cache = super().run_with_cache(*args, **kwargs)
        if isinstance(cache, ActivationCache):
            return out, cache
        return out, ActivationCache(cache, self, has_batch_dim=not kwargs.get("remove_batch_dim", False))

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
        residual stream as that head's query, key or value reads it, before LayerNorm) and
        ``blocks.{l}.attn.hook_result`` ``[batch, pos, head, d_model]`` (what the head writes). Path patching and
        edge attribution edit one head's input alone; the values are the same as without it, it only costs memory."""
        before = self.cfg
        self._set_cfg(replace(before, use_split_qkv_input=True, use_attn_result=True))
        try:
            yield self
        finally:
            self._set_cfg(before)

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """TransformerLens's switch: cache each head's output (``blocks.{l}.attn.hook_result``)."""
        self._set_cfg(replace(self.cfg, use_attn_result=use_attn_result))

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        """TransformerLens's switch: give each head its own query/key/value input (``blocks.{l}.hook_q_input`` ...)."""
        self._set_cfg(replace(self.cfg, use_split_qkv_input=use_split_qkv_input))

    def _set_cfg(self, cfg: HookedConfig) -> None:
        for module in self.modules():
            if hasattr(module, "cfg"):
                module.cfg = cfg

    def fuse_training_kernels(self, on: bool = True) -> None:
        """Fused attention and LayerNorm kernels in train mode while no hook listens (``model/components.py`` says
        why only there)."""
        fuse_training_kernels(self, on)
        self.fused_loss = on

    def hook_names(self) -> list[str]:
        return list(self.hook_dict)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # --- weights as analyses read them ---------------------------------------------------------------------------

    def head_outputs(self, layer: int, z: Float[Tensor, "... head d_head"]) -> Float[Tensor, "... head d_model"]:
        """What each head of ``layer`` writes to the residual stream for value-weighted vectors ``z`` (``hook_z``,
        or a single value vector ``hook_v`` read as if attended to fully): ``z @ W_O`` per head."""
        return torch.einsum("...he,hed->...hd", z, self.blocks[layer].attn.W_O)

    def folded_unembed(self, classes: Int[Tensor, "..."]) -> Float[Tensor, "... d_model"]:
        """The unembedding columns of ``classes`` with the final LayerNorm's weight folded in: a direction in the
        (centred, scale-divided) residual stream whose dot product is the class's logit, less the LN bias and
        ``b_U`` (the same for every direction contrast). Classes past the output layer read as the last class."""
        folded = self.unembed.W_U * self.ln_final.w[:, None]  # [d_model, n_out]
        return folded.T[classes.clamp(max=self.n_outputs - 1)]

    def tokens_to_residual_directions(self, tokens: Int[Tensor, "..."] | int) -> Tensor:
        """TransformerLens's name for an output class's unembedding column (``ActivationCache.logit_attrs`` calls
        it); no LayerNorm folding, as on a ``HookedTransformer``."""
        return self.unembed.W_U.T[torch.as_tensor(tokens, device=self.unembed.W_U.device)]

    def accumulated_bias(self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True) -> Tensor:
        """Sum of the attention/MLP output biases before ``layer`` (all zero for attention; ``decompose_resid``)."""
        total = torch.zeros(self.cfg.d_model, device=self.unembed.W_U.device)
        for i, block in enumerate(self.blocks[:layer + (1 if mlp_input else 0)]):
            total = total + block.attn.b_O
            if include_mlp_biases and not self.cfg.attn_only and i < layer:
                total = total + block.mlp.b_out
        return total

    def to_hooked_transformer(self) -> nn.Module:
        """The same network as a TransformerLens 2.x/3.x ``HookedTransformer`` (``model/bridge.py``); on 4.x an
        error saying why not."""
        from coopetition.model.bridge import to_hooked_transformer

        return to_hooked_transformer(self)

    # TransformerLens's weight shortcuts (``HookedTransformer.W_O`` ...): per-layer weights stacked on a first
    # ``layer`` axis, for notebooks written against a HookedTransformer.
    @property
    def W_U(self) -> Tensor:
        return self.unembed.W_U

    @property
    def b_U(self) -> Tensor:
        return self.unembed.b_U

    @property
    def W_pos(self) -> Tensor:
        return self.pos_embed.W_pos

    def _stacked(self, part: str, name: str) -> Tensor:
        return torch.stack([getattr(getattr(block, part), name) for block in self.blocks])

    W_Q = property(lambda self: self._stacked("attn", "W_Q"))
    W_K = property(lambda self: self._stacked("attn", "W_K"))
    W_V = property(lambda self: self._stacked("attn", "W_V"))
    W_O = property(lambda self: self._stacked("attn", "W_O"))
    b_Q = property(lambda self: self._stacked("attn", "b_Q"))
    b_K = property(lambda self: self._stacked("attn", "b_K"))
    b_V = property(lambda self: self._stacked("attn", "b_V"))
    b_O = property(lambda self: self._stacked("attn", "b_O"))
    W_in = property(lambda self: self._stacked("mlp", "W_in"))
    W_out = property(lambda self: self._stacked("mlp", "W_out"))
    b_in = property(lambda self: self._stacked("mlp", "b_in"))
    b_out = property(lambda self: self._stacked("mlp", "b_out"))

    # --- checkpoints ---------------------------------------------------------------------------------------------

    def checkpoint_layout(self) -> TensorLayout:
        """What a checkpoint of this network may hold, checked on the file's header before its data is read: this
        state dict's names, dtypes and shapes, all required, plus the buffers the ``HookedTransformer``-based model
        stored (``LEGACY_BUFFERS``; any shape within the size bound), which loading drops."""
        own = {name: (_DTYPE_NAMES[t.dtype], tuple(t.shape)) for name, t in self.state_dict().items()}
        legacy = {}
        for l, block in enumerate(self.blocks):
            legacy[f"blocks.{l}.attn.mask"] = ("BOOL", None)
            legacy[f"blocks.{l}.attn.IGNORE"] = ("F32", ())
            if self.cfg.positional_embedding_type == "rotary":
                for name in ("rotary_sin", "rotary_cos"):
                    legacy[f"blocks.{l}.attn.{name}"] = ("F32", tuple(getattr(block.attn, name).shape))
        own_bytes = sum(t.numel() * t.element_size() for t in self.state_dict().values())
        legacy_bytes = self.cfg.n_layers * (self.cfg.n_ctx ** 2 + 4 + 2 * 4 * self.cfg.n_ctx * self.cfg.d_head)
        return TensorLayout({**own, **legacy}, required=frozenset(own), max_tensors=len(own) + len(legacy),
                            max_bytes=own_bytes + legacy_bytes + (1 << 20))


_DTYPE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                torch.int64: "I64", torch.bool: "BOOL"}


def _at_least_float32(logits: Tensor) -> Tensor:
    """Logits in float32 for the loss (autocast's bfloat16 ones), float64 kept."""
    return logits if logits.dtype == torch.float64 else logits.float()


def _drop_legacy_buffers(module: nn.Module, state_dict: Mapping[str, Tensor], prefix: str, *args: Any) -> None:
    for key in [k for k in state_dict if LEGACY_BUFFERS.fullmatch(k[len(prefix):])]:
        del state_dict[key]


def build_model(config: ModelConfig, input_dim: int, n_labels: int, n_outputs: int, init_seed: int,
                device: str | torch.device = "cpu") -> ICLTransformer:
    """A freshly initialised, *untrained* network (seeded by ``init_seed``), as training starts from. To analyse a
    trained run, open it instead: ``coopetition.Run.open(path).network_at(step)`` loads that step's weights with the
    run's own interventions (or ``store.run.load_checkpoint`` into a network built here)."""
    return ICLTransformer(config, input_dim, n_labels, n_outputs, init_seed, device)


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
    shell.embed = front.embed
    if hasattr(front, "pos_embed"):
        shell.pos_embed = front.pos_embed
    shell.blocks = nn.ModuleList([*front.blocks[:layer + 1], *back.blocks[layer + 1:]])
    shell.ln_final, shell.unembed = back.ln_final, back.unembed
    shell.setup()  # re-register hook points: the modules are new
    return shell


def slice_cache(cache: ActivationCache, n: int) -> ActivationCache:
    """The first ``n`` sequences of a cache (every activation has the batch first)."""
    return cache.apply_slice_to_batch_dim((0, n))

