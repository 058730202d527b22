"""Grafts: run part of the network with weights frozen from another run's checkpoint (REFERENCE.md 5.2).

- ``graft_in:RUN@STEP:K``: the embeddings and blocks 0..K come from the frozen checkpoint; our blocks K+1.., final
  LN and unembedding run on its residual. Only those later parts of our model learn.
- ``graft_out:RUN@STEP:K``: our embeddings and blocks 0..K feed the frozen checkpoint's blocks K+1.., final LN and
  unembedding. Only our embeddings and blocks 0..K learn (C25's ``icl_only_graftl1`` is ``graft_out:MAIN@STEP:0``).

Both splice modules into one network (``coopetition.model.splice``), so every hook name (and so every other
intervention) addresses the network that actually runs: with ``graft_out:...:0``, ``ablate:1:3`` ablates the frozen
layer-1 head 3. ``K`` may be -1 (embeddings only). ``STEP`` is a checkpoint step of RUN or ``last``. This module only
describes a graft; ``coopetition.store.sources`` opens and checks the source run, and a trained run keeps its own
copy of every source checkpoint (``RUN/sources/``), which is what resume and analysis read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from coopetition.errors import ConfigError
from coopetition.interventions.base import CheckpointRef, Intervention
from coopetition.model.config import ModelConfig

if TYPE_CHECKING:  # TransformerLens is imported on first use (coopetition.model)
    from coopetition.model import ICLTransformer


@dataclass(frozen=True)
class Graft(Intervention):
    """Base of ``graft_in`` / ``graft_out``: a checkpoint reference and the layer K where the residual crosses."""

    usage: ClassVar[str] = "graft_in|graft_out:RUN@STEP:K  (STEP may be 'last'; K in [-1, n_layers - 1])"
    source: CheckpointRef
    layer: int

    @classmethod
    def parse(cls, args: str) -> "Graft":
        ref, sep, layer = args.rpartition(":")
        if not sep or not layer.lstrip("-").isdigit():
            raise ConfigError(f"expected RUN@STEP:K, got {args!r}")
        return cls(CheckpointRef.parse(ref), int(layer))

    def format_args(self) -> str:
        return f"{self.source}:{self.layer}"

    def validate(self, model: ModelConfig) -> None:
        if not -1 <= self.layer < model.n_layers:
            raise ConfigError(f"layer {self.layer} must be in [-1, {model.n_layers - 1}]")

    def splice(self, model: ICLTransformer, source: ICLTransformer) -> ICLTransformer:
        raise NotImplementedError


@dataclass(frozen=True)
class GraftIn(Graft):
    """The residual after block K (embeddings included) is the frozen checkpoint's; ours computes the rest."""

    name: ClassVar[str] = "graft_in"
    summary: ClassVar[str] = "embeddings and blocks 0..K frozen from another checkpoint"

    def splice(self, model: ICLTransformer, source: ICLTransformer) -> ICLTransformer:
        from coopetition.model import splice

        return splice(source, model, self.layer)


@dataclass(frozen=True)
class GraftOut(Graft):
    """Our residual after block K runs through the frozen checkpoint's later blocks, final LN and unembedding."""

    name: ClassVar[str] = "graft_out"
    summary: ClassVar[str] = "blocks K+1.., final LN and unembedding frozen from another checkpoint"

    def splice(self, model: ICLTransformer, source: ICLTransformer) -> ICLTransformer:
        from coopetition.model import splice

        return splice(model, source, self.layer)
