"""Activation patching of many sites at once, exactly, without a hooked pass per site.

``Patch`` through ``Intervened.run_variants`` writes one clean activation into the corrupted pass and reruns the
network from the patched block: for a head's ``z``, ``q``, ``k``, ``v`` or ``pattern`` the whole block (every head,
every position), then every later block at every position, although the patch changes one head and the logits read
one row. ``patched_logits`` computes the same function of the same two caches directly:

- a head site: that head alone, on its corrupted inputs with the one activation replaced (pattern recomputed from
  patched ``q``/``k``; ``z = pattern @ v``), its output's change ``(z_new - z) @ W_O[head]`` added to the corrupted
  stream after the block's attention (the MLP, if any, rerun on it); in the last block only the query row;
- a ``resid`` site: the corrupted stream entering the block with the patched rows, then the blocks as usual;
- later blocks as one ordinary pass over every variant's rows, except the last block, whose query row alone is
  computed (keys and values at every position, the query, the pattern row, the MLP at the query): all the logits
  read.

Equal in real arithmetic; in floats the sums run in another order, so each variant's logits are taken relative to
the same computation without the edit (``null``, as in ``paths.patched_logits``): a site whose clean and corrupted
values are equal comes out as the corrupted logits. ``tests/test_interventions_patches.py`` holds this equal to
``run_variants`` on random networks (attention-only and with MLPs, learned and rotary positions; float64 to 1e-10,
float32 to ~1e-5). Only for a network that runs without hook interventions (grafts are part of ``network``):
``usable`` says when.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from coopetition.interventions.attention import Patch
from coopetition.interventions.paths import finish_block
from coopetition.model.sites import hook_name, residual_entering

if TYPE_CHECKING:
    from coopetition.interventions.engine import Intervened

HEAD_SITES = ("z", "q", "k", "v", "pattern")


def usable(forward: Intervened, patches: Sequence[Patch]) -> bool:
    """Whether ``patched_logits`` computes what ``forward.run_variants`` would: no hook intervention of the run's
    own (their hooks would edit the passes it skips), no per-head inputs, and only ``Patch`` variants."""
    cfg = forward.network.cfg
    return (not forward.edits and not cfg.use_split_qkv_input and not cfg.use_attn_result
            and all(isinstance(p, Patch) for p in patches))


def _attention_tail(attn, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``components.Attention``'s arithmetic from ``q [rows, q_pos, head, e]`` (the last ``q_pos`` positions) and
    ``k``, ``v`` ``[rows, pos, head, e]`` to ``z [rows, q_pos, head, e]``."""
    scores = rearrange(q, "b q h e -> b h q e") @ rearrange(k, "b k h e -> b h e k") / attn.attn_scale
    n, m = k.shape[1], q.shape[1]
    scores = torch.where(attn.mask[None, None, -n:, -n:][:, :, -m:], scores, attn.IGNORE)
    pattern = F.softmax(scores, dim=-1)
    pattern = torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern)
    return rearrange(pattern @ rearrange(v, "b k h e -> b h k e"), "b h q e -> b q h e")


def last_block_query(block, resid: Tensor) -> Tensor:
    """Block ``block`` on ``resid [rows, pos, d]``, the query (last) row only ``[rows, 1, d]``: keys and values at
    every position, the query and everything after attention at the last."""
    attn = block.attn
    normalized = block.ln1(resid)
    if attn.cfg.positional_embedding_type == "rotary":  # rotation depends on the position: rotate, then take the row
        q, k, v = attn.qkv(normalized, normalized, normalized)
        q, k = attn.rotate(q)[:, -1:], attn.rotate(k)
    else:
        h = attn.cfg.n_heads
        kv = normalized @ rearrange(torch.cat([attn.W_K, attn.W_V]), "head d e -> d (head e)")
        k, v = (rearrange(x, "b p (h e) -> b p h e", h=h) for x in kv.chunk(2, dim=-1))
        q = rearrange(normalized[:, -1:] @ rearrange(attn.W_Q, "head d e -> d (head e)"), "b p (h e) -> b p h e", h=h)
    z = _attention_tail(attn, q, k, v)
    out = F.linear(z.reshape(z.shape[0], 1, -1), rearrange(attn.W_O, "head e d -> d (head e)"), attn.b_O)
    return finish_block(block, resid[:, -1:] + out)


