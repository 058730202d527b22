"""Circuits as graphs over training: the effect of every edge of the computational graph at every checkpoint.

Nodes: the exemplar, label and position embeddings, every head, and the query logits. Edges: sender -> receiver
through the receiver's Q, K or V input (any earlier node into any head), and every node -> logits (``direct``).
Each is scored on the patching pairs (``pairs.py``; the label-only pairs of ``patching`` plus ``exemplar_swap``)
with the normalised logit difference of ``patching`` (1: this edge alone restores the clean behaviour):

- ``exact`` (path patching, ``interventions.paths``): the corrupted run with only this edge carrying the sender's
  clean output. Computed by ``paths.patched_logits``: the receiver head alone on its patched input, every sender
  at once, then the later blocks as one batched pass (~1 CPU-s per checkpoint of the quick model); the same
  function as one ``PathPatch`` variant per edge through ``Intervened.run_variants`` (~14 CPU-s), which stays
  the path for runs with hook interventions of their own and is what the fast one is tested against (equal to
  1e-10 in float64, to rounding in float32: docs/performance.md).
- ``attribution`` (edge attribution patching, Syed et al. 2023): one forward and one backward pass on the
  corrupted input give grad(LD) at every receiver input; an edge's effect ~ grad . (clean - corrupted sender
  output), summed over sequences and positions.

``agreement`` rows compare them per pair and checkpoint over all edges: Spearman rank correlation (ties averaged),
the overlap of the ``TOP`` largest |effect| edges, and whether the largest is the same edge. ``baseline`` rows hold
the clean and corrupted logit differences (the normaliser). MLPs, where the model has them, are not nodes: their
paths stay corrupted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import pandas as pd
import torch

from coopetition.analysis.base import Analysis, Checkpoint, Figure
from coopetition.analysis.pairs import EXEMPLAR_PAIRS, PatchPair, build_pairs
from coopetition.analysis.patching import MIN_GAP
from coopetition.interventions import Intervened, PathPatch
from coopetition.interventions.paths import (DIRECT, EMBEDDINGS, INPUTS, LOGITS, head_node, patched_logits,
                                             receiver_hook, sender_names, sender_output)
from coopetition.model.config import ModelConfig
from coopetition.model.sites import hook_name, residual_entering
from coopetition.tables import FLOAT, INT, STR

if TYPE_CHECKING:  # TransformerLens is imported on first use (coopetition.model)
    from coopetition.model import ActivationCache

SCHEMA = {"step": INT, "sequences": INT, "pair": STR, "sender": STR, "receiver": STR, "input": STR, "method": STR,
          "effect": FLOAT}
METHODS = ("exact", "attribution")
TOP = 5


def edges(model: ModelConfig) -> list[PathPatch]:
    """Every edge: embeddings and earlier heads into each head's q/k/v, every node into the logits."""
    embeds = [e for e in EMBEDDINGS if e != "position" or model.positional != "rotary"]
    heads = [[head_node(l, h) for h in range(model.n_heads)] for l in range(model.n_layers)]
    out = []
    for layer in range(model.n_layers):
        senders = embeds + [s for earlier in heads[:layer] for s in earlier]
        out += [PathPatch(s, r, x) for r in heads[layer] for x in INPUTS for s in senders]
    return out + [PathPatch(s, LOGITS, DIRECT) for s in embeds + [s for layer in heads for s in layer]]


def cache_names(model: ModelConfig) -> list[str]:
    """What the clean and corrupted passes keep: every sender's output, the residual stream where batched variants
    start, and (with MLPs) the stream between attention and MLP, where the fast path adds a head's change."""
    mids = [] if model.attn_only else [hook_name("resid_mid", l) for l in range(model.n_layers)]
    return [residual_entering(l, model.n_layers) for l in range(model.n_layers + 1)] + mids + sender_names(model)


def attribution(forward: Intervened, pair: PatchPair, clean: ActivationCache, corrupt: ActivationCache,
                found: list[PathPatch]) -> list[float]:
    """Each edge's grad(mean LD) . (clean - corrupted sender output), from one forward and one backward pass on
    the corrupted input (``per_head_hooks`` must be on)."""
    cfg = forward.config
    names = sorted({receiver_hook(e.receiver, e.input, cfg)[0] for e in found})
    with torch.enable_grad():
        exemplars = pair.corrupt.exemplars.clone().requires_grad_(True)  # so every activation carries a graph
        logits, acts = forward.capture(exemplars, pair.corrupt.context_labels, pair.corrupt.target, names,
                                       labels=pair.answers)
        ld = (logits[:, 0] - logits[:, 1]).mean()
        grads = dict(zip(names, torch.autograd.grad(ld, [acts[n] for n in names], allow_unused=True)))
    deltas = {s: sender_output(clean, s) - sender_output(corrupt, s) for s in {e.sender for e in found}}
    out = []
    for edge in found:
        name, index = receiver_hook(edge.receiver, edge.input, cfg)
        grad = grads[name]
        out.append(0.0 if grad is None else float((grad[(slice(None), *index)] * deltas[edge.sender]).sum()))
    return out


def agreement(exact: list[float], approx: list[float], top: int = TOP) -> dict[str, float]:
    """Spearman correlation (average ranks for ties), top-``top`` overlap by |effect| (fraction), top-1 identity."""
    e, a = pd.Series(exact, dtype=float), pd.Series(approx, dtype=float)
    if e.isna().any() or a.isna().any() or len(e) < 2:
        return {"spearman": float("nan"), f"top{top}_overlap": float("nan"), "top1_match": float("nan")}
    spearman = float(e.rank().corr(a.rank())) if e.nunique() > 1 and a.nunique() > 1 else float("nan")
    best_e, best_a = e.abs().nlargest(top).index, a.abs().nlargest(top).index
    return {"spearman": spearman, f"top{top}_overlap": len(set(best_e) & set(best_a)) / min(top, len(e)),
            "top1_match": float(best_e[0] == best_a[0])}


