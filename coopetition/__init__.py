"""coopetition: train, checkpoint densely and dissect transformers on the ICL/IWL few-shot task.

``coopetition.Run`` opens a trained run from Python (README, "Python API"); it is imported on first use, so
``import coopetition`` stays light."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Run"]


def __getattr__(name: str) -> Any:
    if name == "Run":
        from coopetition.store.run import Run

        return Run
    raise AttributeError(f"module 'coopetition' has no attribute {name!r}")