def _head_z(patch: Patch, corrupt: Mapping[str, Tensor], clean: Mapping[str, Tensor], attn, rows: slice) -> Tensor:
    """The patched head's ``z [n, q_pos, e]`` on query rows ``rows`` (every row, or the last)."""
    layer, head = patch.layer, patch.head
    index = (slice(None), *patch.index())

    def patched(site: str) -> Tensor:
        name = hook_name(site, layer)
        if site != patch.component:
            return corrupt[name]
        out = corrupt[name].clone()
        out[index] = clean[name][index]
        return out

    if patch.component == "z":
        return patched("z")[:, rows, head]
    v = patched("v")[:, :, head]
    if patch.component in ("v", "pattern"):
        pattern = patched("pattern")[:, head, rows]
        return pattern @ v
    q, k = patched("q")[:, :, head:head + 1], patched("k")[:, :, head:head + 1]
    if attn.cfg.positional_embedding_type == "rotary":
        q, k = attn.rotate(q), attn.rotate(k)
    return _attention_tail(attn, q[:, rows], k, v[:, :, None])[:, :, 0]


def patched_logits(network, patches: Sequence[Patch], corrupt: Mapping[str, Tensor], clean: Mapping[str, Tensor],
                   labels: Tensor, reference: Tensor, max_rows: int = 2048) -> Tensor:
    """Query logits ``[len(patches), n, k]`` (of ``labels`` ``[n, k]``) of the corrupted run with each patch alone:
    what ``Intervened(network).run_variants([(p,) for p in patches], labels, baseline=corrupt, source=clean)``
    gives (module docstring). ``corrupt``/``clean``: full caches of the two runs (every hook point);
    ``reference``: the corrupted run's logits of ``labels`` ``[n, k]``."""
    cfg = network.cfg
    last = cfg.n_layers - 1
    n = labels.shape[0]

    def logits_from(stream: Tensor, start: int) -> Tensor:
        """Logits from streams ``[g * n, pos, d]`` entering block ``start`` (``n_layers``: the final stream)."""
        if start < cfg.n_layers:
            stream = last_block_query(network.blocks[last], network.run_blocks(stream, start, last))
        return network.unembed_query(stream, labels.repeat(stream.shape[0] // n, 1))

    def leaving(layer: int, change: Tensor, query_only: bool) -> Tensor:
        """The corrupted stream leaving block ``layer`` with ``change [g * n, pos, d]`` added to its attention
        output (the query row only with ``query_only``)."""
        g = change.shape[0] // n
        rows = slice(-1, None) if query_only else slice(None)
        if cfg.attn_only:
            return corrupt[residual_entering(layer + 1, cfg.n_layers)][:, rows].repeat(g, 1, 1) + change
        mid = corrupt[hook_name("resid_mid", layer)][:, rows].repeat(g, 1, 1)
        return finish_block(network.blocks[layer], mid + change)

    # each variant: (group, its stream) where group = (kind, layer): "enter" streams enter block ``layer``,
    # "leave" ones leave it (a head site); streams of one group continue through the same blocks
    groups: dict[tuple[str, int], list[int]] = {}
    for i, patch in enumerate(patches):
        groups.setdefault(("enter" if patch.component == "resid" else "leave", patch.layer), []).append(i)
    out = reference.expand(len(patches), -1, -1).clone()
    per_chunk = max(1, max_rows // n)
    for (kind, layer), members in groups.items():
        query_only = kind == "leave" and layer == last
        if kind == "enter":
            name = residual_entering(layer, cfg.n_layers)
            base, start = corrupt[name], layer
        else:
            base = leaving(layer, torch.zeros_like(corrupt[hook_name("resid_pre", layer)][:, -1:] if query_only
                                                   else corrupt[hook_name("resid_pre", layer)]), query_only)
            start = layer + 1
        null = logits_from(base, start)
        for first in range(0, len(members), per_chunk):
            chunk = members[first:first + per_chunk]
            if kind == "enter":
                streams = []
                for i in chunk:
                    stream = base.clone()
                    index = (slice(None), *patches[i].index())
                    stream[index] = clean[name][index]
                    streams.append(stream)
                stream = torch.cat(streams)
            else:
                rows = slice(-1, None) if query_only else slice(None)
                changes = []
                for i in chunk:
                    patch = patches[i]
                    attn = network.blocks[layer].attn
                    z_new = _head_z(patch, corrupt, clean, attn, rows)
                    z_old = corrupt[hook_name("z", layer)][:, rows, patch.head]
                    changes.append((z_new - z_old) @ attn.W_O[patch.head])
                stream = leaving(layer, torch.cat(changes), query_only)
            got = logits_from(stream, start).view(len(chunk), n, -1)
            out[chunk] = got - null + reference
    return out
