"""Activation patching and attribution patching on clean/corrupted pairs (``pairs.py``).

Metric: the logit difference LD = logit(clean answer) - logit(corrupted answer), averaged over the pair's
sequences, normalised as (LD_patched - LD_corrupt) / (LD_clean - LD_corrupt): 1 means the patched activation
alone restores the clean behaviour, 0 means it carries none of it. When the clean and corrupted runs differ by
less than ``MIN_GAP`` logits the ratio is undefined and reported as NaN (the raw LDs are in the table).

Exact patching runs the corrupted input with one clean activation written in (the ``patch`` intervention, one
variant per site; computed by ``interventions.patches.patched_logits``, the same function as one hooked pass per site
through ``Intervened.run_variants`` without rerunning whole blocks, which it falls back to where the run's own hook
interventions are on):
``resid`` at every layer boundary x position (``layer`` L = after the last block), ``z`` (head output) per head over
all positions (``position`` -1) and per position, and ``q``/``k``/``v``/``pattern`` per head. Attribution patching
(Nanda 2023) estimates every one of those effects at once from one forward and one backward pass on the corrupted
input: effect ~ sum grad(LD) * (clean - corrupted activation). ``agreement`` rows compare the two on per-head
``z``: Spearman rank correlation, sign agreement on the three largest exact effects, and whether the top head is
the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch

from coopetition.analysis.base import Analysis, Checkpoint, Figure
from coopetition.analysis.pairs import PatchPair, build_pairs
from coopetition.errors import ConfigError
from coopetition.interventions import Intervened, Patch
from coopetition.interventions import patches as fast_patches
from coopetition.model.sites import hook_name, residual_entering
from coopetition.tables import FLOAT, INT, STR

if TYPE_CHECKING:  # TransformerLens is imported on first use (coopetition.model)
    from coopetition.model import ActivationCache

MIN_GAP = 0.1
HEAD_PARTS = ("z", "q", "k", "v", "pattern")


def resid_points(n_layers: int) -> list[tuple[int, str]]:
    """(layer index in the table, hook name): the residual before each block and after the last."""
    return [(l, residual_entering(l, n_layers)) for l in range(n_layers + 1)]


def _where(component: str, layer: int, head: int = -1, position: int = -1) -> dict:
    return {"component": component, "layer": layer, "head": head, "position": position}


def patch_variants(n_layers: int, n_heads: int, n_pos: int) -> list[tuple[dict, Patch]]:
    """Every site patched, as ``(table labels, patch)``; ``position`` -1 = every position."""
    variants = [(_where("resid", l, -1, p), Patch("resid", l, None, p)) for l in range(n_layers + 1)
                for p in range(n_pos)]
    for l in range(n_layers):
        for h in range(n_heads):
            variants.append((_where("z", l, h), Patch("z", l, h)))
            variants += [(_where("z", l, h, p), Patch("z", l, h, p)) for p in range(n_pos)]
            variants += [(_where(part, l, h), Patch(part, l, h)) for part in ("q", "k", "v", "pattern")]
    return variants


def _normalise(ld: float, ld_clean: float, ld_corrupt: float) -> float:
    gap = ld_clean - ld_corrupt
    return (ld - ld_corrupt) / gap if abs(gap) >= MIN_GAP else float("nan")


def attribution(forward: Intervened, pair: PatchPair, clean: ActivationCache,
                corrupt: ActivationCache) -> dict[str, torch.Tensor]:
    """Per-hook grad(mean LD) * (clean - corrupt), unreduced (shape of the activation), through the analysed
    network (the run's interventions on)."""
    n_layers = forward.network.cfg.n_layers
    names = [name for _, name in resid_points(n_layers)] + [
        hook_name(part, l) for l in range(n_layers) for part in HEAD_PARTS]
    with torch.enable_grad():
        exemplars = pair.corrupt.exemplars.clone().requires_grad_(True)  # so every activation carries a graph
        logits, acts = forward.capture(exemplars, pair.corrupt.context_labels, pair.corrupt.target, names,
                                       labels=pair.answers)
        ld = (logits[:, 0] - logits[:, 1]).mean()
        grads = torch.autograd.grad(ld, [acts[n] for n in names], allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(acts[n])) * (clean[n] - corrupt[n]).detach()
            for n, g in zip(names, grads)}


