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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from einops import rearrange

from coopetition.analysis.base import Analysis, Checkpoint, Figure
from coopetition.analysis.patching import resid_points
from coopetition.analysis.probe_fit import Target, fit_probes, split
from coopetition.errors import ConfigError
from coopetition.task.evalset import EvalData
from coopetition.tables import FLOAT, INT, STR

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


PAGE_CAPTION = (
    "Held-out accuracy of linear probes on the residual stream (rows: layer boundary 'resid l' x token; "
    "columns: checkpoints) for the query's class, whether each context exemplar matches the query, the "
    "position of the correct label, each label's identity and each context exemplar's class. A white cross "
    "marks a cell no better than chance (the majority class; hover shows both). Pick the evaluator."
)


@dataclass(frozen=True)
class ProbeSettings:
    """Probes are trained on fresh sequences of each evaluator's distribution restricted to its first ``classes``
    classes (identity probes need many sequences per class; the stored sets have about one per class); ``seqs``
    per evaluator, a quarter held out; ``steps`` LBFGS iterations of the (batched) logistic regressions, ``l2``
    their penalty."""

    seqs: int = field(default=384, metadata={"help": "probe sequences per evaluator"})
    classes: int = field(default=8, metadata={"help": "classes per probe set: identity probes are this-way"})
    steps: int = field(default=20, metadata={"help": "LBFGS iterations per probe fit"})
    l2: float = field(default=1e-3, metadata={"help": "L2 penalty of the probes"})

    def __post_init__(self) -> None:
        for name, low in (("seqs", 16), ("classes", 3), ("steps", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"analysis probes.{name} (--probe-{name}) must be >= {low}, "
                                  f"got {getattr(self, name)}")
        if not 0 <= self.l2 < float("inf"):
            raise ConfigError(f"analysis probes.l2 (--probe-l2) must be finite and >= 0, got {self.l2}")


class ProbesAnalysis(Analysis):
    name: ClassVar[str] = "probes"
    title: ClassVar[str] = "Linear probes"
    caption: ClassVar[str] = "Held-out accuracy of linear probes on the residual stream, per layer and position."
    tables: ClassVar[dict] = {"probes": {"step": INT, "sequences": INT, "evaluator": STR, "target": STR, "layer": INT,
                                         "position": INT, "metric": STR, "value": FLOAT}}
    Settings = ProbeSettings
    flag_prefix: ClassVar[str] = "probe"
    figures: ClassVar[tuple] = (Figure("probes.html", "Linear probes", PAGE_CAPTION,
                                       "coopetition.plots.probes:figure"),)

    def prepare(self) -> None:
        run, cfg, s = self.context.run, self.config, self.settings
        self.sets = run.probe_data(self.context.bank, self.context.evaluators, s.classes, s.seqs, cfg.seed,
                                   cfg.device)

    def checkpoint_rows(self, checkpoint: Checkpoint) -> dict[str, list[dict]]:
        n_layers = self.context.network.cfg.n_layers
        rows = []
        for name in self.context.evaluators:
            data = self.sets[name]
            # the probes read the residual stream only: one label's logit, not the 12,800-way unembedding
            _, cache = self.context.timed("forward", self.context.forward.run_cached, data.exemplars,
                                          data.context_labels, data.target, [n for _, n in resid_points(n_layers)],
                                          labels=data.target[:, None])
            found = probe_rows(n_layers, data, cache, self.settings.steps, self.settings.l2, self.config.seed)
            rows += [{"evaluator": name, **r} for r in found]
        return {"probes": rows}
