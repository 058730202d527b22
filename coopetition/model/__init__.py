"""The sequence classifier: a TransformerLens HookedTransformer fed interleaved exemplar/label tokens."""

from coopetition.model.config import ModelConfig
from coopetition.model.hooked import ICLTransformer, build_model

__all__ = ["ModelConfig", "ICLTransformer", "build_model"]
