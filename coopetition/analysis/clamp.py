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

**Without a pass per strength** (``linear_scores``, ``interventions/stream.py``). In an attention-only network
with no run or ``--intervene`` edits, a clamp replaces one head's output by its pattern applied to values that the
clamp does not change, so the baseline cache already holds everything before the clamped block:

- last layer, ``induction``: the clamped head's query output is the clamp's weights times the clean values of the
  label tokens, and no block follows, so the final stream at the query is the clean one with that head's output
  swapped (``others_kept``), the stream entering the block plus it (``others_ablated``), or the positions plus it
  and the ablated heads' zero biases (``isolated``). No pass at all: only the final LayerNorm and the label logits.
- layer 0, ``prev_token``: the head's output is S times its clean values shifted by one token plus 1 - S times
  them unshifted, so the stream leaving block 0 is ``base + S * slope`` per (head, condition). Every strength's
  stream is built from that in one tensor operation, and the later blocks run once over all of them stacked on
  the batch axis, without hooks; the last block on the query row only (its keys and values from every position).

Equal in real arithmetic to one hooked pass per strength; in floats the sums run in another order (~1e-7 relative
in float32; an accuracy can differ only where two label logits are that close). ``tests/test_analysis_fast_clamp.py``
and ``tests/test_analysis_fast_clamp_ablation.py`` hold the two equal (1e-10 in float64, on 1- to 3-layer and
rotary models). Used only where it is exact: with an MLP, a run edit (which might act after the clamp), a clamp
shape other than these, or ``--clamp-exact`` (``ClampSettings.exact``), every strength is its own pass.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from coopetition.analysis.ablation import METRICS, variant_scores
from coopetition.analysis.base import Analysis, Checkpoint, Figure
from coopetition.errors import ConfigError
from coopetition.interventions import (Ablate, AblateEmbedding, Induction, Intervened, Intervention, Preserve,
                                       PrevToken)
from coopetition.interventions import stream
from coopetition.interventions.clamps import induction_weights
from coopetition.model.sites import hook_name
from coopetition.task.evalset import EvalData
from coopetition.task.metrics import in_context_scores, readout_labels
from coopetition.tables import FLOAT, INT, STR

SCHEMA = {"step": INT, "sequences": INT, "evaluator": STR, "intervention": STR, "condition": STR, "head": STR,
          "strength": FLOAT, "metric": STR, "value": FLOAT}
STRENGTHS = tuple(round(0.1 * i, 1) for i in range(11))


def last_conditions(n_layers: int, n_heads: int, head: int) -> dict[str, tuple[Intervention, ...]]:
    """The interventions beside a last-layer ``induction`` clamp of ``head``, per condition."""
    last = n_layers - 1
    others = tuple((last, h) for h in range(n_heads) if h != head)
    earlier = tuple((layer, None) for layer in range(last))
    isolate = (Ablate(earlier + others),) if earlier + others else ()
    return {"others_kept": (), "others_ablated": (Ablate(others),),
            "isolated": (*isolate, AblateEmbedding(), Preserve(("patterns", "values")))}


def first_conditions(n_heads: int, head: int) -> dict[str, tuple[Intervention, ...]]:
    """The interventions beside a layer-0 ``prev_token`` clamp of ``head``, per condition."""
    others = tuple((0, h) for h in range(n_heads) if h != head)
    return {"others_kept": (), "others_ablated": (Ablate(others),)}


def clamp_variants(n_layers: int, n_heads: int, strengths: tuple[float, ...]) -> list[tuple[dict, tuple]]:
    """``[(labels, interventions)]`` for every clamped head, strength and condition."""
    last = n_layers - 1
    variants = []
    for head in range(n_heads):
        for condition, context in last_conditions(n_layers, n_heads, head).items():
            for s in strengths:
                labels = {"intervention": "induction", "condition": condition, "head": f"L{last}H{head}",
                          "strength": s}
                variants.append((labels, (*context, Induction(((last, head),), s))))
    if n_layers >= 2:
        for head in range(n_heads):
            for condition, context in first_conditions(n_heads, head).items():
                for s in strengths:
                    labels = {"intervention": "prev_token", "condition": condition, "head": f"L0H{head}",
                              "strength": s}
                    variants.append((labels, (*context, PrevToken(((0, head),), s))))
    return variants


def linear_applies(forward: Intervened) -> bool:
    """Whether ``linear_scores`` is exact in real arithmetic for ``forward`` (see the module docstring)."""
    return stream.applies(forward)


def linear_scores(forward: Intervened, data: EvalData, baseline, variants: list[tuple[Intervention, ...]],
                  max_rows: int) -> dict[str, list[float]]:
    """``variant_scores`` with every clamp of ``clamp_variants``' shapes from the stream arithmetic (only where
    ``linear_applies``, see the module docstring); other variants run as usual."""
    logits = linear_logits(forward, data, baseline, variants, max_rows)
    return {m: v.mean(dim=1).tolist() for m, v in in_context_scores(logits, data.context_labels, data.target).items()}


