"""*Where* in the network: typed sites and the hook names they stand for. Hook names are spelled here (and by the
modules that register them, ``model/components.py`` and ``model/hooked.py``) and nowhere else in the package:
``tests/test_hook_names.py`` parses the code and fails on a hook name built by string formatting outside
``coopetition/model/``. Importing this module costs nothing (no torch, no TransformerLens), so interventions can
name their sites while a config is only being validated.

Kinds and their names (layers 0-indexed, as in TransformerLens):

- embeddings (no layer): ``embed`` -> ``hook_embed`` (interleaved token embeddings), ``pos_embed`` ->
  ``hook_pos_embed``, ``exemplar_embed`` -> ``embed.hook_exemplar_embed``, ``label_embed`` -> ``embed.hook_label_embed``,
  ``ln_final_scale`` / ``ln_final_normalized`` -> ``ln_final.hook_scale`` / ``ln_final.hook_normalized``;
- per block: ``resid_pre``, ``resid_mid``, ``resid_post``, ``attn_out``, ``mlp_out``, and with ``per_head_hooks``
  ``q_input``, ``k_input``, ``v_input`` -> ``blocks.{l}.hook_{kind}``; ``ln1_scale`` ... -> ``blocks.{l}.ln1.hook_scale``;
- per attention layer: ``q``, ``k``, ``v``, ``rot_q``, ``rot_k``, ``attn_scores``, ``pattern``, ``z`` and (with
  ``per_head_hooks``) ``result`` -> ``blocks.{l}.attn.hook_{kind}``; ``pre``, ``post`` -> ``blocks.{l}.mlp.hook_{kind}``.
"""

from __future__ import annotations

from dataclasses import dataclass

GLOBAL = {"embed": "hook_embed", "pos_embed": "hook_pos_embed", "exemplar_embed": "embed.hook_exemplar_embed",
          "label_embed": "embed.hook_label_embed", "ln_final_scale": "ln_final.hook_scale",
          "ln_final_normalized": "ln_final.hook_normalized"}
BLOCK = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "q_input", "k_input", "v_input", "attn_in",
         "mlp_in")
ATTENTION = ("q", "k", "v", "rot_q", "rot_k", "attn_scores", "pattern", "z", "result")
MLP = ("pre", "post")
NORM = ("ln1_scale", "ln1_normalized", "ln2_scale", "ln2_normalized")
KINDS = (*GLOBAL, *BLOCK, *ATTENTION, *MLP, *NORM)


@dataclass(frozen=True)
class Site:
    """A hook kind, its layer (None for the embeddings and the final LayerNorm), and optionally which heads and
    positions of the activation are meant (carried for the caller; the hook name does not depend on them)."""

    kind: str
    layer: int | None = None
    heads: tuple[int, ...] | None = None
    positions: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown site kind {self.kind!r}; one of {', '.join(KINDS)}")
        if (self.kind in GLOBAL) != (self.layer is None):
            raise ValueError(f"site {self.kind!r} {'takes no' if self.kind in GLOBAL else 'needs a'} layer")

    @property
    def name(self) -> str:
        """The TransformerLens hook name, e.g. ``blocks.1.attn.hook_pattern``."""
        if self.kind in GLOBAL:
            return GLOBAL[self.kind]
        if self.kind in BLOCK:
            return f"blocks.{self.layer}.hook_{self.kind}"
        if self.kind in ATTENTION:
            return f"blocks.{self.layer}.attn.hook_{self.kind}"
        if self.kind in MLP:
            return f"blocks.{self.layer}.mlp.hook_{self.kind}"
        norm, part = self.kind.split("_")
        return f"blocks.{self.layer}.{norm}.hook_{part}"


def hook_name(kind: str, layer: int | None = None) -> str:
    """The hook name of ``Site(kind, layer)``."""
    return Site(kind, layer).name


def residual_entering(start: int, n_layers: int) -> str:
    """The residual stream entering block ``start``: ``blocks.{start}.hook_resid_pre``, or for ``start = n_layers``
    the stream the final LayerNorm reads, ``blocks.{n_layers - 1}.hook_resid_post``."""
    return hook_name("resid_pre", start) if start < n_layers else hook_name("resid_post", n_layers - 1)


def hook_block(name: str) -> int:
    """The block a hook point lives in: -1 for the embeddings, n for ``blocks.n.*``, a large number after them."""
    if name.startswith(("hook_embed", "hook_pos_embed", "embed.")):
        return -1
    parts = name.split(".")
    if parts[0] == "blocks" and len(parts) > 1 and parts[1].isdigit():
        return int(parts[1])
    return 1 << 30
