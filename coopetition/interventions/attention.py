"""Interventions that remove or restrict what a head can do (REFERENCE.md 5.2): value ablation, clean-pass
preservation, embedding ablation, per-head temperature, barring previous-token attention, and silencing the query's
attention to non-label tokens.

Score edits act on ``hook_attn_scores`` (TransformerLens's pre-softmax logits, after the causal mask), so a barred
key gets ``-inf`` and the softmax renormalises over what is left; pattern edits act on ``hook_pattern``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from coopetition.errors import ConfigError
from coopetition.interventions.base import (HeadRef, HeadsAndNumberIntervention, HeadsIntervention, Hook, Inputs,
                                            Intervention, check_heads, expect_args,
                                            heads_by_layer, split_heads)
from coopetition.model.config import ModelConfig

PRESERVABLE = ("patterns", "queries", "keys", "values")


def head_mask(heads: list[int], n_heads: int, device: torch.device) -> Tensor:
    mask = torch.zeros(n_heads, dtype=torch.bool, device=device)
    mask[heads] = True
    return mask


def mask_scores(heads: tuple[HeadRef, ...], model: ModelConfig, keys_barred) -> list[Hook]:
    """Hooks setting ``scores[:, head, q, k]`` to -inf wherever ``keys_barred(n_pos, device)`` ([q, k] bool) is
    True, for the listed heads."""
    hooks = []
    for layer, layer_heads in heads_by_layer(heads, model.n_heads).items():
        def fn(scores: Tensor, hook, layer_heads=layer_heads) -> Tensor:
            barred = keys_barred(scores.shape[-1], scores.device)
            mask = head_mask(layer_heads, scores.shape[1], scores.device)[:, None, None] & barred
            return scores.masked_fill(mask, float("-inf"))
        hooks.append((f"blocks.{layer}.attn.hook_attn_scores", fn))
    return hooks


def label_rows(n_pos: int, device: torch.device) -> Tensor:
    rows = torch.zeros(n_pos, dtype=torch.bool, device=device)
    rows[1::2] = True  # label tokens sit at odd positions
    return rows


@dataclass(frozen=True)
class Ablate(HeadsIntervention):
    """Zero the listed heads' value vectors at every position, so each writes exactly nothing (C25's ablation)."""

    name: ClassVar[str] = "ablate"
    usage: ClassVar[str] = "ablate:LAYER:HEAD[,LAYER:HEAD...]  (HEAD may be *)"
    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        hooks = []
        for layer, layer_heads in heads_by_layer(self.heads, model.n_heads).items():
            def fn(v: Tensor, hook, layer_heads=layer_heads) -> Tensor:  # v: [batch, pos, head, d_head]
                return v.masked_fill(head_mask(layer_heads, v.shape[2], v.device)[:, None], 0.0)
            hooks.append((f"blocks.{layer}.attn.hook_v", fn))
        return hooks


@dataclass(frozen=True)
class Preserve(Intervention):
    """Clamp patterns / queries / keys / values (post-RoPE for Q and K) to their clean-pass values, in every layer
    or the listed ones: pattern-preserving ablation keeps downstream attention as if nothing upstream changed.
    Preserved tensors come from a no-grad pass, so no gradient flows through them."""

    name: ClassVar[str] = "preserve"
    usage: ClassVar[str] = "preserve:WHAT[+WHAT...][:LAYER[,LAYER...]]  (WHAT: patterns, queries, keys, values)"
    phase: ClassVar[int] = 0
    what: tuple[str, ...]
    layers: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, args: str) -> "Preserve":
        fields = args.split(":") if args else []
        if not fields or not fields[0]:
            raise ConfigError("name what to preserve")
        what = tuple(fields[0].split("+"))
        for item in what:
            if item not in PRESERVABLE:
                raise ConfigError(f"cannot preserve {item!r}; choose from {', '.join(PRESERVABLE)}")
        expect_args(fields[1:], 1, "an optional layer list")
        layers = None
        if len(fields) == 2:
            try:
                layers = tuple(int(x) for x in fields[1].split(","))
            except ValueError:
                raise ConfigError(f"layers must be integers, got {fields[1]!r}") from None
        return cls(what, layers)

    def validate(self, model: ModelConfig) -> None:
        for layer in self.layers or ():
            if not 0 <= layer < model.n_layers:
                raise ConfigError(f"layer {layer} does not exist (the model has layers 0-{model.n_layers - 1})")

    def _names(self, model: ModelConfig) -> list[str]:
        rotary = model.positional == "rotary"
        suffix = {"patterns": "hook_pattern", "queries": "hook_rot_q" if rotary else "hook_q",
                  "keys": "hook_rot_k" if rotary else "hook_k", "values": "hook_v"}
        layers = self.layers if self.layers is not None else range(model.n_layers)
        return [f"blocks.{layer}.attn.{suffix[w]}" for layer in layers for w in self.what]

    def clean_names(self, model: ModelConfig) -> list[str]:
        return self._names(model)

    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        return [(name, lambda x, hook, name=name: inputs.clean[name]) for name in self._names(model)]


@dataclass(frozen=True)
class AblateEmbedding(Intervention):
    """Zero the token embeddings (exemplars and labels); positions are kept. With ``preserve`` this removes the
    direct embedding -> unembedding path."""

    name: ClassVar[str] = "ablate_embed"
    usage: ClassVar[str] = "ablate_embed"

    @classmethod
    def parse(cls, args: str) -> "AblateEmbedding":
        if args:
            raise ConfigError(f"takes no arguments, got {args!r}")
        return cls()

    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        return [("hook_embed", lambda x, hook: torch.zeros_like(x))]


@dataclass(frozen=True)
class Temperature(HeadsAndNumberIntervention):
    """Divide the listed heads' attention logits by ``temperature`` (> 0) before the softmax. Applied to the
    logits of the pass itself (the reference used the clean pass's; they agree unless something upstream changed),
    so gradients still flow through the head's queries and keys."""

    name: ClassVar[str] = "temperature"
    usage: ClassVar[str] = "temperature:LAYER:HEAD[,LAYER:HEAD...]:T  (T > 0)"
    number_name: ClassVar[str] = "temperature"
    number_bounds: ClassVar[tuple[float, float, bool]] = (0.0, 1e6, True)
    temperature: float

    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        hooks = []
        for layer, layer_heads in heads_by_layer(self.heads, model.n_heads).items():
            def fn(scores: Tensor, hook, layer_heads=layer_heads) -> Tensor:
                scale = torch.ones(scores.shape[1], device=scores.device, dtype=scores.dtype)
                scale[layer_heads] = 1.0 / self.temperature
                return scores * scale[:, None, None]
            hooks.append((f"blocks.{layer}.attn.hook_attn_scores", fn))
        return hooks


@dataclass(frozen=True)
class NoPrevToken(Intervention):
    """Bar the listed heads from attending from token t to t-1 (only from label tokens with ``:labels``), so they
    cannot become previous-token heads (C25's ``disallow_pt_head_attn_on_labels`` is ``no_prev_token:0:*:labels``)."""

    name: ClassVar[str] = "no_prev_token"
    usage: ClassVar[str] = "no_prev_token:LAYER:HEAD[,LAYER:HEAD...][:labels]"
    heads: tuple[HeadRef, ...]
    labels_only: bool = False

    @classmethod
    def parse(cls, args: str) -> "NoPrevToken":
        heads, rest = split_heads(args)
        expect_args(rest, 1, "an optional ':labels'")
        if rest and rest[0] != "labels":
            raise ConfigError(f"the optional last field must be 'labels', got {rest[0]!r}")
        return cls(heads, bool(rest))

    def validate(self, model: ModelConfig) -> None:
        check_heads(self.heads, model)

    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        def barred(n_pos: int, device: torch.device) -> Tensor:
            prev = torch.diag(torch.ones(n_pos - 1, dtype=torch.bool, device=device), diagonal=-1)
            return prev & label_rows(n_pos, device)[:, None] if self.labels_only else prev
        return mask_scores(self.heads, model, barred)


@dataclass(frozen=True)
class Silence(HeadsIntervention):
    """The listed heads may attend from the query only to label tokens (not to exemplars or itself): the
    reference's ``final_layer_silence_non_label_attn``, here for heads of any layer."""

    name: ClassVar[str] = "silence"
    usage: ClassVar[str] = "silence:LAYER:HEAD[,LAYER:HEAD...]"
    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        def barred(n_pos: int, device: torch.device) -> Tensor:
            mask = torch.zeros(n_pos, n_pos, dtype=torch.bool, device=device)
            mask[-1] = ~label_rows(n_pos, device)
            return mask
        return mask_scores(self.heads, model, barred)
