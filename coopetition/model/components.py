"""The network's parts, written for this architecture only: pre-norm LayerNorm blocks, causal attention without
biases (zero buffers, as the reference has none), learned or sinusoidal positions added to the residual stream or
rotary (GPT-J adjacent pairs) on queries and keys, an optional GELU MLP.

Every parameter, buffer and hook point has TransformerLens's name and shape (``W_Q [head, d_model, d_head]``,
``blocks.{l}.attn.hook_pattern [batch, head, q, k]``, ``ln1.hook_scale`` ...) and each activation is computed by
TransformerLens's arithmetic (same op order), so checkpoints, hook strings and notebooks written for the
``HookedTransformer``-based model keep working and give the same numbers (``tests/test_model_reference.py`` holds
them to reference files from that model under TransformerLens 2.18 and 3.9).

Fused kernels for training steps: a module switched on by ``fuse_training_kernels`` (the trainer does it), in train
mode and with no hook attached to its hook points, runs PyTorch's ``scaled_dot_product_attention`` (causal) instead
of building score and pattern tensors, and ``F.layer_norm`` instead of the two-pass LayerNorm. A hook point with
nothing attached is the identity, so this is the same function to float rounding (~1e-7, not bit for bit). That is
why it is confined to training steps: evaluation (eval mode), analysis and every hooked pass (``run_with_cache``,
``hooked()``, an intervention) take the hooked path, so ``eval.csv`` and an analysis of the same checkpoint compute
the same bits. Rotary attention and ``use_attn_result`` always take the hooked path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from coopetition.model.config import HookedConfig
from coopetition.model.tl import HookPoint


def listened(module: nn.Module, names: tuple[str, ...]) -> bool:
    """Whether any of ``module``'s named hook points has a forward or backward hook attached."""
    for name in names:
        point = getattr(module, name, None)
        if point is not None and (point._forward_hooks or point._backward_hooks or point._forward_pre_hooks):
            return True
    return False


