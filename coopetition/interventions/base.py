"""What an intervention is, the spec-string grammar they share, and the registry that maps names to classes.

An intervention is a small frozen dataclass, parsed once at the boundary (command line, config file) and then
passed around as an object: training, evaluation and analysis all take the same objects, so a name means the same
operation everywhere. Defining a subclass with a ``name`` registers it; ``parse_spec`` then understands
``NAME[:ARGS]`` strings for it and ``spec`` writes the object back (``parse_spec(x.spec) == x``). The contract:

- *where* and *what* (pyvene's split): ``hooks(inputs, model)`` returns ``(hook name, fn)`` pairs; the hook name is
  the where (a TransformerLens hook point: a layer's ``hook_z``, ``hook_pattern`` ...), ``fn`` is the what (zero,
  mean, resample, clamp to the clean pass or to a source pass, set a pattern ...). ``fn`` returns a new tensor rather
  than writing in place, so gradients flow in training.
- ``parse(args)`` builds it from the text after ``NAME:``; ``validate(model)`` checks it against the architecture
  (no I/O); both raise a one-line ``ConfigError``.
- ``clean_names(model)``: hook names it reads from the *clean* pass, the same input without this intervention (for
  a run's own interventions: without any hooks; for an analysis's variants: the analysed baseline).
- ``edit_logits(logits, inputs, labels)``: a last edit of the query logits (only ``copy`` uses it).
- ``restores_clean``: the hooks only put back clean values (``preserve``), a no-op until something upstream
  changed; batched analysis may then start such a variant later in the network.
- ``training``: False for interventions that need a second input (``patch``), which exist in analysis only.

Grafts (``coopetition.interventions.graft``) change which weights run rather than activations.
Layers and heads are 0-indexed as in TransformerLens (the paper's "layer 2" is layer 1 here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from coopetition.errors import ConfigError
from coopetition.model.config import ModelConfig
from coopetition.model.sites import hook_block  # noqa: F401  (re-exported: engine, graft)

if TYPE_CHECKING:
    from jaxtyping import Float, Int
    from torch import Tensor

Hook = tuple[str, Callable[..., Any]]
HeadRef = tuple[int, int | None]  # (layer, head); head None = every head of the layer

_HEAD = r"\d+:(?:\d+|\*)"
_HEADS = re.compile(rf"^(?P<heads>{_HEAD}(?:,{_HEAD})*)(?::(?P<rest>.*))?$")


@dataclass
class Inputs:
    """One forward pass's inputs and what its interventions read besides the activation they edit: the clean
    pass's activations, a source pass's (``patch``: the other member of a clean/corrupted pair), and scratch space
    shared between an intervention's hooks and its ``edit_logits`` (fresh for every pass)."""

    exemplars: Float[Tensor, "batch item dim"]
    context_labels: Int[Tensor, "batch ctx"]
    target: Int[Tensor, " batch"] | None = None
    clean: Any = None  # mapping hook name -> activation of the clean pass
    source: Any = None  # mapping hook name -> activation of a source pass
    scratch: dict[str, Tensor] = field(default_factory=dict)

    @property
    def n_pos(self) -> int:
        return 2 * self.context_labels.shape[1] + 1

    def need_target(self, spec: str) -> Int[Tensor, " batch"]:
        if self.target is None:
            raise ConfigError(f"intervention {spec!r} needs the target label of every sequence")
        return self.target

    def need(self, what: str, name: str, spec: str) -> Tensor:
        values = getattr(self, what)
        if values is None:
            raise ConfigError(f"intervention {spec!r} needs a {what} pass; it cannot run here")
        return values[name]


REGISTRY: dict[str, type["Intervention"]] = {}


