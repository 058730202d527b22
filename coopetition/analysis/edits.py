"""Many interventions in one batched forward pass.

A ``Variant`` is a list of ``Edit``s: "at hook point H, overwrite the part ``index`` of the activation with the same
part of ``source``". Zero ablation is a zero source, mean ablation a batch-mean source, resample ablation a
permuted clean cache, activation patching a cache from the other member of a clean/corrupted pair, and the
reference's "preserve patterns/values" clamps are the clean cache itself (``clamp=True``: a no-op until something
upstream changed). ``run_variants`` tiles the input once per variant (chunked to ``max_rows`` sequences) and
installs one TransformerLens hook per touched hook point that applies every variant's edits to its own block of
rows, so a whole head-by-method sweep costs a few forward passes. A variant whose first real edit is in block l
starts from the base run's cached ``blocks.{l}.hook_resid_pre`` instead of re-running the blocks before it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from coopetition.analysis.readout import label_logits, query_normalized, query_normalized_from
from coopetition.model import ICLTransformer
from coopetition.model.hooked import ActivationCache

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class Edit:
    """``act[:, *index] = source[:, *index]`` at ``hook``; ``source`` has the activation's shape for the batch's
    sequences (or 1 in the batch dim, broadcast). ``clamp``: the source is the base run's own activation."""

    hook: str
    source: Tensor
    index: tuple = ()
    clamp: bool = False

    @property
    def block(self) -> int:
        """The block the hook lives in; -1 for the embeddings."""
        match = _BLOCK.match(self.hook)
        return int(match.group(1)) if match else -1


@dataclass(frozen=True)
class Variant:
    """One intervention: its table labels (e.g. ``{"unit": "L1H3", "method": "zero"}``) and its edits."""

    labels: dict[str, Any]
    edits: tuple[Edit, ...] = field(default_factory=tuple)

    @property
    def start(self) -> int:
        """First block whose input can differ from the base run (-1: the embeddings)."""
        real = [e.block for e in self.edits if not e.clamp]
        return min(real) if real else 0


def _hooks_for(variants: list[Variant], n: int) -> list[tuple[str, Any]]:
    by_hook: dict[str, list[tuple[slice, Edit]]] = {}
    for i, variant in enumerate(variants):
        rows = slice(i * n, (i + 1) * n)
        for edit in variant.edits:
            by_hook.setdefault(edit.hook, []).append((rows, edit))

    def make(edits: list[tuple[slice, Edit]]):
        def hook(act: Tensor, hook=None) -> Tensor:
            for rows, edit in edits:
                act[(rows, *edit.index)] = edit.source[(slice(None), *edit.index)].to(act.dtype)
            return act
        return hook

    return [(name, make(edits)) for name, edits in by_hook.items()]


@torch.no_grad()
def run_variants(model: ICLTransformer, exemplars: Float[Tensor, "n item dim"], context_labels: Int[Tensor, "n ctx"],
                 readout: Int[Tensor, "n k"], variants: list[Variant], base: ActivationCache | None = None,
                 max_rows: int = 16384) -> Float[Tensor, "variant n k"]:
    """Logits of the ``readout`` labels under each variant, in order (same base input for all).

    ``base``: the cache of an unedited pass on the same input (it must hold ``hook_resid_pre`` of every block);
    without it every variant runs from the embeddings.
    """
    n = exemplars.shape[0]
    per_chunk = max(1, max_rows // n)
    starts = [v.start if base is not None else -1 for v in variants]
    if not variants:
        return readout.new_empty(0, n, readout.shape[1], dtype=torch.float)
    order, out = [], []
    for start in sorted(set(starts)):
        members = [i for i, s in enumerate(starts) if s == start]
        for first in range(0, len(members), per_chunk):
            chunk = members[first:first + per_chunk]
            g = len(chunk)
            with model.hooks(fwd_hooks=_hooks_for([variants[i] for i in chunk], n)):
                if start < 0:
                    normalized = query_normalized(model, exemplars.repeat(g, 1, 1), context_labels.repeat(g, 1))
                else:
                    residual = base[f"blocks.{start}.hook_resid_pre"].repeat(g, 1, 1)
                    normalized = query_normalized_from(model, residual, start)
            out.append(label_logits(model, normalized, readout.repeat(g, 1)).view(g, n, -1))
            order += chunk
    # concatenated, not written into a preallocated tensor, so that it also runs under torch.func.vmap
    return torch.cat(out)[torch.tensor(order, device=readout.device).argsort()]
