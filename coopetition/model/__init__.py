"""The sequence classifier: our own TransformerLens ``HookedRootModule`` fed interleaved exemplar/label tokens.

``ICLTransformer`` and ``build_model`` are imported on first use (PEP 562): they import TransformerLens (2.5-4.5
CPU-s, docs/model.md), and config validation, ``--help``, ``sweep status`` or ``presets`` only need ``ModelConfig``
and the hook-name vocabulary (``coopetition.model.sites``), which import neither torch nor TransformerLens.
"""

from typing import Any

from coopetition.model.config import ModelConfig

__all__ = ["ModelConfig", "ActivationCache", "ICLTransformer", "build_model", "slice_cache", "splice"]


def __getattr__(name: str) -> Any:
    if name in ("ActivationCache", "ICLTransformer", "build_model", "slice_cache", "splice"):
        from coopetition.model import hooked

        return getattr(hooked, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
