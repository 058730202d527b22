"""The lean block: TransformerLens's block and attention with fewer ops, the same hook points, parameters and shapes.

TransformerLens's pre-norm block runs ``ln1`` three times on the same residual (once each for the query, key and
value inputs) and adds ``0.0`` to two of the results, then projects Q, K and V with three matmuls plus three
(zero, here) bias adds. The lean block runs ``ln1`` once and projects Q, K and V with one matmul on the three
weights concatenated. Everything else is TransformerLens's own code (``attn.forward`` from the scores on,
``apply_mlp``, ``ln2``), and every hook point fires with the same value: ``ln1``'s once instead of three times,
which a cache cannot tell apart. ``tests/test_model_lean.py`` compares every activation of ``run_with_cache``
against the stock blocks.

It serves only the configuration ``ICLTransformer`` builds (pre-norm LayerNorm, no KV cache, no attention mask, no
shortformer embedding, biases that are zero buffers); with split Q/K/V inputs (``per_head_hooks``), ``hook_attn_in``
or ``hook_mlp_in`` switched on it hands the pass to the stock block, whose hooks those are.

Fused kernels for training steps: a module switched on by ``fuse_training_kernels`` (the trainer does it), in train
mode and with no hook attached to its hook points, runs PyTorch's ``scaled_dot_product_attention`` (causal) instead
of building score and pattern tensors, and ``F.layer_norm`` instead of TransformerLens's LayerNorm. A hook point with
nothing attached is the identity, so this is the same function to float rounding (~1e-7, not bit for bit). That is
why it is confined to training steps: evaluation (eval mode), analysis and every hooked pass (``run_with_cache``,
``hooked()``, an intervention) go through TransformerLens's code, so ``eval.csv`` and an analysis of the same
checkpoint compute the same bits. Rotary, ALiBi or soft-capped attention, ``use_attn_result`` and 16-bit dtypes
always take the stock path.

The lean unembedding: TransformerLens 3 computes ``F.linear(x, W_U.T.contiguous(), b_U)``, copying the
``[d_model, classes]`` matrix transposed on every call (and once more in the backward) so that bfloat16 sums match
Hugging Face's ``nn.Linear``. At 12,800 classes that copy is a large share of a batch-32 step and made TL 3 steps
1.1-1.3x TL 2's. The lean one multiplies by ``W_U`` as stored (``addmm``, TransformerLens 2's own arithmetic), on
both lines, firing TL 3's ``hook_in`` / ``hook_out`` where they exist.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from transformer_lens.components import Attention, LayerNorm, TransformerBlock, Unembed

FAST_POSITIONAL = ("standard",)  # positional types whose attention is plain causal dot-product


def listened(module: nn.Module, names: tuple[str, ...]) -> bool:
    """Whether any of ``module``'s named hook points has a forward or backward hook attached."""
    for name in names:
        point = getattr(module, name, None)
        if point is not None and (point._forward_hooks or point._backward_hooks or point._forward_pre_hooks):
            return True
    return False


class LeanLayerNorm(LayerNorm):
    fused = False  # switched on per module by fuse_training_kernels

    def forward(self, x: Tensor) -> Tensor:
        if not (self.fused and self.training) or x.dtype != torch.float32 or listened(
                self, ("hook_scale", "hook_normalized")):
            return super().forward(x)
        return F.layer_norm(x, (self.length,), self.w, self.b, self.eps)


ATTENTION_HOOKS = ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z", "hook_result",
                   "hook_rot_q", "hook_rot_k")


