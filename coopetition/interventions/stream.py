"""Hook-free variant readouts for attention-only networks: what a variant does to the residual stream.

In an attention-only network (no MLPs), the residual stream leaving block l is the stream entering block 0 plus,
for every block up to l, each head's output ``z_h @ W_O[h]`` and the block's ``b_O``. So a variant that replaces
some heads' outputs by something the baseline cache already determines (zero, the clean mean or another
sequence's output, a clamped pattern applied to values that did not change) changes the stream leaving that block
by a known amount without running it; only the later blocks must be recomputed. They run here once for all
variants stacked on the batch axis, without hooks, and the last block on the query row only (the only row the
logits read; its keys and values still come from every position). A later block whose patterns, queries, keys or
values a variant preserves from the clean pass takes them from the cache instead.

This is what ``Intervened.run_variants`` computes with one hooked pass per variant, equal in real arithmetic; in
floats the sums run in another order (~1e-7 relative in float32). It holds only for an attention-only network
without the run's own hook edits (``applies``); the analyses that use it (``clamp``, ``ablation``) recognise the
variants it covers and run every other one through ``run_variants``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from coopetition.model.sites import hook_name, residual_entering

if TYPE_CHECKING:
    from coopetition.interventions.engine import Intervened

PRESERVED = ("pattern", "queries", "keys", "values")


def applies(forward: Intervened) -> bool:
    """Whether the stream arithmetic is exact in real arithmetic for ``forward``: attention-only, and no run or
    ``--intervene`` edit that could act anywhere in the pass (grafts are part of the network and fine)."""
    return bool(forward.network.cfg.attn_only) and not forward.edits


def head_output(network, layer: int, head: int, z: Float[Tensor, "... d_head"]) -> Float[Tensor, "... d_model"]:
    """What head ``head`` of block ``layer`` writes for value-weighted vectors ``z`` (without ``b_O``)."""
    return z @ network.blocks[layer].attn.W_O[head]


def layer_output(network, layer: int, z: Float[Tensor, "... head d_head"]) -> Float[Tensor, "... d_model"]:
    """What block ``layer``'s attention writes for every head's ``z`` (``b_O`` included)."""
    attn = network.blocks[layer].attn
    return z.flatten(-2) @ attn.W_O.flatten(0, 1) + attn.b_O


def entering(cache: Mapping[str, Tensor], layer: int, n_layers: int) -> Tensor:
    """The clean residual stream entering block ``layer`` (``n_layers``: after the last block)."""
    return cache[residual_entering(layer, n_layers)]


def positions(network, cache: Mapping[str, Tensor]) -> Tensor:
    """The stream entering block 0 with the token embeddings zeroed (``ablate_embed``): the positions alone (zero
    for rotary models, which add none)."""
    name = hook_name("pos_embed")
    if name in cache:
        return cache[name]
    return torch.zeros_like(cache[hook_name("embed")])


def layer_norm(ln, x: Tensor) -> Tensor:
    """``components.LayerNorm`` as one fused kernel (the same function to float rounding)."""
    return F.layer_norm(x, (x.shape[-1],), ln.w, ln.b, ln.eps)


def query_block(block, resid: Float[Tensor, "b pos d_model"], pattern: Tensor | None = None,
                queries: Tensor | None = None, keys: Tensor | None = None,
                values: Tensor | None = None) -> Float[Tensor, "b d_model"]:
    """The stream leaving attention-only ``block`` at the query (last) position, from the stream entering it.
    Preserved inputs replace what the block would compute: ``pattern`` the query row ``[b, head, pos]``,
    ``queries`` the query's (post-rotary) ``[b, head, d_head]``, ``keys`` / ``values`` ``[b, pos, head, d_head]``.
    ``components.Attention``'s arithmetic (the query row of a causal mask hides nothing)."""
    attn = block.attn
    b, n_pos, d_model = resid.shape
    n_heads, _, d_head = attn.W_Q.shape
    need_q, need_k = pattern is None and queries is None, pattern is None and keys is None
    rotary = attn.cfg.positional_embedding_type == "rotary"
    x = layer_norm(block.ln1, resid) if (need_q or need_k or values is None) else None

    def project(rows: Tensor, *names: str) -> Tensor:  # [..., d_model] -> [..., len(names) * head, d_head]
        weight = torch.cat([getattr(attn, f"W_{n}") for n in names])  # [len * head, d_model, d_head]
        bias = torch.cat([getattr(attn, f"b_{n}") for n in names])
        out = rows.reshape(-1, d_model) @ weight.permute(1, 0, 2).reshape(d_model, -1)
        return out.view(*rows.shape[:-1], len(names) * n_heads, d_head) + bias

    if need_k or values is None:
        kv = project(x, *(("K",) if need_k else ()), *(("V",) if values is None else ()))
        if need_k:
            keys = attn.rotate(kv[:, :, :n_heads]) if rotary else kv[:, :, :n_heads]
        if values is None:
            values = kv[:, :, -n_heads:]
    if need_q:
        if rotary:  # the rotation depends on the position: rotate every row, keep the query's
            queries = attn.rotate(project(x, "Q"))[:, -1]
        else:
            queries = project(x[:, -1], "Q")
    if pattern is None:  # laid out [b, pos, head]: the softmax over positions runs on contiguous memory
        weights = torch.softmax((keys * queries[:, None]).sum(-1) / attn.attn_scale, dim=1)
    else:
        weights = pattern.transpose(1, 2)
    z = (weights[..., None] * values).sum(1)  # [b, head, d_head]
    return resid[:, -1] + z.reshape(b, -1) @ attn.W_O.reshape(-1, d_model) + attn.b_O


