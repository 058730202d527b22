"""``Intervened``: the network as a run sees it, with its interventions on every pass, and the one engine that
runs it, once (training, evaluation, a cached pass) or for many variants at once (analysis).

A run's own interventions are applied on every pass: grafts are spliced in when the object is built, and the hooks
of the others are installed for each pass. One pass is (1) if any of them reads clean values (``preserve``, mean or
resample ablation), a no-grad pass of the spliced network without hooks on the same input; (2) the pass with every
hook installed, phase-0 (restore-from-clean) hooks first, then the rest in spec order; (3) logit edits in spec
order. Training, evaluation and analysis all go through here, so an intervention active in training is active,
identically, in the run's evaluations and in every analysis of its checkpoints.

``run_variants`` is the same pass for a list of *variants* (each a tuple of further interventions, e.g. "L1H3 mean
ablated", "patch z of L1H3 from the clean input") on top of the run's own: the input is tiled once per variant
(chunked to ``max_rows`` sequences), one hook per touched hook point applies the run's edits to every row and each
variant's edits to its own block of rows, and only the requested label logits are read out. A variant's ``clean``
is the analysed baseline (the run's own pass), its ``source`` a second pass (patching). A variant whose first
real edit is in block l starts from the baseline's cached ``blocks.{l}.hook_resid_pre``.

``_run_chunk`` is the only forward engine. The plain forward (``__call__``: training steps and evaluation), the cached
forward (``run_cached``) and ``capture`` are its one-variant case: a variant with no edits of its own (``capture``'s
variant only reads), run on the input itself (no tiling, no copies) in the caller's gradient mode, so training
backpropagates through the same code that analysis batches; with no hook to install the network runs bare, which
keeps its fused training kernels (``model/components.py``) and training bit-identical to a bare forward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from coopetition.interventions.base import Hook, Inputs, Intervention, hook_block
from coopetition.interventions.graft import Graft
from coopetition.model.sites import residual_entering

if TYPE_CHECKING:  # TransformerLens is imported on first use (coopetition.model)
    from coopetition.model import ActivationCache, ICLTransformer

Variant = Sequence[Intervention]


def _by_phase(interventions: Sequence[Intervention]) -> list[Intervention]:
    return sorted(interventions, key=lambda i: i.phase)  # stable: spec order within a phase


def _edits_logits(intervention: Intervention) -> bool:
    return type(intervention).edit_logits is not Intervention.edit_logits


def _chain(fns: list, act: Tensor, hook: Any) -> Tensor:
    for fn in fns:
        out = fn(act, hook)
        act = act if out is None else out
    return act


class Intervened:
    """``model`` (the weights being trained, checkpointed or analysed) with grafts spliced in and hooks on each
    pass. ``sources`` are the frozen graft-source models, one per graft, in spec order."""

    def __init__(self, model: ICLTransformer, interventions: Sequence[Intervention] = (),
                 sources: Sequence[ICLTransformer] = ()):
        grafts = [i for i in interventions if isinstance(i, Graft)]
        if len(sources) != len(grafts):
            raise ValueError(f"{len(grafts)} grafts need as many source models, got {len(sources)}")
        self.model = model
        self.interventions = tuple(interventions)
        self.sources = [_freeze(s) for s in sources]
        network = model
        for graft, source in zip(grafts, self.sources):
            network = graft.splice(network, source)
        self.network = network
        self.edits = _by_phase([i for i in interventions if not isinstance(i, Graft)])
        self.clean_names = sorted({n for i in self.edits for n in i.clean_names(self.config)})

    @property
    def config(self):
        return self.model.model_config

    @property
    def active(self) -> bool:
        return bool(self.interventions)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Our parameters that the spliced network uses: frozen sources and our bypassed layers are left out."""
        ours = {id(p) for p in self.model.parameters()}
        return [p for p in self.network.parameters() if id(p) in ours and p.requires_grad]

    # --- one pass -------------------------------------------------------------------------------------------------

    def inputs(self, exemplars: Tensor, context_labels: Tensor, target: Tensor | None = None) -> Inputs:
        """The run's own interventions' inputs: their clean values come from a hook-free, no-grad pass."""
        inputs = Inputs(exemplars, context_labels, target)
        if self.clean_names:
            with torch.no_grad():
                _, inputs.clean = self.network.run_cached(exemplars, context_labels, names=self.clean_names)
        return inputs

    def __call__(self, exemplars: Float[Tensor, "batch item dim"], context_labels: Int[Tensor, "batch ctx"],
                 target: Int[Tensor, " batch"] | None = None,
                 labels: Int[Tensor, "batch k"] | None = None) -> Float[Tensor, "batch classes"]:
        """Query logits of every class, or of ``labels`` only: the engine's one-variant case with no edits of its
        own, in the caller's gradient mode (training steps backpropagate through it)."""
        return self._single(exemplars, context_labels, target, labels)[0]

    def loss(self, exemplars: Float[Tensor, "batch item dim"], context_labels: Int[Tensor, "batch ctx"],
             target: Int[Tensor, " batch"]) -> Tensor:
        """The training loss (mean query cross-entropy). With no hook interventions the network computes it
        itself (``ICLTransformer.query_loss``: the fused unembedding + loss in training, where its kernels are on);
        a hook intervention may read or edit any activation, logits included, so then the logits are computed
        through the engine and the loss taken from them."""
        if not self.edits:
            return self.network.query_loss(exemplars, context_labels, target)
        logits = self(exemplars, context_labels, target)
        return F.cross_entropy(logits if logits.dtype == torch.float64 else logits.float(), target)

    def run_cached(self, exemplars: Tensor, context_labels: Tensor, target: Tensor | None = None,
                       names: Sequence[str] | None = None,
                       labels: Tensor | None = None) -> tuple[Tensor, ActivationCache]:
        """``(query logits, cache)``; the cache holds what the network actually used (values after every edit)."""
        return self._single(exemplars, context_labels, target, labels, cache_names=names, cache=True)

    def capture(self, exemplars: Tensor, context_labels: Tensor, target: Tensor | None, names: Sequence[str],
                labels: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """``(query logits, {name: activation})`` with the activations still in the autograd graph (gradients
        with respect to them: attribution patching). The reads are the one variant's hooks."""
        grabbed: dict[str, Tensor] = {}

        def grab(act: Tensor, hook) -> None:
            grabbed[hook.name] = act
        logits, _ = self._single(exemplars, context_labels, target, labels, reads=[(n, grab) for n in names])
        return logits, grabbed

    def _single(self, exemplars, context_labels, target, labels, reads: Sequence[Hook] = (), cache_names=None,
                cache=False):
        """One variant (hooks ``reads``, no edits of its own) through ``_run_chunk``: no tiling, no baseline,
        gradients as the caller has them."""
        own = self.inputs(exemplars, context_labels, target).clean if self.edits else None
        variant = (list(reads), None, self.config.n_layers, ())
        return self._run_chunk([variant], exemplars, context_labels, target, labels, None, own, -1,
                               cache=cache, cache_names=cache_names)

    # --- many variants at once ------------------------------------------------------------------------------------

    @torch.no_grad()
    def run_variants(self, exemplars: Float[Tensor, "n item dim"], context_labels: Int[Tensor, "n ctx"],
                     target: Int[Tensor, " n"] | None, variants: Sequence[Variant],
                     labels: Int[Tensor, "n k"] | None = None, baseline: Mapping[str, Tensor] | None = None,
                     source: Mapping[str, Tensor] | None = None, max_rows: int = 2048,
                     final_residual: bool = False) -> Float[Tensor, "v n k"]:
        """Query logits (of ``labels``, or every class) under each variant, in order.

        ``final_residual``: return the residual stream at the query after the last block (before the final
        LayerNorm), ``[v, n, d_model]``, instead of logits; refused where an intervention edits logits.

        ``baseline``: the cache of this object's own pass on the same input; variants' ``clean`` values come from
        it (without it, from a pass made here), and with it (it must hold the ``hook_resid_pre`` of every block and
        the last ``hook_resid_post``) a variant whose first real edit is in block l starts there. ``source``: a
        cache of the same network on another input, for ``patch``.
        """
        n, cfg = exemplars.shape[0], self.config
        k = labels.shape[1] if labels is not None else self.model.n_outputs
        if final_residual:
            k = self.network.cfg.d_model
            if any(_edits_logits(edit) for edit in (*self.edits, *(e for v in variants for e in v))):
                raise ValueError("final_residual: an intervention edits logits")
        if not variants:
            return exemplars.new_empty(0, n, k)
        clean = baseline
        if clean is None:  # variants' clean values (preserve, mean/resample) still come from this object's own pass
            needed = sorted({n for v in variants for edit in v for n in edit.clean_names(cfg)})
            clean = self.run_cached(exemplars, context_labels, target, names=needed)[1] if needed else None
        built = [self._variant_hooks(v, exemplars, context_labels, target, clean, source) for v in variants]
        floor = min([hook_block(name) for edit in self.edits if _edits_logits(edit)
                     for name, _ in edit.hooks(Inputs(exemplars, context_labels, target), cfg)], default=cfg.n_layers)
        starts = [min(b[2], floor) if baseline is not None else -1 for b in built]
        own = self.inputs(exemplars, context_labels, target).clean if self.edits else None
        per_chunk = max(1, max_rows // n)
        order, out = [], []
        for start in sorted(set(starts)):
            members = [i for i, s in enumerate(starts) if s == start]
            for first in range(0, len(members), per_chunk):
                chunk = members[first:first + per_chunk]
                logits, _ = self._run_chunk([built[i] for i in chunk], exemplars, context_labels, target, labels,
                                            baseline, own, start, final_residual)
                out.append(logits.view(len(chunk), n, -1))
                order += chunk
        return torch.cat(out)[torch.tensor(order, device=exemplars.device).argsort()]

    def _variant_hooks(self, variant: Variant, exemplars, context_labels, target, baseline, source):
        """(hooks, inputs, first block with a real edit, edits) of one variant."""
        inputs = Inputs(exemplars, context_labels, target, clean=baseline, source=source)
        edits = _by_phase(variant)
        hooks: list[Hook] = []
        first = self.config.n_layers
        for edit in edits:
            found = edit.hooks(inputs, self.config)
            hooks += found
            if not edit.restores_clean:
                first = min([first] + [hook_block(name) for name, _ in found])
        return hooks, inputs, first, edits

    def _run_chunk(self, built, exemplars, context_labels, target, labels, baseline, own, start,
                   final_residual=False, cache=False, cache_names=None):
        """The engine: ``(logits [len(built) * n, k], cache or None)`` of one chunk of variants that all start at
        block ``start`` (-1: from the embeddings); ``own``: the clean values of the run's own interventions on the
        untiled input. One variant runs on the input itself (no tiling, no copies; its hooks see the whole batch),
        and with no hook at all the network runs bare (its fused training kernels stay on). ``cache``: also cache
        ``cache_names`` (``start`` -1 only). Gradients follow the caller's mode."""
        g, n = len(built), exemplars.shape[0]
        if g == 1:
            tiled = Inputs(exemplars, context_labels, target)
            if own is not None:
                tiled.clean = {name: own[name] for name in self.clean_names}
        else:
            tiled = Inputs(exemplars.repeat(g, 1, 1), context_labels.repeat(g, 1),
                           None if target is None else target.repeat(g))
            if own is not None:
                tiled.clean = {name: own[name].repeat(g, *[1] * (own[name].dim() - 1)) for name in self.clean_names}
        names: dict[str, tuple[list, list]] = {}
        for hook_name, fn in (h for edit in self.edits for h in edit.hooks(tiled, self.config)):
            names.setdefault(hook_name, ([], []))[0].append(fn)
        for i, (hooks, *_rest) in enumerate(built):
            for hook_name, fn in hooks:
                blocks = names.setdefault(hook_name, ([], []))[1]
                if not blocks or blocks[-1][0] != i:
                    blocks.append((i, []))
                blocks[-1][1].append(fn)

        def combined(own: list, blocks: list):
            def hook(act: Tensor, hook) -> Tensor:
                act = _chain(own, act, hook)
                if g == 1:  # the variant's rows are the whole batch: edit (or read) it in place of a copy
                    return _chain(blocks[0][1], act, hook) if blocks else act
                if blocks:
                    act = act.clone()  # may be an expanded view (positions); never edit the caller's tensor
                    for i, fns in blocks:
                        rows = slice(i * n, (i + 1) * n)
                        act[rows] = _chain(fns, act[rows], hook)
                return act
            return hook

        read = labels if labels is None or g == 1 else labels.repeat(g, 1)
        hooks = [(name, combined(*fns)) for name, fns in names.items()]
        activations = None
        with self.network.hooked(hooks) if hooks else nullcontext():
            if final_residual:
                residual = (self.network.embed_input(tiled.exemplars, tiled.context_labels) if start < 0 else
                            baseline[_resid_name(start, self.config.n_layers)].repeat(g, 1, 1))
                return self.network.run_blocks(residual, max(start, 0))[:, -1], None
            if cache:
                if start >= 0:
                    raise ValueError("a cached pass starts at the embeddings")
                logits, activations = self.network.run_cached(tiled.exemplars, tiled.context_labels,
                                                              names=cache_names, labels=read)
            elif start < 0:
                logits = self.network(tiled.exemplars, tiled.context_labels, labels=read)
            else:
                residual = baseline[_resid_name(start, self.config.n_layers)].repeat(g, 1, 1)
                logits = self.network.forward_from(residual, start, labels=read)
        for edit in self.edits:
            logits = edit.edit_logits(logits, tiled, read)
        for i, (_, inputs, _, edits) in enumerate(built):
            rows = slice(i * n, (i + 1) * n)
            for edit in edits:
                if _edits_logits(edit):
                    logits[rows] = edit.edit_logits(logits[rows], inputs, labels)
        return logits, activations


def intervene(interventions: Sequence[Intervention | str], model: ICLTransformer,
              sources: Sequence[ICLTransformer] = ()) -> Intervened:
    """Parse (spec strings) and check ``interventions`` against ``model``'s architecture and wrap it: the Python
    entry point. Grafts need their frozen source models (``coopetition.store.sources`` opens them from runs)."""
    from coopetition.interventions.base import validated

    return Intervened(model, validated(tuple(interventions), model.model_config), sources)


def _resid_name(start: int, n_layers: int) -> str:
    return residual_entering(start, n_layers)


def _freeze(model: ICLTransformer) -> ICLTransformer:
    model.requires_grad_(False)
    return model.eval()