class LeanAttention(Attention):
    fused = False  # switched on per module by fuse_training_kernels

    def forward(self, query_input: Tensor, key_input: Tensor, value_input: Tensor, past_kv_cache_entry=None,
                additive_attention_mask: Tensor | None = None, attention_mask: Tensor | None = None,
                position_bias: Tensor | None = None) -> Tensor:
        cfg = self.cfg
        if not (self.fused and self.training and query_input is key_input is value_input and query_input.dim() == 3
                and query_input.dtype == torch.float32 and past_kv_cache_entry is None
                and additive_attention_mask is None and attention_mask is None and position_bias is None
                and cfg.positional_embedding_type in FAST_POSITIONAL and cfg.attention_dir == "causal"
                and cfg.attn_scores_soft_cap <= 0 and not cfg.use_attn_result and not cfg.load_in_4bit
                and not listened(self, ATTENTION_HOOKS)):
            return super().forward(query_input, key_input, value_input, past_kv_cache_entry, additive_attention_mask,
                                   attention_mask, position_bias)
        weight = torch.cat([self.W_Q, self.W_K, self.W_V])  # b_Q/b_K/b_V are zero buffers (ICLTransformer)
        qkv = query_input @ rearrange(weight, "head d_model d_head -> d_model (head d_head)")
        q, k, v = rearrange(qkv, "batch pos (three head d_head) -> three batch head pos d_head", three=3,
                            head=cfg.n_heads)
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / float(self.attn_scale))
        return F.linear(rearrange(z, "batch head pos d_head -> batch pos (head d_head)"),
                        rearrange(self.W_O, "head d_head d_model -> d_model (head d_head)"), self.b_O)

    def calculate_qkv_matrices(self, query_input: Tensor, key_input: Tensor, value_input: Tensor):
        if not (query_input is key_input is value_input and query_input.dim() == 3):
            return super().calculate_qkv_matrices(query_input, key_input, value_input)
        weight = torch.cat([self.W_Q, self.W_K, self.W_V])  # [3 * head, d_model, d_head]
        qkv = query_input @ rearrange(weight, "head d_model d_head -> d_model (head d_head)")
        # b_Q/b_K/b_V are zero buffers (ICLTransformer): adding them would change nothing. Each of q, k, v is its
        # own slice (not one unbind), so a hook may still edit it in place, as it may TransformerLens's.
        width = self.cfg.n_heads * self.cfg.d_head
        q, k, v = (rearrange(qkv[..., i * width:(i + 1) * width], "batch pos (head d_head) -> batch pos head d_head",
                             head=self.cfg.n_heads) for i in range(3))
        return self.hook_q(q), self.hook_k(k), self.hook_v(v)


class LeanBlock(TransformerBlock):
    def forward(self, resid_pre: Tensor, shortformer_pos_embed: Tensor | None = None, past_kv_cache_entry=None,
                attention_mask: Tensor | None = None) -> Tensor:
        cfg = self.cfg
        if (cfg.use_attn_in or cfg.use_split_qkv_input or cfg.use_hook_mlp_in or shortformer_pos_embed is not None
                or past_kv_cache_entry is not None or attention_mask is not None):
            return super().forward(resid_pre, shortformer_pos_embed, past_kv_cache_entry, attention_mask)
        resid_pre = self.hook_resid_pre(resid_pre)
        normalized = self.ln1(resid_pre)
        attn_out = self.hook_attn_out(self.attn(query_input=normalized, key_input=normalized,
                                                value_input=normalized))
        if cfg.attn_only:
            return self.hook_resid_post(resid_pre + attn_out)
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        return self.hook_resid_post(resid_mid + self.apply_mlp(self.ln2(resid_mid)))


def make_lean(block: TransformerBlock) -> None:
    """Turn a stock block (and its attention) into the lean one in place: same modules, parameters and hooks."""
    if type(block) is not TransformerBlock or type(block.attn) is not Attention:
        raise TypeError(f"expected TransformerLens's TransformerBlock with Attention, got {type(block).__name__}")
    if block.cfg.normalization_type != "LN" or block.cfg.parallel_attn_mlp or getattr(
            block.cfg, "use_normalization_before_and_after", False):
        raise ValueError("the lean block serves pre-norm LayerNorm blocks only")
    block.__class__ = LeanBlock
    block.attn.__class__ = LeanAttention
    for norm in (block.ln1, getattr(block, "ln2", None)):
        make_lean_norm(norm)


def fuse_training_kernels(model: nn.Module, on: bool = True) -> None:
    """Let the lean attention and LayerNorm modules of ``model`` run fused kernels in train mode (see the module
    docstring for why only there)."""
    for module in model.modules():
        if isinstance(module, (LeanAttention, LeanLayerNorm)):
            module.fused = on


class LeanUnembed(Unembed):
    def forward(self, residual: Tensor) -> Tensor:
        hook_in, hook_out = getattr(self, "hook_in", None), getattr(self, "hook_out", None)  # TransformerLens 3 only
        if hook_in is not None:
            residual = hook_in(residual)
        logits = torch.addmm(self.b_U, residual.reshape(-1, residual.shape[-1]), self.W_U)
        logits = logits.reshape(*residual.shape[:-1], logits.shape[-1])
        return logits if hook_out is None else hook_out(logits)


def make_lean_unembed(unembed: nn.Module) -> None:
    """TransformerLens's Unembed becomes the lean one in place (same parameters and hook points)."""
    if type(unembed) is not Unembed:
        raise TypeError(f"expected TransformerLens's Unembed, got {type(unembed).__name__}")
    unembed.__class__ = LeanUnembed


def make_lean_norm(norm: nn.Module | None) -> None:
    """A stock LayerNorm becomes the lean one in place (anything else, e.g. an identity, is left alone)."""
    if norm is not None and type(norm) is LayerNorm:
        norm.__class__ = LeanLayerNorm