def gelu_new(x: Tensor) -> Tensor:
    """GPT-2's tanh-approximated GELU, as TransformerLens's ``gelu_new`` computes it (the reference's GELU)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def _zero_buffer(module: nn.Module, name: str, *shape: int) -> None:
    module.register_buffer(name, torch.zeros(*shape))  # persistent: checkpoints carry it, as they always did


class LayerNorm(nn.Module):
    """``(x - mean) / sqrt(var + eps) * w + b`` over the last dimension (also ``[batch, pos, head, d_model]``)."""

    fused = False  # switched on per module by fuse_training_kernels

    def __init__(self, cfg: HookedConfig):
        super().__init__()
        self.cfg, self.eps, self.length = cfg, cfg.eps, cfg.d_model
        self.w = nn.Parameter(torch.ones(cfg.d_model))
        self.b = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, length]

    def forward(self, x: Tensor) -> Tensor:
        if self.fused and self.training and x.dtype == torch.float32 and not listened(
                self, ("hook_scale", "hook_normalized")):
            return F.layer_norm(x, (self.length,), self.w, self.b, self.eps)
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale * self.w + self.b)


ATTENTION_HOOKS = ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z", "hook_result",
                   "hook_rot_q", "hook_rot_k")


class Attention(nn.Module):
    """Causal multi-head attention, scores scaled by 1/sqrt(d_head); one matmul projects Q, K and V."""

    fused = False  # switched on per module by fuse_training_kernels

    def __init__(self, cfg: HookedConfig):
        super().__init__()
        self.cfg = cfg
        h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q, self.W_K, self.W_V = (nn.Parameter(torch.empty(h, d, e)) for _ in range(3))
        self.W_O = nn.Parameter(torch.empty(h, e, d))
        for name in ("b_Q", "b_K", "b_V"):
            _zero_buffer(self, name, h, e)
        _zero_buffer(self, "b_O", d)
        self.attn_scale = math.sqrt(e)
        # Not in checkpoints (non-persistent): TransformerLens 2.x stored the mask [n_ctx, n_ctx], 3.x an empty one;
        # ICLTransformer's loader drops both.
        self.register_buffer("mask", torch.tril(torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool)), persistent=False)
        self.register_buffer("IGNORE", torch.tensor(-torch.inf), persistent=False)
        for name in ATTENTION_HOOKS[:7]:
            setattr(self, name, HookPoint())
        if cfg.positional_embedding_type == "rotary":
            self.hook_rot_q, self.hook_rot_k = HookPoint(), HookPoint()
            sin, cos = rotary_tables(cfg.rotary_dim, cfg.n_ctx, cfg.rotary_base)
            self.register_buffer("rotary_sin", sin, persistent=False)
            self.register_buffer("rotary_cos", cos, persistent=False)

    def qkv(self, query_input: Tensor, key_input: Tensor, value_input: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``hook_q``/``hook_k``/``hook_v`` ``[batch, pos, head, d_head]``. One input (the usual case): one matmul
        on the three weights concatenated; per-head inputs ``[batch, pos, head, d_model]`` (``per_head_hooks``):
        TransformerLens's per-head einsum. The biases are zero buffers: adding them changes nothing."""
        cfg = self.cfg
        if query_input.dim() == 4:
            q, k, v = (torch.einsum("bphd,hde->bphe", x, w) + b for x, w, b in (
                (query_input, self.W_Q, self.b_Q), (key_input, self.W_K, self.b_K), (value_input, self.W_V, self.b_V)))
            return self.hook_q(q), self.hook_k(k), self.hook_v(v)
        weight = torch.cat([self.W_Q, self.W_K, self.W_V])  # [3 * head, d_model, d_head]
        qkv = query_input @ rearrange(weight, "head d_model d_head -> d_model (head d_head)")
        # Each of q, k, v is its own slice (not one unbind), so a hook may edit it in place.
        width = cfg.n_heads * cfg.d_head
        q, k, v = (rearrange(qkv[..., i * width:(i + 1) * width], "batch pos (head d_head) -> batch pos head d_head",
                             head=cfg.n_heads) for i in range(3))
        return self.hook_q(q), self.hook_k(k), self.hook_v(v)

    def rotate(self, x: Tensor) -> Tensor:
        """GPT-J rotary embedding over the whole head: adjacent pairs ``(x0, x1) -> (-x1, x0)`` mixed by position."""
        flipped = x.clone()
        flipped[..., ::2] = -x[..., 1::2]
        flipped[..., 1::2] = x[..., ::2]
        n = x.shape[1]
        return x * self.rotary_cos[None, :n, None, :] + flipped * self.rotary_sin[None, :n, None, :]

    def forward(self, query_input: Tensor, key_input: Tensor, value_input: Tensor) -> Tensor:
        cfg = self.cfg
        if (self.fused and self.training and query_input is key_input is value_input and query_input.dim() == 3
                and query_input.dtype == torch.float32 and cfg.positional_embedding_type != "rotary"
                and not cfg.use_attn_result and not listened(self, ATTENTION_HOOKS)):
            return self._fused(query_input)
        q, k, v = self.qkv(query_input, key_input, value_input)
        if cfg.positional_embedding_type == "rotary":
            q, k = self.hook_rot_q(self.rotate(q)), self.hook_rot_k(self.rotate(k))
        scores = rearrange(q, "b q h e -> b h q e") @ rearrange(k, "b k h e -> b h e k") / self.attn_scale
        n = scores.shape[-1]
        scores = self.hook_attn_scores(torch.where(self.mask[None, None, -n:, -n:], scores, self.IGNORE))
        pattern = F.softmax(scores, dim=-1)
        pattern = self.hook_pattern(torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern))
        z = self.hook_z(rearrange(pattern @ rearrange(v, "b k h e -> b h k e"), "b h q e -> b q h e"))
        if not cfg.use_attn_result:
            return F.linear(z.reshape(z.shape[0], z.shape[1], cfg.d_head * cfg.n_heads),
                            rearrange(self.W_O, "head d_head d_model -> d_model (head d_head)"), self.b_O)
        result = self.hook_result((z[..., None] * self.W_O[None, None]).sum(-2))  # [batch, pos, head, d_model]
        return result.sum(-2) + self.b_O

    def _fused(self, x: Tensor) -> Tensor:
        weight = torch.cat([self.W_Q, self.W_K, self.W_V])
        qkv = x @ rearrange(weight, "head d_model d_head -> d_model (head d_head)")
        q, k, v = rearrange(qkv, "batch pos (three head d_head) -> three batch head pos d_head", three=3,
                            head=self.cfg.n_heads)
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / float(self.attn_scale))
        return F.linear(rearrange(z, "batch head pos d_head -> batch pos (head d_head)"),
                        rearrange(self.W_O, "head d_head d_model -> d_model (head d_head)"), self.b_O)


def rotary_tables(rotary_dim: int, n_ctx: int, base: float) -> tuple[Tensor, Tensor]:
    """``(sin, cos)`` ``[n_ctx, rotary_dim]``: angle ``pos / base^(2i/rotary_dim)``, each repeated for a pair."""
    pos = torch.arange(n_ctx, dtype=torch.float32)
    dim = torch.arange(rotary_dim // 2, dtype=torch.float32)
    freq = (base ** (dim / (rotary_dim / 2))).repeat_interleave(2)
    angles = pos[:, None] / freq[None, :]
    return torch.sin(angles), torch.cos(angles)


def _addmm(bias: Tensor, weight: Tensor, x: Tensor) -> Tensor:
    """``x @ weight + bias`` over the last dimension as one fused ``addmm`` (TransformerLens's ``batch_addmm``)."""
    out = torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight)
    return out.reshape(*x.shape[:-1], out.shape[-1])


