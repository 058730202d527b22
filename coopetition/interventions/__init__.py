"""Interventions ("artificial optogenetics", REFERENCE.md 5): hooks and grafts that stay active during training
and evaluation. Specs are strings (``ablate:0:1,0:4``, ``induction:1:3:0.8``, ``graft_out:RUN@STEP:0``); see
``docs/interventions.md`` for the grammar. Adding an intervention = adding one ``Intervention`` subclass."""

from coopetition.interventions import attention, clamps, graft  # noqa: F401  (defining the classes registers them)
from coopetition.interventions.base import REGISTRY, Inputs, Intervention, parse_spec, validate_specs
from coopetition.interventions.graft import CheckpointRef, init_from_checkpoint, splice
from coopetition.interventions.runner import Intervened, intervene

__all__ = ["REGISTRY", "CheckpointRef", "Inputs", "Intervened", "Intervention", "init_from_checkpoint", "intervene",
           "parse_spec", "splice", "validate_specs"]
