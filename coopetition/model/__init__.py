"""The sequence classifier: a TransformerLens HookedTransformer fed interleaved exemplar/label tokens.

``ICLTransformer`` and ``build_model`` are imported on first use (PEP 562): importing TransformerLens costs ~7 CPU-s,
and config validation, ``sweep status`` or ``presets`` only need ``ModelConfig``.
"""

from typing import Any

from coopetition.model.config import ModelConfig

__all__ = ["ModelConfig", "ActivationCache", "ICLTransformer", "build_model", "slice_cache", "splice"]


def __getattr__(name: str) -> Any:
    if name in ("ActivationCache", "ICLTransformer", "build_model", "slice_cache", "splice"):
        from coopetition.model import hooked

        return getattr(hooked, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