def streams_at_query(network, layer: int, resid: Float[Tensor, "b pos d_model"],
                     preserved: Mapping[str, Tensor] | None = None) -> Float[Tensor, "b d_model"]:
    """The final stream at the query from streams leaving block ``layer`` (-1: entering block 0; the last block:
    only the query row is read): the blocks in between plainly, the last on the query row (``query_block``, with
    ``preserved`` inputs, which are only allowed when it is the next block)."""
    last = network.cfg.n_layers - 1
    if layer >= last:
        return resid[:, -1]
    if preserved and layer != last - 1:
        raise ValueError("preserved inputs apply to the last block only, which must follow block layer")
    return query_block(network.blocks[last], network.run_blocks(resid, layer + 1, last), **(preserved or {}))


class Readout:
    """The final LayerNorm and the unembedding columns of ``labels`` ``[n, k]``, gathered once and read for any
    number of variants: ``ICLTransformer.unembed_query``'s arithmetic."""

    def __init__(self, network, labels: Int[Tensor, "n k"]):
        self.network = network
        labels = labels.clamp(max=network.n_outputs - 1)
        self.columns = network.unembed.W_U.T[labels]  # [n, k, d_model]
        self.bias = network.unembed.b_U[labels]

    def __call__(self, resid: Float[Tensor, "v n d_model"]) -> Float[Tensor, "v n k"]:
        normalized = layer_norm(self.network.ln_final, resid)
        return torch.einsum("vnd,nkd->vnk", normalized, self.columns) + self.bias


def stacked_logits(network, layer: int, build: Callable[[list[int]], Tensor], count: int,
                   labels: Int[Tensor, "n k"], max_rows: int,
                   preserved: Mapping[str, Tensor] | None = None) -> Float[Tensor, "count n k"]:
    """Label logits of ``count`` variants in chunks of at most ``max_rows`` sequences: ``build(indices)`` returns
    the streams leaving block ``layer`` of those variants stacked ``[len(indices) * n, pos, d_model]``;
    ``preserved`` tensors are per sequence ``[n, ...]`` (the same for every variant)."""
    n = labels.shape[0]
    read = Readout(network, labels)
    per_chunk = max(1, max_rows // n)
    out = []
    for first in range(0, count, per_chunk):
        indices = list(range(first, min(count, first + per_chunk)))
        g = len(indices)
        tiled = {k: v.repeat(g, *[1] * (v.dim() - 1)) for k, v in (preserved or {}).items()}
        out.append(read(streams_at_query(network, layer, build(indices), tiled).view(g, n, -1)))
    return torch.cat(out)


# --- head and embedding ablations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How the stream arithmetic computes one variant: ``streams(cache)`` leaving block ``layer`` (-1: entering
    block 0) ``[n, pos, d_model]``, then the later blocks with the clean ``preserved`` inputs (``query_block``'s
    keywords) in the last one."""

    layer: int
    streams: Callable[[Mapping[str, Tensor]], Tensor]
    preserved: tuple[str, ...] = ()


def _replaced(network, cache: Mapping[str, Tensor], layer: int, heads: list[int], method: str) -> Tensor:
    """Block ``layer``'s clean ``hook_z`` with ``heads`` replaced as ``Ablate`` replaces them."""
    z = cache[hook_name("z", layer)]  # [n, pos, head, d_head]
    source = (torch.zeros_like(z) if method == "zero" else z.mean(0, keepdim=True).expand_as(z) if method == "mean"
              else z.roll(1, dims=0))
    mask = torch.zeros(z.shape[2], dtype=torch.bool, device=z.device)
    mask[heads] = True
    return torch.where(mask[:, None], source, z)