def linear_logits(forward: Intervened, data: EvalData, baseline, variants: list[tuple[Intervention, ...]],
                  max_rows: int) -> torch.Tensor:
    """The readout logits ``[variant, n, k]`` behind ``linear_scores``: the variants of ``clamp_variants``' shapes
    from the stream arithmetic (module docstring), any other through ``run_variants``."""
    network = forward.network
    n_layers, n_heads = network.cfg.n_layers, network.cfg.n_heads
    labels = readout_labels(data.context_labels, data.target)
    plans = [_plan(tuple(v), n_layers, n_heads) for v in variants]
    dtype = baseline[hook_name("resid_pre", 0)].dtype
    out = torch.empty(len(variants), data.n, labels.shape[1], device=labels.device, dtype=dtype)
    exact = [i for i, plan in enumerate(plans) if plan is None]
    if exact:
        out[exact] = forward.run_variants(data.exemplars, data.context_labels, data.target,
                                          [variants[i] for i in exact], labels, baseline, max_rows=max_rows).to(dtype)
    for kind, compute in (("induction", _induction_logits), ("prev_token", _prev_token_logits)):
        found = [i for i, plan in enumerate(plans) if plan is not None and plan[0] == kind]
        if found:
            out[found] = compute(network, data, baseline, [plans[i][1:] for i in found], labels, max_rows)
    return out


@functools.lru_cache(maxsize=4096)  # the same few hundred variants at every checkpoint and evaluator
def _plan(variant: tuple[Intervention, ...], n_layers: int, n_heads: int) -> tuple | None:
    """``(kind, condition, head, strength)`` if ``variant`` is one of ``clamp_variants``' clamps that the stream
    arithmetic computes, else None."""
    if not variant or not isinstance(variant[-1], (Induction, PrevToken)) or len(variant[-1].heads) != 1:
        return None
    *context, clamp = variant
    layer, head = clamp.heads[0]
    if head is None:
        return None
    if isinstance(clamp, Induction) and layer == n_layers - 1:
        kind, conditions = "induction", last_conditions(n_layers, n_heads, head)
    elif isinstance(clamp, PrevToken) and layer == 0 < n_layers - 1 and not clamp.labels_only:
        kind, conditions = "prev_token", first_conditions(n_heads, head)
    else:
        return None
    condition = next((c for c, expected in conditions.items() if tuple(context) == expected), None)
    return None if condition is None else (kind, condition, head, clamp.strength)