def _attribution_rows(n_layers: int, attr: dict[str, torch.Tensor], gap: float) -> list[dict]:
    scale = 1.0 / gap if abs(gap) >= MIN_GAP else float("nan")
    rows = []
    for l, name in resid_points(n_layers):
        per_pos = attr[name].sum(dim=(0, 2))
        rows += [{**_where("resid", l, -1, p), "value": float(v) * scale} for p, v in enumerate(per_pos)]
    for l in range(n_layers):
        z = attr[hook_name("z", l)]  # [batch, pos, head, d_head]
        for h, v in enumerate(z.sum(dim=(0, 1, 3))):
            rows.append({**_where("z", l, h), "value": float(v) * scale})
        for (p, h), v in zip(((p, h) for p in range(z.shape[1]) for h in range(z.shape[2])),
                             z.sum(dim=(0, 3)).flatten()):
            rows.append({**_where("z", l, h, p), "value": float(v) * scale})
        for part in ("q", "k", "v"):
            for h, v in enumerate(attr[hook_name(part, l)].sum(dim=(0, 1, 3))):
                rows.append({**_where(part, l, h), "value": float(v) * scale})
        for h, v in enumerate(attr[hook_name("pattern", l)].sum(dim=(0, 2, 3))):
            rows.append({**_where("pattern", l, h), "value": float(v) * scale})
    return rows


def _ranks(x: torch.Tensor) -> torch.Tensor:
    return x.argsort().argsort().double()


def agreement(exact: list[float], approx: list[float], top: int = 3) -> dict[str, float]:
    """Spearman correlation, sign agreement on the ``top`` largest |exact| effects, and top-1 identity."""
    e, a = torch.tensor(exact, dtype=torch.double), torch.tensor(approx, dtype=torch.double)
    if torch.isnan(e).any() or torch.isnan(a).any() or len(e) < 2:
        return {"spearman": float("nan"), f"sign_agree_top{top}": float("nan"), "top1_match": float("nan")}
    re, ra = _ranks(e) - _ranks(e).mean(), _ranks(a) - _ranks(a).mean()
    spearman = float((re * ra).sum() / (re.norm() * ra.norm())) if re.norm() > 0 and ra.norm() > 0 else float("nan")
    order = e.abs().argsort(descending=True)[:top]
    sign = float((torch.sign(e[order]) == torch.sign(a[order])).double().mean())
    return {"spearman": spearman, f"sign_agree_top{top}": sign,
            "top1_match": float(e.abs().argmax() == a.abs().argmax())}


def patching_rows(forward: Intervened, pair: PatchPair, clean: ActivationCache, clean_logits: torch.Tensor,
                  corrupt: ActivationCache, corrupt_logits: torch.Tensor, max_rows: int) -> list[dict]:
    """Rows ``kind, component, layer, head, position, metric, value`` for one checkpoint and pair."""
    def ld(full_logits: torch.Tensor) -> float:
        picked = full_logits.detach().gather(1, pair.answers)
        return float((picked[:, 0] - picked[:, 1]).mean())

    cfg = forward.network.cfg
    ld_clean, ld_corrupt = ld(clean_logits), ld(corrupt_logits)
    rows = [{"kind": "baseline", **_where(run, -1), "metric": "logit_diff", "value": value}
            for run, value in (("clean", ld_clean), ("corrupt", ld_corrupt))]
    n_pos = pair.corrupt.classes.shape[1] * 2 - 1
    variants = patch_variants(cfg.n_layers, cfg.n_heads, n_pos)
    patches = [patch for _, patch in variants]
    if fast_patches.usable(forward, patches):  # the same logits without a hooked pass per site
        reference = corrupt_logits.detach().gather(1, pair.answers)
        logits = fast_patches.patched_logits(forward.network, patches, corrupt, clean, pair.answers, reference,
                                             max_rows)
    else:
        logits = forward.run_variants(pair.corrupt.exemplars, pair.corrupt.context_labels, pair.corrupt.target,
                                      [(patch,) for patch in patches], pair.answers, baseline=corrupt, source=clean,
                                      max_rows=max_rows)
    patched = (logits[..., 0] - logits[..., 1]).mean(dim=1).tolist()
    exact = [{"kind": "exact", **labels, "metric": "normalized_logit_diff",
              "value": _normalise(x, ld_clean, ld_corrupt)} for (labels, _), x in zip(variants, patched)]
    approx = [{"kind": "attribution", **r, "metric": "normalized_logit_diff"}
              for r in _attribution_rows(cfg.n_layers, attribution(forward, pair, clean, corrupt),
                                         ld_clean - ld_corrupt)]
    heads = lambda rows: [r["value"] for r in rows if r["component"] == "z" and r["position"] == -1]  # noqa: E731
    agree = agreement(heads(exact), heads(approx))
    rows += exact + approx
    rows += [{"kind": "agreement", **_where("z", -1), "metric": m, "value": v} for m, v in agree.items()]
    return rows


