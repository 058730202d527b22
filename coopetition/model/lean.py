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
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from transformer_lens.components import Attention, TransformerBlock


class LeanAttention(Attention):
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
