"""What an intervention is, the spec-string grammar they share, and the registry that maps names to classes.

An intervention is a small frozen dataclass. Defining a subclass with a ``name`` registers it: ``parse_spec`` then
understands ``NAME[:ARGS]`` strings for it. The contract, used identically by training and evaluation:

- ``parse(args)`` builds it from the text after ``NAME:``; ``validate(model)`` checks it against the architecture
  (no I/O), both raising a one-line ``ConfigError``.
- ``clean_names(model)``: hook names it needs from a clean (un-manipulated, no-grad) pass on the same input.
- ``hooks(inputs, model)``: ``(hook_name, fn)`` pairs installed for one forward pass.
- ``edit_logits(logits, inputs)``: a last edit of the query logits (only ``copy`` uses it).

Grafts are the other kind (``coopetition.interventions.graft``): they change which weights run, not activations.
Layers and heads are 0-indexed as in TransformerLens (the paper's "layer 2" is layer 1 here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from jaxtyping import Float, Int
from torch import Tensor

from coopetition.errors import ConfigError
from coopetition.model.config import ModelConfig

Hook = tuple[str, Callable[..., Any]]
HeadRef = tuple[int, int | None]  # (layer, head); head None = every head of the layer

_HEAD = r"\d+:(?:\d+|\*)"
_HEADS = re.compile(rf"^(?P<heads>{_HEAD}(?:,{_HEAD})*)(?::(?P<rest>.*))?$")


@dataclass
class Inputs:
    """One forward pass's inputs, the clean pass's activations (or None) and scratch space shared between an
    intervention's hooks and its ``edit_logits`` (fresh for every pass)."""

    exemplars: Float[Tensor, "batch item dim"]
    context_labels: Int[Tensor, "batch ctx"]
    target: Int[Tensor, " batch"] | None = None
    clean: Any = None  # ActivationCache of the clean pass
    scratch: dict[str, Tensor] = field(default_factory=dict)

    @property
    def n_pos(self) -> int:
        return 2 * self.context_labels.shape[1] + 1

    def need_target(self, spec: str) -> Int[Tensor, " batch"]:
        if self.target is None:
            raise ConfigError(f"intervention {spec!r} needs the target label of every sequence")
        return self.target


REGISTRY: dict[str, type["Intervention"]] = {}


