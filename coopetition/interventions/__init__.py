"""Interventions ("artificial optogenetics", REFERENCE.md 5): typed objects that training, evaluation and analysis
all take. Specs are strings at the boundary (``ablate:0:1,0:4``, ``induction:1:3:0.8``, ``graft_out:RUN@STEP:0``;
see ``docs/interventions.md`` for the grammar), parsed once into these objects. Adding an intervention = adding one
``Intervention`` subclass.

The intervention classes (parsing, checks, help) import torch only when they compute, so the CLI can parse and
validate without it; the engine that runs a model (``Intervened``, ``intervene``) is imported on first use."""

from typing import Any

from coopetition.interventions import attention, clamps, graft  # noqa: F401  (defining the classes registers them)
from coopetition.interventions.attention import Ablate, AblateEmbedding, Patch, Preserve
from coopetition.interventions.base import (REGISTRY, CheckpointRef, Inputs, Intervention, parse_spec, validated)
from coopetition.interventions.clamps import Copy, Induction, Match, PrevToken
from coopetition.interventions.graft import Graft, GraftIn, GraftOut
from coopetition.interventions.paths import PathPatch

__all__ = ["REGISTRY", "Ablate", "AblateEmbedding", "CheckpointRef", "Copy", "Graft", "GraftIn", "GraftOut",
           "Induction", "Inputs", "Intervened", "Intervention", "Match", "Patch", "PathPatch", "Preserve", "PrevToken",
           "intervene", "parse_spec", "validated"]


def __getattr__(name: str) -> Any:
    if name in ("Intervened", "intervene"):
        from coopetition.interventions import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'coopetition.interventions' has no attribute {name!r}")
