"""coopetition: train, checkpoint densely and dissect transformers on the ICL/IWL few-shot task."""

__version__ = "0.1.0"
