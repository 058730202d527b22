"""``Intervened``: the model as a run sees it, with every intervention applied on every forward pass.

Training and evaluation both call ``Intervened(exemplars, context_labels, target)``, so an intervention active in
training is active, identically, in the run's evaluations (and in analyses that rebuild it from the run's config).
One pass is: (1) if any intervention needs clean values, a no-grad pass of the (grafted) network without hooks on
the same input; (2) the pass with all hooks installed, restore-from-clean hooks first, then the rest in spec order;
(3) logit edits in spec order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from coopetition.interventions.base import Inputs, Intervention, validate_specs
from coopetition.interventions.graft import Graft, freeze, load_source

if TYPE_CHECKING:  # TransformerLens is imported on first use (coopetition.model)
    from coopetition.model import ICLTransformer


class Intervened:
    """``model`` (the weights being trained and checkpointed) with grafts spliced in and hooks on each pass."""

    def __init__(self, model: ICLTransformer, interventions: Sequence[Intervention],
                 sources: Sequence[ICLTransformer] = ()):
        grafts = [i for i in interventions if isinstance(i, Graft)]
        if len(sources) != len(grafts):
            raise ValueError(f"{len(grafts)} grafts need as many source models, got {len(sources)}")
        self.model = model
        self.interventions = tuple(interventions)
        self.sources = [freeze(s) for s in sources]
        network = model
        for graft, source in zip(grafts, self.sources):
            network = graft.splice(network, source)
        self.network = network
        edits = [i for i in interventions if not isinstance(i, Graft)]
        self.edits = sorted(edits, key=lambda i: i.phase)  # stable: spec order within a phase
        self.clean_names = sorted({n for i in self.edits for n in i.clean_names(model.model_config)})

    @property
    def active(self) -> bool:
        return bool(self.interventions)

    def provenance(self) -> list[dict]:
        """Where each graft's frozen weights came from (``last`` resolved), for the run's config.json."""
        records = []
        for graft in (i for i in self.interventions if isinstance(i, Graft)):
            path, step = graft.source.checkpoint_path()
            records.append({"intervention": graft.name, "layer": graft.layer, "checkpoint": str(path.resolve()),
                            "step": step})
        return records

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Our parameters that the spliced network uses: frozen sources and our bypassed layers are left out."""
        ours = {id(p) for p in self.model.parameters()}
        return [p for p in self.network.parameters() if id(p) in ours and p.requires_grad]

    def __call__(self, exemplars: Float[Tensor, "batch item dim"], context_labels: Int[Tensor, "batch ctx"],
                 target: Int[Tensor, " batch"] | None = None) -> Float[Tensor, "batch classes"]:
        return self.run_with_cache(exemplars, context_labels, target, cache=False)[0]

    def run_with_cache(self, exemplars: Tensor, context_labels: Tensor, target: Tensor | None = None,
                       cache: bool = True, names_filter=None):
        """``(query logits, ActivationCache | None)``; the cache holds what the network actually used (values
        after every intervention)."""
        if not self.edits:
            if not cache:
                return self.network(exemplars, context_labels), None
            return self.network.run_with_cache(exemplars, context_labels, names_filter=names_filter)
        inputs = Inputs(exemplars, context_labels, target)
        if self.clean_names:
            with torch.no_grad():
                names = set(self.clean_names)
                _, inputs.clean = self.network.run_with_cache(exemplars, context_labels,
                                                              names_filter=lambda n: n in names)
        hooks = [hook for edit in self.edits for hook in edit.hooks(inputs, self.model.model_config)]
        with self.network.hooks(fwd_hooks=hooks):
            if cache:
                logits, activations = self.network.run_with_cache(exemplars, context_labels,
                                                                  names_filter=names_filter)
            else:
                logits, activations = self.network(exemplars, context_labels), None
        for edit in self.edits:
            logits = edit.edit_logits(logits, inputs)
        return logits, activations


def intervene(specs: Sequence[str], model: ICLTransformer, bank_fingerprint: str | None = None) -> Intervened:
    """Parse and validate ``specs`` against ``model``, load graft sources (checking architecture and bank), and
    wrap ``model``. Every user mistake is a one-line ConfigError raised before any pass runs."""
    interventions = validate_specs(tuple(specs), model.model_config)
    sources = [load_source(i.source, model, bank_fingerprint, i.name) for i in interventions if isinstance(i, Graft)]
    return Intervened(model, interventions, sources)
