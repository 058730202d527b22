"""Activation clamping across checkpoints: dose-response curves of single heads (C25 section 5.3, Fig 2b).

At every selected checkpoint, each head's attention is clamped to an ideal pattern of strength S (the same
``induction`` and ``prev_token`` interventions that training takes) and the in-context scores are read out:

- last layer, ``induction:L:H:S``: the query row puts S on the label tokens equal to the target and 1 - S on the
  others (attention delta = 2S - 1 with two context pairs). A *copier* head, whose output is the label it attends
  to, gives an accuracy that rises monotonically with S and passes ~0.5 at delta 0 (C25 §9.8).
- first layer, ``prev_token:0:H:S``: every token puts S on the previous token and 1 - S on itself (the ICL route
  needs label tokens to see their exemplar; CIWL suits self attention).

Conditions (``condition`` column): ``others_kept`` (the rest of the network runs as usual), ``others_ablated``
(the other heads of that layer are zero-ablated), and, for the last layer, ``isolated``: C25's single-head protocol,
which keeps only that head (every earlier head, the other heads of its layer and the token embedding ablated, all
patterns and values preserved from the baseline), so the output is what that one head copies. Evaluators whose
target never appears in the context (pure IWL) are skipped: an induction pattern is undefined there.
"""

from __future__ import annotations

from typing import ClassVar

from coopetition.analysis.ablation import METRICS, variant_scores
from coopetition.analysis.base import Analysis, Checkpoint
from coopetition.interventions import Ablate, AblateEmbedding, Induction, Intervention, Preserve, PrevToken

COLUMNS = ("step", "sequences", "evaluator", "intervention", "condition", "head", "strength", "metric", "value")


def clamp_variants(n_layers: int, n_heads: int, strengths: tuple[float, ...]) -> list[tuple[dict, tuple]]:
    """``[(labels, interventions)]`` for every clamped head, strength and condition."""
    last = n_layers - 1
    variants = []
    for head in range(n_heads):
        others = tuple((last, h) for h in range(n_heads) if h != head)
        earlier = tuple((layer, None) for layer in range(last))
        conditions: dict[str, tuple[Intervention, ...]] = {"others_kept": (), "others_ablated": (Ablate(others),)}
        isolate = (Ablate(earlier + others),) if earlier + others else ()
        conditions["isolated"] = (*isolate, AblateEmbedding(), Preserve(("patterns", "values")))
        for condition, context in conditions.items():
            for s in strengths:
                labels = {"intervention": "induction", "condition": condition, "head": f"L{last}H{head}",
                          "strength": s}
                variants.append((labels, (*context, Induction(((last, head),), s))))
    if n_layers >= 2:
        for head in range(n_heads):
            others = tuple((0, h) for h in range(n_heads) if h != head)
            for condition, context in (("others_kept", ()), ("others_ablated", (Ablate(others),))):
                for s in strengths:
                    labels = {"intervention": "prev_token", "condition": condition, "head": f"L0H{head}",
                              "strength": s}
                    variants.append((labels, (*context, PrevToken(((0, head),), s))))
    return variants


class ClampAnalysis(Analysis):
    name: ClassVar[str] = "clamp"
    title: ClassVar[str] = "Activation clamping"
    caption: ClassVar[str] = ("Accuracy against the clamped attention strength of each head (last layer: induction "
                              "pattern; first layer: previous-token pattern), with the head's layer-mates kept or "
                              "ablated, or the head isolated (C25 Fig 2b); slider: checkpoint.")
    tables: ClassVar[dict] = {"clamp": COLUMNS}

    def prepare(self) -> None:
        self.evaluators = tuple(name for name in self.context.evaluators
                                if (self.context.data[name].context_labels
                                    == self.context.data[name].target[:, None]).any())
        cfg = self.context.network.cfg
        self.variants = clamp_variants(cfg.n_layers, cfg.n_heads, self.config.clamp_strengths)

    def checkpoint_rows(self, checkpoint: Checkpoint) -> dict[str, list[dict]]:
        rows = []
        for name in self.evaluators:
            data = self.context.data[name]
            _, cache = checkpoint.baseline(data)
            scores = variant_scores(self.context.forward, data, cache, [v for _, v in self.variants],
                                    self.config.max_rows)
            rows += [{"evaluator": name, **labels, "metric": m, "value": scores[m][i]}
                     for i, (labels, _) in enumerate(self.variants) for m in METRICS]
        return {"clamp": rows}
