"""Interventions that remove, restore or restrict what a head computes (REFERENCE.md 5.2): head ablation (zero, mean,
resample), clean-pass preservation, activation patching from a source pass, embedding ablation, per-head
temperature, barring previous-token attention, and silencing the query's attention to non-label tokens.

Score edits act on ``hook_attn_scores`` (TransformerLens's pre-softmax logits, after the causal mask), so a barred
key gets ``-inf`` and the softmax renormalises over what is left; pattern edits act on ``hook_pattern``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from coopetition.errors import ConfigError
from coopetition.interventions.base import (HeadRef, HeadsAndNumberIntervention, HeadsIntervention, Hook, Inputs,
                                            Intervention, check_heads, expect_args, format_heads, heads_by_layer,
                                            parse_int, split_heads)
from coopetition.model.config import ModelConfig
from coopetition.model.sites import hook_name, residual_entering

if TYPE_CHECKING:
    import torch
    from torch import Tensor

PRESERVABLE = ("patterns", "queries", "keys", "values")
ABLATIONS = ("zero", "mean", "resample")


def head_mask(heads: list[int], n_heads: int, device: torch.device) -> Tensor:
    import torch
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
        hooks.append((hook_name("attn_scores", layer), fn))
    return hooks


def label_rows(n_pos: int, device: torch.device) -> Tensor:
    import torch
    rows = torch.zeros(n_pos, dtype=torch.bool, device=device)
    rows[1::2] = True  # label tokens sit at odd positions
    return rows


@dataclass(frozen=True)
class Ablate(Intervention):
    """Replace the listed heads' outputs (``hook_z``, every position) by zero (C25's ablation: the head writes
    nothing; the reference zeroes the values, the same thing since attention biases are 0), by their mean over the
    batch's clean pass (per position), or by the clean output on another sequence of the batch (``resample``: the
    next one, cyclically)."""

    name: ClassVar[str] = "ablate"
    usage: ClassVar[str] = "ablate:LAYER:HEAD[,LAYER:HEAD...][:zero|mean|resample]  (HEAD may be *)"
    summary: ClassVar[str] = "heads write nothing (zero), or their mean / another sequence's output"
    heads: tuple[HeadRef, ...]
    method: str = "zero"

    @classmethod
    def parse(cls, args: str) -> "Ablate":
        heads, rest = split_heads(args)
        expect_args(rest, 1, "an optional method (zero, mean, resample)")
        method = rest[0] if rest else "zero"
        if method not in ABLATIONS:
            raise ConfigError(f"ablation method must be one of {', '.join(ABLATIONS)}, got {method!r}")
        return cls(heads, method)

    def format_args(self) -> str:
        return format_heads(self.heads) + ("" if self.method == "zero" else f":{self.method}")

    def validate(self, model: ModelConfig) -> None:
        check_heads(self.heads, model)
        if self.method not in ABLATIONS:
            raise ConfigError(f"ablation method must be one of {', '.join(ABLATIONS)}, got {self.method!r}")

    def clean_names(self, model: ModelConfig) -> list[str]:
        if self.method == "zero":
            return []
        return [hook_name("z", layer) for layer in heads_by_layer(self.heads, model.n_heads)]

    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        import torch
        hooks = []
        for layer, layer_heads in heads_by_layer(self.heads, model.n_heads).items():
            name = hook_name("z", layer)
            if self.method == "zero":
                source = None
            else:
                clean = inputs.need("clean", name, self.spec)
                source = clean.mean(0, keepdim=True) if self.method == "mean" else clean.roll(1, dims=0)

            def fn(z: Tensor, hook, layer_heads=layer_heads, source=source) -> Tensor:  # z: [batch, pos, head, d]
                mask = head_mask(layer_heads, z.shape[2], z.device)[:, None]
                if source is None:
                    return z.masked_fill(mask, 0.0)
                return torch.where(mask, source.to(z.dtype), z)
            hooks.append((name, fn))
        return hooks


@dataclass(frozen=True)
class Preserve(Intervention):
    """Clamp patterns / queries / keys / values (post-RoPE for Q and K) to their clean-pass values, in every layer
    or the listed ones: pattern-preserving ablation keeps downstream attention as if nothing upstream changed.
    Preserved tensors come from a no-grad pass, so no gradient flows through them."""

    name: ClassVar[str] = "preserve"
    usage: ClassVar[str] = "preserve:WHAT[+WHAT...][:LAYER[,LAYER...]]  (WHAT: patterns, queries, keys, values)"
    summary: ClassVar[str] = "clamp patterns/queries/keys/values to the clean pass (pattern-preserving ablation)"
    phase: ClassVar[int] = 0
    restores_clean: ClassVar[bool] = True
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
        layers = tuple(parse_int(x, "a layer") for x in fields[1].split(",")) if len(fields) == 2 else None
        return cls(what, layers)

    def format_args(self) -> str:
        return "+".join(self.what) + ("" if self.layers is None else ":" + ",".join(map(str, self.layers)))

    def validate(self, model: ModelConfig) -> None:
        for item in self.what:
            if item not in PRESERVABLE:
                raise ConfigError(f"cannot preserve {item!r}; choose from {', '.join(PRESERVABLE)}")
        for layer in self.layers or ():
            if not 0 <= layer < model.n_layers:
                raise ConfigError(f"layer {layer} does not exist (the model has layers 0-{model.n_layers - 1})")

    def _names(self, model: ModelConfig) -> list[str]:
        rotary = model.positional == "rotary"
        kind = {"patterns": "pattern", "queries": "rot_q" if rotary else "q", "keys": "rot_k" if rotary else "k",
                "values": "v"}
        layers = self.layers if self.layers is not None else range(model.n_layers)
        return [hook_name(kind[w], layer) for layer in layers for w in self.what]

    def clean_names(self, model: ModelConfig) -> list[str]:
        return self._names(model)

    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        return [(name, lambda x, hook, value=inputs.need("clean", name, self.spec): value.to(x.dtype))
                for name in self._names(model)]


PATCHABLE = ("resid", "z", "q", "k", "v", "pattern")


@dataclass(frozen=True)
class Patch(Intervention):
    """Activation patching: one site of this pass takes its value from a *source* pass on another input (the clean
    member of a clean/corrupted pair), everything else runs on this input. Sites: ``resid`` (the residual stream
    entering block LAYER; LAYER = n_layers is after the last block), or a head's ``z`` (output), ``q``, ``k``,
    ``v`` or ``pattern``; ``@POS`` restricts it to one token position (the query row, for ``pattern``).
    Analysis only: training has no second input."""

    name: ClassVar[str] = "patch"
    usage: ClassVar[str] = "patch:resid:LAYER[@POS] | patch:z|q|k|v|pattern:LAYER:HEAD[@POS]  (analysis only)"
    summary: ClassVar[str] = "take one site's activation from a source pass on another input"
    training: ClassVar[bool] = False
    component: str
    layer: int
    head: int | None = None
    position: int | None = None

    @classmethod
    def parse(cls, args: str) -> "Patch":
        body, at, pos = args.partition("@")
        fields = body.split(":")
        if fields[0] not in PATCHABLE:
            raise ConfigError(f"patch site must be one of {', '.join(PATCHABLE)}, got {fields[0]!r}")
        want = 2 if fields[0] == "resid" else 3
        if len(fields) != want:
            raise ConfigError(f"expected {'resid:LAYER' if want == 2 else fields[0] + ':LAYER:HEAD'}, got {body!r}")
        layer = parse_int(fields[1], "the layer")
        head = parse_int(fields[2], "the head") if want == 3 else None
        position = parse_int(pos, "the position") if at else None
        return cls(fields[0], layer, head, position)

    def format_args(self) -> str:
        head = "" if self.head is None else f":{self.head}"
        return f"{self.component}:{self.layer}{head}" + ("" if self.position is None else f"@{self.position}")

    def validate(self, model: ModelConfig) -> None:
        top = model.n_layers if self.component == "resid" else model.n_layers - 1
        if not 0 <= self.layer <= top:
            raise ConfigError(f"layer {self.layer} must be in [0, {top}] for {self.component}")
        if self.head is not None and not 0 <= self.head < model.n_heads:
            raise ConfigError(f"head {self.head} does not exist (heads 0-{model.n_heads - 1})")
        if self.position is not None and not 0 <= self.position < model.max_seq_len:
            raise ConfigError(f"position {self.position} must be in [0, {model.max_seq_len - 1}]")

    def hook_name(self, model: ModelConfig) -> str:
        if self.component == "resid":
            return residual_entering(self.layer, model.n_layers)
        return hook_name(self.component, self.layer)

    def index(self) -> tuple:
        """Where in the activation, after the batch dimension: resid [pos, d]; z/q/k/v [pos, head, d]; pattern
        [head, query pos, key pos]."""
        pos = slice(None) if self.position is None else self.position
        if self.component == "resid":
            return (pos,)
        if self.component == "pattern":
            return (self.head, pos)
        return (pos, self.head)

    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        name = self.hook_name(model)
        source, index = inputs.need("source", name, self.spec), (slice(None), *self.index())

        def fn(act: Tensor, hook) -> Tensor:
            out = act.clone()
            out[index] = source[index].to(act.dtype)
            return out
        return [(name, fn)]


@dataclass(frozen=True)
class AblateEmbedding(Intervention):
    """Zero the token embeddings (exemplars and labels); positions are kept. With ``preserve`` this removes the
    direct embedding -> unembedding path."""

    name: ClassVar[str] = "ablate_embed"
    usage: ClassVar[str] = "ablate_embed"
    summary: ClassVar[str] = "zero the token embeddings (positions kept)"

    @classmethod
    def parse(cls, args: str) -> "AblateEmbedding":
        if args:
            raise ConfigError(f"takes no arguments, got {args!r}")
        return cls()

    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        import torch
        return [(hook_name("embed"), lambda x, hook: torch.zeros_like(x))]


@dataclass(frozen=True)
class Temperature(HeadsAndNumberIntervention):
    """Divide the listed heads' attention logits by ``temperature`` (> 0) before the softmax. Applied to the
    logits of the pass itself (the reference used the clean pass's; they agree unless something upstream changed),
    so gradients still flow through the head's queries and keys."""

    name: ClassVar[str] = "temperature"
    usage: ClassVar[str] = "temperature:LAYER:HEAD[,LAYER:HEAD...]:T  (T > 0)"
    summary: ClassVar[str] = "divide the heads' attention logits by T"
    number_name: ClassVar[str] = "temperature"
    number_bounds: ClassVar[tuple[float, float, bool]] = (0.0, 1e6, True)
    temperature: float

    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        import torch
        hooks = []
        for layer, layer_heads in heads_by_layer(self.heads, model.n_heads).items():
            def fn(scores: Tensor, hook, layer_heads=layer_heads) -> Tensor:
                scale = torch.ones(scores.shape[1], device=scores.device, dtype=scores.dtype)
                scale[layer_heads] = 1.0 / self.temperature
                return scores * scale[:, None, None]
            hooks.append((hook_name("attn_scores", layer), fn))
        return hooks


@dataclass(frozen=True)
class NoPrevToken(Intervention):
    """Bar the listed heads from attending from token t to t-1 (only from label tokens with ``:labels``), so they
    cannot become previous-token heads (C25's ``disallow_pt_head_attn_on_labels`` is ``no_prev_token:0:*:labels``)."""

    name: ClassVar[str] = "no_prev_token"
    usage: ClassVar[str] = "no_prev_token:LAYER:HEAD[,LAYER:HEAD...][:labels]"
    summary: ClassVar[str] = "bar attention from t to t-1 (from label tokens only with :labels)"
    heads: tuple[HeadRef, ...]
    labels_only: bool = False

    @classmethod
    def parse(cls, args: str) -> "NoPrevToken":
        heads, rest = split_heads(args)
        expect_args(rest, 1, "an optional ':labels'")
        if rest and rest[0] != "labels":
            raise ConfigError(f"the optional last field must be 'labels', got {rest[0]!r}")
        return cls(heads, bool(rest))

    def format_args(self) -> str:
        return format_heads(self.heads) + (":labels" if self.labels_only else "")

    def validate(self, model: ModelConfig) -> None:
        check_heads(self.heads, model)

    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        import torch
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
    summary: ClassVar[str] = "the heads may attend from the query to label tokens only"

    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        import torch
        def barred(n_pos: int, device: torch.device) -> Tensor:
            mask = torch.zeros(n_pos, n_pos, dtype=torch.bool, device=device)
            mask[-1] = ~label_rows(n_pos, device)
            return mask
        return mask_scores(self.heads, model, barred)
