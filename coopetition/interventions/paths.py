"""Path patching: one edge of the computational graph carries the clean run, every other path stays corrupted.

Nodes are the three embeddings (``exemplar``, ``label``, ``position``), every head (``L1H3``) and the query
``logits``. The residual stream entering a head is the sum of what every earlier node wrote, so the edge
sender -> receiver is patched by residual-stream decomposition: the receiver's Q, K or V input (TransformerLens's
``blocks.{l}.hook_q_input`` ..., one copy per head, before LayerNorm) becomes the corrupted input plus
(clean - corrupted) output of the sender. For ``logits`` the difference is added to the final residual stream (only
the query position is read). The receiver's own output then flows on as usual, so its downstream effect counts.

``PathPatch`` is analysis-only and unregistered (no spec string): its hook points exist only while the model's
``per_head_hooks()`` is on, which the ``circuit`` analysis turns on around its passes. In ``run_variants`` terms the
pass being patched is the corrupted one (``inputs.clean``, the baseline) and the sender's clean output comes from
``inputs.source``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from coopetition.interventions.base import Hook, Inputs, Intervention
from coopetition.model.config import ModelConfig
from coopetition.model.sites import hook_name

if TYPE_CHECKING:
    from jaxtyping import Float
    from torch import Tensor

EMBEDDINGS = ("exemplar", "label", "position")
INPUTS = ("q", "k", "v")
LOGITS = "logits"
DIRECT = "direct"
_HEAD = re.compile(r"^L(\d+)H(\d+)$")


def head_node(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def parse_head(node: str) -> tuple[int, int] | None:
    """``"L1H3"`` -> ``(1, 3)``; None for an embedding or ``logits``."""
    match = _HEAD.match(node)
    return (int(match.group(1)), int(match.group(2))) if match else None


def sender_names(model: ModelConfig) -> list[str]:
    """Hook names a cache needs for ``sender_output`` of every node (with ``per_head_hooks`` on)."""
    names = [hook_name("embed")] + ([hook_name("pos_embed")] if model.positional != "rotary" else [])
    return names + [hook_name("result", l) for l in range(model.n_layers)]


def sender_output(cache: Mapping[str, Tensor], sender: str) -> Float[Tensor, "batch pos d_model"]:
    """What ``sender`` writes into the residual stream at every position. Exemplars sit at even positions and
    labels at odd ones of ``hook_embed`` (the interleaved token embeddings), so each is the other zeroed."""
    head = parse_head(sender)
    if head is not None:
        return cache[hook_name("result", head[0])][:, :, head[1]]
    if sender == "position":
        return cache[hook_name("pos_embed")]
    embed = cache[hook_name("embed")]
    keep = (embed.new_ones(embed.shape[1]).cumsum(0) - 1) % 2 == (0 if sender == "exemplar" else 1)
    return embed * keep[None, :, None]


def receiver_hook(receiver: str, input: str, model: ModelConfig) -> tuple[str, tuple]:
    """(hook name, index after the batch dimension) where an edge into ``receiver`` through ``input`` lands."""
    if receiver == LOGITS:
        return hook_name("resid_post", model.n_layers - 1), ()
    layer, head = parse_head(receiver)
    return hook_name(f"{input}_input", layer), (slice(None), head)


@dataclass(frozen=True)
class PathPatch(Intervention):
    """The edge ``sender`` -> ``receiver`` through ``input`` (q, k, v; ``direct`` into ``logits``) takes its clean
    value (see the module docstring)."""

    training: ClassVar[bool] = False
    sender: str
    receiver: str
    input: str

    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        name, index = receiver_hook(self.receiver, self.input, model)
        if inputs.source is None or inputs.clean is None:
            raise ValueError("path patching needs the corrupted (baseline) and clean (source) caches")
        delta = sender_output(inputs.source, self.sender) - sender_output(inputs.clean, self.sender)

        def fn(act: Tensor, hook) -> Tensor:
            out = act.clone()
            out[(slice(None), *index)] += delta.to(act.dtype)
            return out
        return [(name, fn)]


# --- every edge at once: the exact path-patched logits without the per-head passes ----------------------------------
#
# ``PathPatch`` through ``Intervened.run_variants`` reruns the network from the receiver's block with every head's
# Q/K/V input split (``per_head_hooks``) for each edge, although the edge changes one head's input only: the other
# heads of that block compute exactly what they computed on the corrupted run. ``patched_logits`` computes the same
# function of the same caches directly: the receiver head alone, on its patched input, for every sender at once, its
# output's change added to the corrupted residual stream after the receiver's block, then the later blocks as one
# ordinary pass (their heads read the summed stream, as without ``per_head_hooks``); in the last block, only the
# query row, which is all the logits read. Equal in real arithmetic; in floats the sums run in another order, so
# each edge's logits are taken relative to the same computation without the edit (``null``): an edge whose sender
# writes the same on both runs comes out exactly the corrupted logits, as on the slow path.


def _head_result(block, head: int, q_in: Tensor, k_in: Tensor, v_in: Tensor, query_only: bool) -> Tensor:
    """What head ``head`` of ``block`` writes ``[rows, pos or 1, d_model]`` from its (already LayerNormed) query,
    key and value inputs ``[rows, pos, d_model]``: ``components.Attention``'s arithmetic for one head, on the query
    row alone with ``query_only`` (the row the logits read)."""
    import torch
    import torch.nn.functional as F

    attn = block.attn
    q, k, v = (x @ w[head] + b[head] for x, w, b in ((q_in, attn.W_Q, attn.b_Q), (k_in, attn.W_K, attn.b_K),
                                                     (v_in, attn.W_V, attn.b_V)))
    if attn.cfg.positional_embedding_type == "rotary":  # rotate works on [batch, pos, head, d_head]
        q, k = (attn.rotate(x[:, :, None])[:, :, 0] for x in (q, k))
    if query_only:
        q = q[:, -1:]
    n = k.shape[1]
    scores = q @ k.transpose(-1, -2) / attn.attn_scale
    scores = torch.where(attn.mask[-n:, -n:][-q.shape[1]:], scores, attn.IGNORE)
    pattern = F.softmax(scores, dim=-1)
    pattern = torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern)
    return (pattern @ v) @ attn.W_O[head]


def finish_block(block, resid_mid: Tensor) -> Tensor:
    """The rest of a block after its attention: the MLP where there is one."""
    if block.cfg.attn_only:
        return resid_mid
    return resid_mid + block.mlp(block.ln2(resid_mid))


def patched_logits(network, edges: list[PathPatch], corrupt: Mapping[str, Tensor], clean: Mapping[str, Tensor],
                   labels: Tensor, reference: Tensor, max_rows: int = 2048) -> Tensor:
    """Query logits ``[len(edges), n, k]`` (of ``labels`` ``[n, k]``) of the corrupted run with each edge patched
    alone: what ``Intervened(network).run_variants`` gives for ``[(edge,) for edge in edges]`` with ``baseline =
    corrupt`` and ``source = clean`` (see the comment above; ``tests/test_analysis_circuit.py`` holds the two
    equal). ``reference``: the corrupted run's logits of ``labels`` ``[n, k]``. Only for a network without hook
    interventions (grafts are part of ``network``). ``corrupt`` and ``clean``: caches of ``circuit.cache_names``
    made with ``per_head_hooks`` on; call this with it off."""
    import torch

    cfg = network.model_config
    last = cfg.n_layers - 1
    n = labels.shape[0]
    deltas = {s: sender_output(clean, s) - sender_output(corrupt, s) for s in dict.fromkeys(e.sender for e in edges)}

    def logits_from(layer: int, resid: Tensor) -> Tensor:
        """Logits from streams ``[g * n, pos, d]`` leaving block ``layer`` (the query row alone after the last)."""
        return network.unembed_query(network.run_blocks(resid, layer + 1), labels.repeat(resid.shape[0] // n, 1))

    def leaving(layer: int, change: Tensor | None, query_only: bool, g: int = 1) -> Tensor:
        """The corrupted stream leaving block ``layer`` with ``change`` (``[g * n, ...]``) added to its attention
        output (None: the direct edges' stream, the corrupted final residual itself)."""
        if change is None or cfg.attn_only:
            base = corrupt[hook_name("resid_pre", layer + 1) if layer < last else hook_name("resid_post", last)]
            base = (base[:, -1:] if query_only else base).repeat(g, 1, 1)
            return base if change is None else base + change
        mid = corrupt[hook_name("resid_mid", layer)]
        return finish_block(network.blocks[layer], (mid[:, -1:] if query_only else mid).repeat(g, 1, 1) + change)

    out = reference.expand(len(edges), -1, -1).clone()
    nulls: dict[tuple, Tensor] = {}
    per_chunk = max(1, max_rows // n)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, edge in enumerate(edges):
        if deltas[edge.sender].any():  # a sender that writes the same on both runs changes nothing: the reference
            groups.setdefault((edge.receiver, edge.input), []).append(i)
    for (receiver, input), members in groups.items():
        direct = receiver == LOGITS
        layer, head = (last, None) if direct else parse_head(receiver)
        query_only = layer == last
        key = (layer, direct)
        if key not in nulls:  # the same computation without the edit, the zero every edge's change is read against
            zero = None if direct else torch.zeros_like(leaving(layer, None, query_only))
            nulls[key] = logits_from(layer, leaving(layer, zero, query_only))
        if not direct:
            block = network.blocks[layer]
            resid_pre = corrupt[hook_name("resid_pre", layer)]
            normalized = block.ln1(resid_pre)
            own = _head_result(block, head, normalized, normalized, normalized, query_only)
        for first in range(0, len(members), per_chunk):
            chunk = members[first:first + per_chunk]
            g = len(chunk)
            if direct:
                resid = leaving(layer, None, True, g) + torch.cat([deltas[edges[i].sender][:, -1:] for i in chunk])
            else:
                patched = block.ln1(torch.cat([resid_pre + deltas[edges[i].sender] for i in chunk]))
                plain = normalized.repeat(g, 1, 1)
                change = _head_result(block, head, *[patched if x == input else plain for x in INPUTS], query_only)
                resid = leaving(layer, change - own.repeat(g, 1, 1), query_only, g)
            got = logits_from(layer, resid).view(g, n, -1)
            out[chunk] = got - nulls[key] + reference
    return out