def _induction_logits(network, data: EvalData, cache, plans: list[tuple], labels: torch.Tensor,
                      max_rows: int) -> torch.Tensor:
    """Last-layer ``induction`` clamps: the clamped head reads the clean values of the label tokens with the
    clamp's weights; the final stream at the query is the clean one with that head's output swapped
    (``others_kept``), the stream entering the last block plus it (``others_ablated``), or the positions plus it
    (``isolated``: embeddings and every other head ablated, so each writes only its zero bias ``b_O``)."""
    n_layers = network.cfg.n_layers
    last = n_layers - 1
    attn = network.blocks[last].attn
    label_values = cache[hook_name("v", last)][:, 1:-1:2]  # [n, ctx, head, d_head]
    clean = torch.einsum("nhe,hed->nhd", cache[hook_name("z", last)][:, -1], attn.W_O)  # each head's output
    bases = {"others_kept": stream.entering(cache, n_layers, n_layers)[:, -1, None] - clean,
             "others_ablated": (stream.entering(cache, last, n_layers)[:, -1] + attn.b_O)[:, None],
             "isolated": (stream.positions(network, cache)[:, -1] + attn.b_O
                          + sum(network.blocks[layer].attn.b_O for layer in range(last)))[:, None]}
    outputs = {}  # strength -> what each head writes at the query under that clamp [n, head, d_model]
    for s in dict.fromkeys(s for *_, s in plans):
        weights = induction_weights(data.context_labels, data.target, s).to(label_values.dtype)
        outputs[s] = torch.einsum("nc,nche,hed->nhd", weights, label_values, attn.W_O)
    read = stream.Readout(network, labels)
    per_chunk = max(1, max_rows // data.n)
    return torch.cat([read(torch.stack([bases[condition][:, min(head, bases[condition].shape[1] - 1)]
                                        + outputs[s][:, head] for condition, head, s in chunk]))
                      for chunk in (plans[i:i + per_chunk] for i in range(0, len(plans), per_chunk))])


def _prev_token_logits(network, data: EvalData, cache, plans: list[tuple], labels: torch.Tensor,
                       max_rows: int) -> torch.Tensor:
    """Layer-0 ``prev_token`` clamps: the clamped head's output is S times its clean values shifted by one token
    plus 1 - S times them unshifted (token 0 keeps its own), so the stream leaving block 0 is affine in S,
    ``base + S * slope`` per (condition, head); the later blocks run once on every variant's stream."""
    n_layers = network.cfg.n_layers
    values = cache[hook_name("v", 0)]  # [n, pos, head, d_head]
    groups = list(dict.fromkeys((condition, head) for condition, head, _ in plans))
    bases, slopes = [], []
    for condition, head in groups:
        own = stream.head_output(network, 0, head, values[:, :, head])
        shifted = stream.head_output(network, 0, head, torch.cat([values[:, :1, head], values[:, :-1, head]], 1))
        if condition == "others_kept":
            clean = stream.head_output(network, 0, head, cache[hook_name("z", 0)][:, :, head])
            base = stream.entering(cache, 1, n_layers) - clean
        else:
            base = stream.entering(cache, 0, n_layers) + network.blocks[0].attn.b_O
        bases.append(base + own)
        slopes.append(shifted - own)
    base, slope = torch.stack(bases), torch.stack(slopes)  # [group, n, pos, d_model]
    index = torch.tensor([groups.index((condition, head)) for condition, head, _ in plans], device=base.device)
    strength = torch.tensor([s for *_, s in plans], dtype=base.dtype, device=base.device)

    def build(members: list[int]) -> torch.Tensor:
        rows = index[members]
        return (base[rows] + strength[members, None, None, None] * slope[rows]).flatten(0, 1)
    return stream.stacked_logits(network, 0, build, len(plans), labels, max_rows)


PAGE_CAPTION = (
    "Dose-response of single heads: in-context accuracy when a head's attention is clamped to strength S "
    "(last layer: S on the correct label, 1-S on the other, attention delta 2S-1; first layer: S on the "
    "previous token). Columns: the head's layer-mates kept, ablated, or the head isolated (C25 Fig 2b: a "
    "copier rises monotonically and passes 0.5 at S = 0.5). Slider: checkpoint."
)


def clamp_rows(forward: Intervened, data: EvalData, baseline, variants: list[tuple[dict, tuple]], max_rows: int,
               linear: bool) -> list[dict]:
    """Rows ``intervention, condition, head, strength, metric, value`` of one checkpoint and evaluator
    (``linear``: the stream arithmetic where it applies, see the module docstring)."""
    score = linear_scores if linear else variant_scores
    scores = score(forward, data, baseline, [v for _, v in variants], max_rows)
    return [{**labels, "metric": m, "value": scores[m][i]} for i, (labels, _) in enumerate(variants) for m in METRICS]


@dataclass(frozen=True)
class ClampSettings:
    """``strengths``: the clamped attention strengths S (C25: 0, 0.1, ..., 1); ``exact``: one pass per strength for
    every clamp, instead of the stream arithmetic of the module docstring (exact in real arithmetic where used)."""

    strengths: tuple[float, ...] = field(default=STRENGTHS,
                                         metadata={"help": "clamped attention strengths S of the clamp analysis"})
    exact: bool = field(default=False, metadata={
        "help": "one hooked pass per strength everywhere (default, in attention-only networks: the clamps are "
                "computed from the baseline cache and one batched pass of the later blocks, the same up to float "
                "rounding)"})

    def __post_init__(self) -> None:
        if len(self.strengths) < 2 or not all(0 <= s <= 1 for s in self.strengths):
            raise ConfigError(f"analysis clamp.strengths (--clamp-strengths) must be >= 2 values in [0, 1], "
                              f"got {self.strengths}")


class ClampAnalysis(Analysis):
    name: ClassVar[str] = "clamp"
    title: ClassVar[str] = "Activation clamping"
    caption: ClassVar[str] = ("Accuracy against the clamped attention strength of each head (last layer: induction "
                              "pattern; first layer: previous-token pattern), with the head's layer-mates kept or "
                              "ablated, or the head isolated (C25 Fig 2b); slider: checkpoint.")
    tables: ClassVar[dict] = {"clamp": SCHEMA}
    Settings = ClampSettings
    figures: ClassVar[tuple] = (Figure("clamp_{value}.html", "Activation clamping ({value})", PAGE_CAPTION,
                                       "coopetition.plots.clamp:figure", each="evaluator",
                                       values="coopetition.plots.clamp:evaluators"),)

    def prepare(self) -> None:
        self.evaluators = tuple(name for name in self.context.evaluators
                                if (self.context.data[name].context_labels
                                    == self.context.data[name].target[:, None]).any())
        cfg = self.context.network.cfg
        self.variants = clamp_variants(cfg.n_layers, cfg.n_heads, self.settings.strengths)
        self.linear = not self.settings.exact and linear_applies(self.context.forward)

    def checkpoint_rows(self, checkpoint: Checkpoint) -> dict[str, list[dict]]:
        rows = []
        for name in self.evaluators:
            data = self.context.data[name]
            _, cache = checkpoint.baseline(data)
            rows += [{"evaluator": name, **r} for r in clamp_rows(self.context.forward, data, cache, self.variants,
                                                                  self.config.max_rows, self.linear)]
        return {"clamp": rows}