def ablation_plan(variant, network) -> Plan | None:
    """The ``Plan`` of a variant made of at most one ``Ablate``, one ``AblateEmbedding`` and one ``Preserve``
    (in any order), where the stream arithmetic computes it exactly; None for anything else:

    - nothing: the clean final stream;
    - ``ablate`` of heads in one block l: the stream entering l plus the block's output with those heads'
      ``z`` replaced (zero, clean mean, another sequence's), then the later blocks;
    - ``ablate`` of every head of every block from some l on: nothing reads the stream after l, so the final
      stream is the one entering l plus each block's replaced output;
    - with ``preserve`` of what the blocks after l read: only where the one such block is the last one;
    - ``ablate_embed``: the positions alone, through every block; with ``preserve:patterns+values`` everywhere
      every head writes what it wrote on the clean pass, so the final stream is the clean one less the token
      embeddings.
    """
    from coopetition.interventions.attention import Ablate, AblateEmbedding, Preserve
    from coopetition.interventions.base import heads_by_layer

    cfg = network.cfg
    last = cfg.n_layers - 1
    kinds = {type(i) for i in variant}
    if len(variant) != len(kinds) or not kinds <= {Ablate, AblateEmbedding, Preserve} or kinds >= {Ablate,
                                                                                                   AblateEmbedding}:
        return None
    found = {type(i): i for i in variant}
    ablate, embed, preserve = found.get(Ablate), found.get(AblateEmbedding), found.get(Preserve)
    if embed is not None:
        if preserve is None:
            return Plan(-1, lambda cache: positions(network, cache))
        if preserve.layers is None and {"patterns", "values"} <= set(preserve.what):
            return Plan(last, lambda cache: entering(cache, cfg.n_layers, cfg.n_layers) - cache[hook_name("embed")])
        return None
    if ablate is None:
        return None if preserve is not None else Plan(last, lambda cache: entering(cache, cfg.n_layers,
                                                                                   cfg.n_layers))
    by_layer = heads_by_layer(ablate.heads, cfg.n_heads)
    first = min(by_layer)
    if len(by_layer) > 1:
        if list(by_layer) != list(range(first, last + 1)) or any(len(h) < cfg.n_heads for h in by_layer.values()):
            return None
        return Plan(last, lambda cache: entering(cache, first, cfg.n_layers) + sum(
            layer_output(network, layer, _replaced(network, cache, layer, heads, ablate.method))
            for layer, heads in by_layer.items()))
    later = set(range(first + 1, last + 1)) & set(range(cfg.n_layers) if preserve is None or preserve.layers is None
                                                  else preserve.layers)
    what = () if preserve is None or not later else tuple(sorted(preserve.what))
    if what and later != {last}:
        return None
    return Plan(first, lambda cache: entering(cache, first, cfg.n_layers) + layer_output(
        network, first, _replaced(network, cache, first, by_layer[first], ablate.method)), what)


def preserved_inputs(network, cache: Mapping[str, Tensor], what: tuple[str, ...]) -> dict[str, Tensor]:
    """``query_block``'s keywords for the last block's clean ``what`` (``Preserve``'s names)."""
    last = network.cfg.n_layers - 1
    rotary = network.cfg.positional_embedding_type == "rotary"
    out = {}
    if "patterns" in what:
        out["pattern"] = cache[hook_name("pattern", last)][:, :, -1]
    if "queries" in what:
        out["queries"] = cache[hook_name("rot_q" if rotary else "q", last)][:, -1]
    if "keys" in what:
        out["keys"] = cache[hook_name("rot_k" if rotary else "k", last)]
    if "values" in what:
        out["values"] = cache[hook_name("v", last)]
    return out


def ablation_logits(forward: Intervened, exemplars: Tensor, context_labels: Tensor, target: Tensor | None,
                    variants, labels: Int[Tensor, "n k"], baseline: Mapping[str, Tensor],
                    max_rows: int) -> Float[Tensor, "v n k"]:
    """``forward.run_variants(...)`` for ``variants`` with the baseline cache: each that ``ablation_plan`` covers
    from the stream arithmetic (only where ``applies``), the rest through ``run_variants``."""
    network = forward.network
    plans = [ablation_plan(v, network) if applies(forward) else None for v in variants]
    dtype = baseline[hook_name("resid_pre", 0)].dtype
    out = torch.empty(len(variants), labels.shape[0], labels.shape[1], device=labels.device, dtype=dtype)
    rest = [i for i, plan in enumerate(plans) if plan is None]
    if rest:
        out[rest] = forward.run_variants(exemplars, context_labels, target, [variants[i] for i in rest], labels,
                                         baseline, max_rows=max_rows).to(dtype)
    groups: dict[tuple, list[int]] = {}
    for i, plan in enumerate(plans):
        if plan is not None:
            groups.setdefault((plan.layer, plan.preserved), []).append(i)
    for (layer, what), members in groups.items():
        out[members] = stacked_logits(
            network, layer, lambda chosen: torch.cat([plans[members[j]].streams(baseline) for j in chosen]),
            len(members), labels, max_rows, preserved_inputs(network, baseline, what))
    return out
