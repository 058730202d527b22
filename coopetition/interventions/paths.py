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