def circuit_rows(forward: Intervened, pair: PatchPair, max_rows: int, exact_path: str = "auto") -> list[dict]:
    """Rows ``sender, receiver, input, method, effect`` for one checkpoint and pair. ``exact_path``: how the exact
    effects are computed: ``"fast"`` (``paths.patched_logits``: the receiver head alone, every sender at once),
    ``"variants"`` (one ``PathPatch`` variant per edge through ``Intervened.run_variants``, the reference the fast
    path is tested against), ``"auto"``: fast unless the run has hook interventions of its own (which only the
    engine applies)."""
    if exact_path not in ("auto", "fast", "variants"):
        raise ValueError(f"exact_path must be auto, fast or variants, got {exact_path!r}")
    network, cfg = forward.network, forward.config
    found = edges(cfg)
    fast = exact_path == "fast" or (exact_path == "auto" and not forward.edits)
    with network.per_head_hooks():
        passes = {}
        for run, data in (("clean", pair.clean), ("corrupt", pair.corrupt)):
            logits, cache = forward.run_cached(data.exemplars, data.context_labels, data.target,
                                               names=cache_names(cfg), labels=pair.answers)
            passes[run] = (logits, cache)
        (logits_clean, clean), (logits_corrupt, corrupt) = passes["clean"], passes["corrupt"]
        ld_clean, ld_corrupt = (float((x[:, 0] - x[:, 1]).mean().detach()) for x in (logits_clean, logits_corrupt))
        gap = ld_clean - ld_corrupt
        scale = 1.0 / gap if abs(gap) >= MIN_GAP else float("nan")
        if not fast:
            logits = forward.run_variants(pair.corrupt.exemplars, pair.corrupt.context_labels, pair.corrupt.target,
                                          [(e,) for e in found], pair.answers, baseline=corrupt, source=clean,
                                          max_rows=max_rows)
        approx = [x * scale for x in attribution(forward, pair, clean, corrupt, found)]
    if fast:
        with torch.no_grad():
            logits = patched_logits(network, found, corrupt, clean, pair.answers, logits_corrupt.detach(), max_rows)
    exact = [(x - ld_corrupt) * scale for x in (logits[..., 0] - logits[..., 1]).mean(dim=1).tolist()]
    rows = [{"sender": run, "receiver": LOGITS, "input": "logit_diff", "method": "baseline", "effect": ld}
            for run, ld in (("clean", ld_clean), ("corrupt", ld_corrupt))]
    for method, values in (("exact", exact), ("attribution", approx)):
        rows += [{"sender": e.sender, "receiver": e.receiver, "input": e.input, "method": method, "effect": v}
                 for e, v in zip(found, values)]
    rows += [{"sender": "*", "receiver": "*", "input": metric, "method": "agreement", "effect": v}
             for metric, v in agreement(exact, approx).items()]
    return rows


PAGE_CAPTION = (
    "The computational graph (embeddings, heads, logits) with every edge's effect through Q, K or V by exact "
    "path patching (width/colour; hover: both estimators), a threshold to hide weak edges and a slider over "
    "checkpoints under the strategy curves."
)
PAGE_CAPTION_AGREEMENT = (
    "Edge attribution patching against exact path patching over training: Spearman correlation over all "
    "edges and overlap of the five largest edges, per pair."
)


class CircuitAnalysis(Analysis):
    name: ClassVar[str] = "circuit"
    title: ClassVar[str] = "Circuit"
    caption: ClassVar[str] = ("Edges of the computational graph (embeddings, heads, logits; through Q, K or V) "
                              "scored by exact path patching and edge attribution patching on each patching pair.")
    tables: ClassVar[dict] = {"circuit": SCHEMA}
    needs: ClassVar[tuple[str, ...]] = ("strategies",)  # the figure's strategy curves
    # opt-in: ~1-2.6 CPU-s per checkpoint with the fast exact path (docs/performance.md), on top of the defaults
    by_default: ClassVar[bool] = False
    settings_of: ClassVar[str] = "patching"  # its pairs are patching's (--patch-seqs)
    figures: ClassVar[tuple] = (
        Figure("circuit_{value}.html", "Circuit over training ({value})", PAGE_CAPTION,
               "coopetition.plots.circuit:figure", tables=("circuit", "strategies"), each="pair",
               values="coopetition.plots.circuit:pairs"),
        Figure("circuit_agreement.html", "Edge attribution vs path patching", PAGE_CAPTION_AGREEMENT,
               "coopetition.plots.circuit:agreement_figure"))

    def prepare(self) -> None:
        data = {k: d.head(self.settings.seqs) for k, d in self.context.data.items()}
        specs = self.context.run.evaluator_specs()
        self.pairs = build_pairs(data, specs) + build_pairs(data, specs, EXEMPLAR_PAIRS)

    def checkpoint_rows(self, checkpoint: Checkpoint) -> dict[str, list[dict]]:
        rows = []
        for pair in self.pairs:
            rows += [{"pair": pair.name, **r} for r in circuit_rows(self.context.forward, pair,
                                                                     self.config.max_rows)]
        return {"circuit": rows}
