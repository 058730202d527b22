"""What the residual stream encodes, per checkpoint: held-out accuracy of linear probes at every layer boundary
(``layer`` L = after the last block) and every token position.

Targets, from each evaluator's probe set (its distribution restricted to a few classes, see
``Run.probe_data``: with the default 8 classes, identity targets are 8-way):

- ``query_class``: the query's class (in-weights identity).
- ``match_{i}``: whether context exemplar i is of the query's class (binary; what ICL must compute).
- ``correct_position``: which context item carries the target label (the first, if several; sequences without
  one, as in pure IWL, are left out).
- ``label_class_{i}``: the identity of context label i (the label token's own class).
- ``exemplar_class_{i}``: the class of context exemplar i. At label token 2i+1 this is the previous token's
  class: decodable there only after a layer moved it (previous-token attention, the ICL route); a label token that
  attends to itself (the CIWL route) carries ``label_class_i`` instead. On Flip data the two differ.
Targets that take one value on the probe set (e.g. ``match`` on pure IWL) are skipped. Positions before the
information exists (causal mask) should sit at the majority baseline, which is reported alongside (``chance``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from einops import rearrange

from coopetition.analysis.base import Analysis, Checkpoint
from coopetition.store.run import EvalData
from coopetition.analysis.patching import resid_points
from coopetition.analysis.probe_fit import Target, fit_probes, split

if TYPE_CHECKING:  # TransformerLens is imported on first use (coopetition.model)
    from coopetition.model import ActivationCache


def _identity(values: torch.Tensor) -> tuple[torch.Tensor, int]:
    uniques, index = torch.unique(values, return_inverse=True)
    return index, len(uniques)


def probe_targets(data: EvalData) -> list[Target]:
    n, n_ctx = data.n, data.n_ctx
    everywhere = torch.ones(n, dtype=torch.bool, device=data.classes.device)
    specs = [("query_class", data.classes[:, -1])]
    specs += [(f"match_{i}", (data.classes[:, i] == data.classes[:, -1]).long()) for i in range(n_ctx)]
    specs += [(f"label_class_{i}", data.context_labels[:, i]) for i in range(n_ctx)]
    specs += [(f"exemplar_class_{i}", data.classes[:, i]) for i in range(n_ctx)]
    targets = []
    for name, values in specs:
        labels, k = _identity(values)
        if k > 1:
            targets.append(Target(name, labels, k, everywhere))
    carries = data.context_labels == data.target[:, None]
    if carries.any(dim=1).sum() > 1:
        position = carries.float().argmax(dim=1)
        if len(torch.unique(position[carries.any(dim=1)])) > 1:
            targets.append(Target("correct_position", position, n_ctx, carries.any(dim=1)))
    return targets


def probe_rows(n_layers: int, data: EvalData, cache: ActivationCache, steps: int, l2: float,
               seed: int) -> list[dict]:
    """Rows ``target, layer, position, metric (heldout_acc | chance), value`` for one checkpoint and evaluator."""
    points = resid_points(n_layers)
    resid = torch.stack([cache[name] for _, name in points])  # [site, n, pos, d]
    _, n, n_pos, _ = resid.shape
    features = rearrange(resid, "site n pos d -> (site pos) n d")  # probe index = site * n_pos + pos
    train = split(n, 0.25, seed)
    results = fit_probes(features, probe_targets(data), train, steps, l2)
    rows = []
    for target, values in results.items():
        for index, (acc, chance) in enumerate(values.tolist()):
            where = {"target": target, "layer": points[index // n_pos][0], "position": index % n_pos}
            rows += [{**where, "metric": "heldout_acc", "value": acc}, {**where, "metric": "chance", "value": chance}]
    return rows


class ProbesAnalysis(Analysis):
    name: ClassVar[str] = "probes"
    title: ClassVar[str] = "Linear probes"
    caption: ClassVar[str] = "Held-out accuracy of linear probes on the residual stream, per layer and position."
    tables: ClassVar[dict] = {"probes": ("step", "sequences", "evaluator", "target", "layer", "position", "metric",
                                         "value")}

    def prepare(self) -> None:
        run, cfg = self.context.run, self.config
        self.sets = run.probe_data(self.context.bank, self.context.evaluators, cfg.probe_classes, cfg.probe_seqs, cfg.seed,
                                   cfg.device)

    def checkpoint_rows(self, checkpoint: Checkpoint) -> dict[str, list[dict]]:
        n_layers = self.context.network.cfg.n_layers
        rows = []
        for name in self.context.evaluators:
            data = self.sets[name]
            _, cache = self.context.timed("forward", self.context.forward.run_cached, data.exemplars,
                                          data.context_labels, data.target, [n for _, n in resid_points(n_layers)])
            found = probe_rows(n_layers, data, cache, self.config.probe_steps, self.config.probe_l2, self.config.seed)
            rows += [{"evaluator": name, **r} for r in found]
        return {"probes": rows}
