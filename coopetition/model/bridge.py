"""``ICLTransformer.to_hooked_transformer()``: the same network as a real TransformerLens ``HookedTransformer``, for
users on TransformerLens 2.x/3.x whose tools expect one (``tests/test_model_bridge.py`` checks its logits equal ours).

A ``HookedTransformer`` reads token ids; ours reads exemplar vectors and context labels. So the bridge carries every
layer after the embedding (positions included where they are added to the residual stream: learned and sinusoidal
tables become ``pos_embed.W_pos``) and the caller feeds the residual stream our embedding makes::

    ht = model.to_hooked_transformer()
    logits = ht(model.embed_input(exemplars, labels), start_at_layer=0)  # == model(..., positions="all")

``start_at_layer=0`` skips TransformerLens's token and position embeddings; ``embed_input`` (token embeddings plus
positions) is what our block 0 reads. TransformerLens 4 removed ``HookedTransformer``, so there
the bridge is a one-line error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coopetition.model.tl import TL_MAJOR, TL_VERSION

if TYPE_CHECKING:
    from torch import nn

    from coopetition.model.hooked import ICLTransformer


class BridgeUnavailable(RuntimeError):
    """TransformerLens 4 has no ``HookedTransformer`` to bridge to."""


def to_hooked_transformer(model: ICLTransformer) -> nn.Module:
    """A ``HookedTransformer`` with ``model``'s blocks, final LayerNorm and unembedding (copies of the weights) and
    TransformerLens's hook names; feed it ``model.embed_input(...)`` with ``start_at_layer=0``."""
    if TL_MAJOR >= 4:
        raise BridgeUnavailable(f"to_hooked_transformer needs TransformerLens 2.x or 3.x: {TL_VERSION} removed "
                                "HookedTransformer (ICLTransformer itself is a HookedRootModule and works as is)")
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = model.cfg
    ht_cfg = HookedTransformerConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_head, n_ctx=cfg.n_ctx,
        d_vocab=1, d_vocab_out=cfg.d_vocab_out, attn_only=cfg.attn_only, d_mlp=cfg.d_mlp, act_fn=cfg.act_fn,
        normalization_type="LN", eps=cfg.eps, init_weights=False, default_prepend_bos=False,
        positional_embedding_type=cfg.positional_embedding_type, rotary_dim=cfg.rotary_dim,
        rotary_adjacent_pairs=cfg.rotary_adjacent_pairs, rotary_base=cfg.rotary_base, device=cfg.device)
    ht = HookedTransformer(ht_cfg, move_to_device=False)
    ours = {k: v for k, v in model.state_dict().items() if not k.startswith("embed.")}
    missing, unexpected = ht.load_state_dict(ours, strict=False)
    left = [k for k in missing if not k.startswith("embed.") and not k.rsplit(".", 1)[-1] in (
        "mask", "IGNORE", "rotary_sin", "rotary_cos")]
    if left or unexpected:
        raise RuntimeError(f"bridge mismatch: missing {left}, unexpected {unexpected}")
    return ht