class MLP(nn.Module):
    def __init__(self, cfg: HookedConfig):
        super().__init__()
        self.cfg = cfg
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]

    def forward(self, x: Tensor) -> Tensor:
        post = self.hook_post(gelu_new(self.hook_pre(_addmm(self.b_in, self.W_in, x))))
        return _addmm(self.b_out, self.W_out, post)


class TransformerBlock(nn.Module):
    """Pre-norm: ``resid + attn(ln1(resid))`` then, unless attention-only, ``+ mlp(ln2(resid_mid))``. With
    ``cfg.use_split_qkv_input`` each head reads its own copy of the residual stream (``hook_q_input`` ...)."""

    def __init__(self, cfg: HookedConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        self.ln1 = LayerNorm(cfg)
        self.attn = Attention(cfg)
        if not cfg.attn_only:
            self.ln2 = LayerNorm(cfg)
            self.mlp = MLP(cfg)
        for name in ("hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input", "hook_mlp_in", "hook_attn_out",
                     "hook_mlp_out", "hook_resid_pre"):
            setattr(self, name, HookPoint())
        if not cfg.attn_only:
            self.hook_resid_mid = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid_pre: Tensor) -> Tensor:
        resid_pre = self.hook_resid_pre(resid_pre)
        if self.cfg.use_split_qkv_input:
            per_head = resid_pre[:, :, None].expand(-1, -1, self.cfg.n_heads, -1)
            q_in, k_in, v_in = (self.ln1(hook(per_head.clone())) for hook in (
                self.hook_q_input, self.hook_k_input, self.hook_v_input))
            attn_out = self.attn(q_in, k_in, v_in)
        else:
            normalized = self.ln1(resid_pre)
            attn_out = self.attn(normalized, normalized, normalized)
        attn_out = self.hook_attn_out(attn_out)
        if self.cfg.attn_only:
            return self.hook_resid_post(resid_pre + attn_out)
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        return self.hook_resid_post(resid_mid + self.hook_mlp_out(self.mlp(self.ln2(resid_mid))))


class PosEmbed(nn.Module):
    """The position table ``W_pos [n_ctx, d_model]``: a parameter (learned) or a fixed buffer (sinusoidal)."""

    def __init__(self, cfg: HookedConfig, table: Tensor | None = None):
        super().__init__()
        if table is None:
            self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))
        else:
            self.register_buffer("W_pos", table)

    def forward(self, residual: Tensor) -> Tensor:
        return self.W_pos[:residual.shape[1]].expand_as(residual)


class Unembed(nn.Module):
    def __init__(self, cfg: HookedConfig):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab_out))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab_out))

    def forward(self, residual: Tensor) -> Tensor:
        return _addmm(self.b_U, self.W_U, residual)  # W_U as stored: no per-call transposed copy


class InterleavedEmbed(nn.Module):
    """Exemplars through a learned affine map, labels through a table (no bias), interleaved into one sequence
    ``x1 y1 ... xN yN xq``."""

    def __init__(self, input_dim: int, n_labels: int, d_model: int):
        super().__init__()
        self.W_x = nn.Parameter(torch.empty(input_dim, d_model))
        self.b_x = nn.Parameter(torch.zeros(d_model))
        self.W_L = nn.Parameter(torch.empty(n_labels, d_model))
        self.hook_exemplar_embed = HookPoint()  # [batch, N+1, d_model]
        self.hook_label_embed = HookPoint()  # [batch, N, d_model]

    def forward(self, exemplars: Tensor, context_labels: Tensor) -> Tensor:
        x = self.hook_exemplar_embed(exemplars @ self.W_x + self.b_x)
        n_labels = self.W_L.shape[0]
        known = (context_labels < n_labels).unsqueeze(-1)  # the reference's one-hot of an unknown label is zero
        y = self.hook_label_embed(self.W_L[context_labels.clamp(max=n_labels - 1)] * known)
        n_ctx = y.shape[1]
        pairs = rearrange(torch.stack([x[:, :n_ctx], y], dim=2), "batch ctx pair d -> batch (ctx pair) d")
        return torch.cat([pairs, x[:, n_ctx:]], dim=1)


def fuse_training_kernels(model: nn.Module, on: bool = True) -> None:
    """Let the attention and LayerNorm modules of ``model`` run fused kernels in train mode (see the module
    docstring for why only there)."""
    for module in model.modules():
        if isinstance(module, (Attention, LayerNorm)):
            module.fused = on