@dataclass(frozen=True)
class Intervention:
    """Base class of activation interventions (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    # Interventions of phase 0 restore clean-pass values and run first on a hook point; every other edit
    # (phase 1, in spec order) sees their output, so ``ablate`` + ``preserve:values`` still ablates.
    phase: ClassVar[int] = 1
    usage: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for ``--help``
    restores_clean: ClassVar[bool] = False
    training: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            REGISTRY[cls.name] = cls

    @classmethod
    def parse(cls, args: str) -> "Intervention":
        raise NotImplementedError

    def format_args(self) -> str:
        """The text after ``NAME:`` that ``parse`` reads back into an equal object ("" for none)."""
        return ""

    @property
    def spec(self) -> str:
        args = self.format_args()
        return f"{self.name}:{args}" if args else self.name

    def __str__(self) -> str:
        return self.spec

    def validate(self, model: ModelConfig) -> None:
        pass

    def clean_names(self, model: ModelConfig) -> list[str]:
        return []

    def hooks(self, inputs: Inputs, model: ModelConfig) -> list[Hook]:
        return []

    def edit_logits(self, logits: Float[Tensor, "batch k"], inputs: Inputs,
                    labels: Int[Tensor, "batch k"] | None) -> Float[Tensor, "batch k"]:
        """``logits`` are the query logits of every class (``labels`` None) or of the classes ``labels`` names."""
        return logits


def parse_spec(spec: str) -> Intervention:
    """``"induction:1:3:0.8"`` -> ``Induction(heads=((1, 3),), strength=0.8)``; any mistake is one ConfigError."""
    if not isinstance(spec, str):
        raise ConfigError(f"an intervention spec must be a string, got {spec!r}")
    name, _, args = spec.strip().partition(":")
    if name not in REGISTRY:
        raise ConfigError(f"unknown intervention {name!r} in {spec!r}; choose from {', '.join(sorted(REGISTRY))}")
    cls = REGISTRY[name]
    try:
        return cls.parse(args)
    except ConfigError as err:
        raise ConfigError(f"intervention {spec!r}: {err} (usage: {cls.usage})") from None


def validated(interventions: tuple[Intervention | str, ...], model: ModelConfig,
              training: bool = False) -> tuple[Intervention, ...]:
    """Parse strings, then check every intervention against the architecture (no checkpoint is read here).
    ``training``: also refuse the analysis-only ones."""
    out = []
    for item in interventions:
        intervention = parse_spec(item) if isinstance(item, str) else item
        if not isinstance(intervention, Intervention):
            raise ConfigError(f"not an intervention: {item!r}")
        try:
            intervention.validate(model)
        except ConfigError as err:
            raise ConfigError(f"intervention {intervention.spec!r}: {err}") from None
        if training and not intervention.training:
            raise ConfigError(f"intervention {intervention.spec!r} needs a second input and exists in analysis only")
        out.append(intervention)
    return tuple(out)


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


def format_number(value: float) -> str:
    """Shortest text that parses back to the same float (``1`` for 1.0, ``0.8`` for 0.8)."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


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


def parse_int(text: str, what: str) -> int:
    if not re.fullmatch(r"-?\d+", text or ""):
        raise ConfigError(f"{what} must be an integer, got {text!r}")
    return int(text)


def expect_args(rest: list[str], allowed: int, usage_hint: str) -> None:
    if len(rest) > allowed:
        raise ConfigError(f"unexpected extra field(s) {':'.join(rest[allowed:])!r}; expected {usage_hint}")


@dataclass(frozen=True)
class HeadsIntervention(Intervention):
    """A spec that is a head list and nothing else (``silence``): shared parse, format and check."""

    heads: tuple[HeadRef, ...]

    @classmethod
    def parse(cls, args: str) -> "HeadsIntervention":
        heads, rest = split_heads(args)
        expect_args(rest, 0, "only heads")
        return cls(heads)

    def format_args(self) -> str:
        return format_heads(self.heads)

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

    def format_args(self) -> str:
        return f"{format_heads(self.heads)}:{format_number(getattr(self, self.number_name))}"

    def validate(self, model: ModelConfig) -> None:
        check_heads(self.heads, model)


@dataclass(frozen=True)
class CheckpointRef:
    """``RUN@STEP``: a run directory and one of its checkpoint steps (``last`` = the latest). Parsing only; the
    run is opened, under the rules for untrusted run directories, by ``coopetition.store.sources``."""

    run: str
    step: int | None

    @classmethod
    def parse(cls, text: str) -> "CheckpointRef":
        if not isinstance(text, str):
            raise ConfigError(f"expected a checkpoint as RUN@STEP, got {text!r}")
        run, sep, step = text.rpartition("@")
        if not sep or not run:
            raise ConfigError(f"expected a checkpoint as RUN@STEP (or RUN@last), got {text!r}")
        if step == "last":
            return cls(run, None)
        if not step.isdigit():
            raise ConfigError(f"checkpoint step must be an integer or 'last', got {step!r} in {text!r}")
        return cls(run, int(step))

    def __str__(self) -> str:
        return f"{self.run}@{'last' if self.step is None else self.step}"