PAGE_CAPTION_POSITIONS = (
    "Normalised logit difference restored by patching one clean activation into the corrupted run: residual "
    "stream per layer boundary x token position (top) and each head's output per position (bottom), one "
    "column per clean/corrupted pair; the slider picks the checkpoint. Blue: restores the clean answer "
    "(helps it); red: pushes towards the corrupted one. Grey: too small a clean/corrupted gap to read."
)
PAGE_CAPTION_HEADS = (
    "Per-head patching over training: head output (z), queries, keys, values or attention pattern of each "
    "head, exact or attribution (gradient) estimate (menu), one column per pair."
)
PAGE_CAPTION_ATTRIBUTION = (
    "Attribution patching against exact patching for every head's output at every checkpoint (top) and their "
    "agreement over training (bottom: Spearman rank correlation; sign agreement on the three largest "
    "effects)."
)


@dataclass(frozen=True)
class PatchingSettings:
    """The first ``seqs`` sequences of each evaluator form the patching pairs (~175 variants per pair; the
    normalised logit difference is a ratio of means, stable at a few dozen sequences). The ``circuit`` analysis
    reads these too."""

    seqs: int = field(default=64, metadata={"help": "sequences per patching pair (patching and circuit)"})

    def __post_init__(self) -> None:
        if self.seqs < 2:
            raise ConfigError(f"analysis patching.seqs (--patch-seqs) must be >= 2, got {self.seqs}")


class PatchingAnalysis(Analysis):
    name: ClassVar[str] = "patching"
    title: ClassVar[str] = "Activation patching"
    caption: ClassVar[str] = ("Exact activation patching (one site from the clean run into the corrupted run) and "
                              "attribution patching, on clean/corrupted pairs built from the evaluators.")
    tables: ClassVar[dict] = {"patching": {"step": INT, "sequences": INT, "pair": STR, "kind": STR, "component": STR,
                                           "layer": INT, "head": INT, "position": INT, "metric": STR, "value": FLOAT}}
    Settings = PatchingSettings
    flag_prefix: ClassVar[str] = "patch"
    figures: ClassVar[tuple] = (
        Figure("patching_positions.html", "Activation patching by position", PAGE_CAPTION_POSITIONS,
               "coopetition.plots.patching:positions_figure"),
        Figure("patching_heads.html", "Per-head patching over training", PAGE_CAPTION_HEADS,
               "coopetition.plots.patching:heads_figure"),
        Figure("patching_attribution.html", "Attribution vs exact patching", PAGE_CAPTION_ATTRIBUTION,
               "coopetition.plots.patching:attribution_figure"))

    def prepare(self) -> None:
        data = self.context.data
        self.pairs = build_pairs({k: d.head(self.settings.seqs) for k, d in data.items()},
                                 self.context.run.evaluator_specs())

    def checkpoint_rows(self, checkpoint: Checkpoint) -> dict[str, list[dict]]:
        rows = []
        for pair in self.pairs:
            clean_logits, clean = checkpoint.baseline(pair.clean)
            corrupt_logits, corrupt = checkpoint.baseline(pair.corrupt)
            found = patching_rows(self.context.forward, pair, clean, clean_logits, corrupt, corrupt_logits,
                                  self.config.max_rows)
            rows += [{"pair": pair.name, **r} for r in found]
        return {"patching": rows}