@dataclass(frozen=True)
class Intervention:
    """Base class of activation interventions (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    # Interventions of phase 0 restore clean-pass values and run first on a hook point; every other edit
    # (phase 1, in spec order) sees their output, so ``ablate`` + ``preserve:values`` still ablates.
    phase: ClassVar[int] = 1
    usage: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            REGISTRY[cls.name] = cls

    @classmethod
    def parse(cls, args: str) -> "Intervention":
        raise NotImplementedError

    def validate(self, model: ModelConfig) -> None:
        pass

    def clean_names(self, model: ModelConfig) -> list[str]:
        return []

    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        return []

    def edit_logits(self, logits: Float[Tensor, "batch classes"], inputs: Inputs) -> Float[Tensor, "batch classes"]:
        return logits


def parse_spec(spec: str) -> Intervention:
    """``"induction:1:3:0.8"`` -> ``Induction(heads=((1, 3),), strength=0.8)``; any mistake is one ConfigError."""
    name, _, args = spec.strip().partition(":")
    if name not in REGISTRY:
        raise ConfigError(f"unknown intervention {name!r} in {spec!r}; choose from {', '.join(sorted(REGISTRY))}")
    cls = REGISTRY[name]
    try:
        return cls.parse(args)
    except ConfigError as err:
        raise ConfigError(f"intervention {spec!r}: {err} (usage: {cls.usage})") from None


def validate_specs(specs: tuple[str, ...], model: ModelConfig) -> list[Intervention]:
    """Parse and check every spec against the architecture (no checkpoint is read here)."""
    parsed = []
    for spec in specs:
        intervention = parse_spec(spec)
        try:
            intervention.validate(model)
        except ConfigError as err:
            raise ConfigError(f"intervention {spec!r}: {err}") from None
        parsed.append(intervention)
    return parsed


# --- the shared grammar -------------------------------------------------------------------------------------------

def split_heads(args: str) -> tuple[tuple[HeadRef, ...], list[str]]:
    """``"1:3,0:*:0.8:labels"`` -> ``(((1, 3), (0, None)), ["0.8", "labels"])``."""
    match = _HEADS.match(args)
    if not match:
        raise ConfigError(f"expected heads as LAYER:HEAD[,LAYER:HEAD...] (HEAD may be *), got {args!r}")
    heads = []
    for item in match["heads"].split(","):
        layer, head = item.split(":")
        heads.append((int(layer), None if head == "*" else int(head)))
    rest = match["rest"]
    return tuple(heads), ([] if rest is None else rest.split(":"))


def format_heads(heads: tuple[HeadRef, ...]) -> str:
    return ",".join(f"{layer}:{'*' if head is None else head}" for layer, head in heads)


def check_heads(heads: tuple[HeadRef, ...], model: ModelConfig) -> None:
    for layer, head in heads:
        if layer >= model.n_layers or (head is not None and head >= model.n_heads):
            raise ConfigError(f"head {format_heads(((layer, head),))} does not exist (the model has layers "
                              f"0-{model.n_layers - 1} and heads 0-{model.n_heads - 1})")


def heads_by_layer(heads: tuple[HeadRef, ...], n_heads: int) -> dict[int, list[int]]:
    """``{layer: sorted head indices}`` with ``*`` expanded."""
    out: dict[int, set[int]] = {}
    for layer, head in heads:
        out.setdefault(layer, set()).update(range(n_heads) if head is None else (head,))
    return {layer: sorted(hs) for layer, hs in sorted(out.items())}


def parse_number(text: str, what: str, lo: float, hi: float, lo_open: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{what} must be a number, got {text!r}") from None
    ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        bracket = "(" if lo_open else "["
        raise ConfigError(f"{what} must be in {bracket}{lo:g}, {hi:g}], got {text}")
    return value


def expect_args(rest: list[str], allowed: int, usage_hint: str) -> None:
    if len(rest) > allowed:
        raise ConfigError(f"unexpected extra field(s) {':'.join(rest[allowed:])!r}; expected {usage_hint}")


@dataclass(frozen=True)
class HeadsIntervention(Intervention):
    """A spec that is a head list and nothing else (``ablate``, ``silence``): shared parse and check."""

    heads: tuple[HeadRef, ...]

    @classmethod
    def parse(cls, args: str) -> "HeadsIntervention":
        heads, rest = split_heads(args)
        expect_args(rest, 0, "only heads")
        return cls(heads)

    def validate(self, model: ModelConfig) -> None:
        check_heads(self.heads, model)


@dataclass(frozen=True)
class HeadsAndNumberIntervention(Intervention):
    """A head list plus one bounded number (a strength or a temperature), declared by the subclass as its second
    field; ``number_name``/``number_bounds`` say what it is called and its range ``(lo, hi, lo_open)``."""

    number_name: ClassVar[str] = ""
    number_bounds: ClassVar[tuple[float, float, bool]] = (0.0, 1.0, False)
    heads: tuple[HeadRef, ...]

    @classmethod
    def parse(cls, args: str) -> "HeadsAndNumberIntervention":
        heads, rest = split_heads(args)
        if len(rest) != 1:
            raise ConfigError(f"expected one {cls.number_name} after the heads")
        lo, hi, lo_open = cls.number_bounds
        return cls(heads, parse_number(rest[0], cls.number_name, lo, hi, lo_open=lo_open))

    def validate(self, model: ModelConfig) -> None:
        check_heads(self.heads, model)
