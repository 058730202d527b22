"""The same sequence classifier as ``coopetition.model.ICLTransformer``, written in plain PyTorch (nanoGPT style: no
HookPoints, no TransformerLens), as the baseline the training benchmark compares against.

It is built from an ``ICLTransformer`` and copies its weights, so both compute the same function
(``python bench/plain_model.py`` checks the logits agree to 1e-5). Fused QKV linear, ``F.layer_norm`` and
``F.scaled_dot_product_attention`` with a causal mask are what a plain implementation would use; rotary positions
are not ported (the benchmark shapes, ``quick`` and ``c25``, use learned positions; sinusoidal is a fixed table).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coopetition.model import ICLTransformer


class PlainBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_mlp: int | None):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model, eps=1e-5)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)  # q for all heads, then k, then v
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.mlp = None
        if d_mlp is not None:
            self.ln2 = nn.LayerNorm(d_model, eps=1e-5)
            self.mlp = nn.Sequential(nn.Linear(d_model, d_mlp), nn.GELU(approximate="tanh"), nn.Linear(d_mlp, d_model))

    def forward(self, x: Tensor) -> Tensor:
        batch, pos, d_model = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(batch, pos, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [batch, head, pos, d_head]
        x = x + self.out(z.transpose(1, 2).reshape(batch, pos, d_model))
        if self.mlp is not None:
            x = x + self.mlp(self.ln2(x))
        return x


class PlainICLTransformer(nn.Module):
    """``model(exemplars, context_labels)`` -> query logits, exactly as ``ICLTransformer`` (learned/sinusoidal
    positions)."""

    def __init__(self, input_dim: int, n_labels: int, n_outputs: int, n_layers: int, d_model: int, n_heads: int,
                 d_mlp: int | None, max_seq_len: int):
        super().__init__()
        self.embed_x = nn.Linear(input_dim, d_model)
        self.embed_label = nn.Embedding(n_labels, d_model)
        self.pos = nn.Parameter(torch.zeros(max_seq_len, d_model))
        self.blocks = nn.ModuleList(PlainBlock(d_model, n_heads, d_mlp) for _ in range(n_layers))
        self.ln_final = nn.LayerNorm(d_model, eps=1e-5)
        self.unembed = nn.Linear(d_model, n_outputs)

    @classmethod
    def from_hooked(cls, model: ICLTransformer) -> "PlainICLTransformer":
        cfg = model.cfg
        if cfg.positional_embedding_type == "rotary":
            raise ValueError("the plain baseline does not implement rotary positions")
        plain = cls(model.input_dim, model.n_labels, model.n_outputs, cfg.n_layers, cfg.d_model, cfg.n_heads,
                    None if cfg.attn_only else cfg.d_mlp, cfg.n_ctx)
        plain.load_hooked_weights(model)
        return plain.to(model.W_U.device)

    @torch.no_grad()
    def load_hooked_weights(self, model: ICLTransformer) -> None:
        self.embed_x.weight.copy_(model.embed.W_x.T)
        self.embed_x.bias.copy_(model.embed.b_x)
        self.embed_label.weight.copy_(model.embed.W_L)
        self.pos.copy_(model.pos_embed.W_pos)
        for plain, block in zip(self.blocks, model.blocks):
            attn = block.attn
            # W_Q [head, d_model, d_head] -> rows (head, d_head) of a [3 d_model, d_model] fused weight
            qkv = [w.permute(0, 2, 1).reshape(-1, w.shape[1]) for w in (attn.W_Q, attn.W_K, attn.W_V)]
            plain.qkv.weight.copy_(torch.cat(qkv))
            plain.out.weight.copy_(attn.W_O.reshape(-1, attn.W_O.shape[-1]).T)
            plain.ln1.weight.copy_(block.ln1.w)
            plain.ln1.bias.copy_(block.ln1.b)
            if plain.mlp is not None:
                plain.ln2.weight.copy_(block.ln2.w)
                plain.ln2.bias.copy_(block.ln2.b)
                plain.mlp[0].weight.copy_(block.mlp.W_in.T)
                plain.mlp[0].bias.copy_(block.mlp.b_in)
                plain.mlp[2].weight.copy_(block.mlp.W_out.T)
                plain.mlp[2].bias.copy_(block.mlp.b_out)
        self.ln_final.weight.copy_(model.ln_final.w)
        self.ln_final.bias.copy_(model.ln_final.b)
        self.unembed.weight.copy_(model.unembed.W_U.T)
        self.unembed.bias.copy_(model.unembed.b_U)

    def forward(self, exemplars: Tensor, context_labels: Tensor) -> Tensor:
        x = self.embed_x(exemplars)
        n_labels = self.embed_label.num_embeddings
        known = (context_labels < n_labels).unsqueeze(-1)  # an unknown label embeds to zero, as in the reference
        y = self.embed_label(context_labels.clamp(max=n_labels - 1)) * known
        batch, n_ctx, d_model = y.shape
        h = torch.cat([torch.stack([x[:, :n_ctx], y], dim=2).reshape(batch, 2 * n_ctx, d_model), x[:, n_ctx:]], 1)
        h = h + self.pos[:h.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.unembed(self.ln_final(h[:, -1]))


def max_logit_difference(model: ICLTransformer, batch: int = 16, n_ctx: int = 2, seed: int = 0) -> float:
    """Largest |logit difference| between ``model`` and its plain copy on random inputs (the self-check)."""
    gen = torch.Generator().manual_seed(seed)
    plain = PlainICLTransformer.from_hooked(model)
    exemplars = torch.randn(batch, n_ctx + 1, model.input_dim, generator=gen).to(model.W_U.device)
    labels = torch.randint(model.n_labels, (batch, n_ctx), generator=gen).to(model.W_U.device)
    with torch.no_grad():
        return (model(exemplars, labels) - plain(exemplars, labels)).abs().max().item()


if __name__ == "__main__":
    from coopetition.model import ModelConfig, build_model

    for name, config, dim, classes in [("quick", ModelConfig(), 64, 12800), ("c25", ModelConfig(), 512, 12800),
                                       ("mlp", ModelConfig(mlp_ratio=4), 64, 1600),
                                       ("sinusoidal", ModelConfig(positional="sinusoidal"), 64, 1600)]:
        diff = max_logit_difference(build_model(config, dim, classes, classes, init_seed=5))
        print(f"plain vs hooked max |logit diff| {name}: {diff:.2e} ({'ok' if diff < 1e-5 else 'MISMATCH'})")
