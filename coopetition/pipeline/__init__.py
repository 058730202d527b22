"""The pipeline above ``analysis`` (what is computed) and ``plots`` (how a table is drawn): ``analyze`` runs compute ->
tables -> figures -> index.html; ``replot`` redraws an output folder from its tables; ``cli`` is the ``coopetition
analyze`` command. Which figures an analysis gets, and from which tables, the analysis declares
(``Analysis.figures``); the pipeline resolves the drawing functions they name and writes the pages.

The names below are imported on first use, so building the ``analyze`` parser does not import plotting code.
"""

from __future__ import annotations

import importlib

_WHERE = {"analyze": "run", "AnalysisResult": "run", "replot": "figures", "write_figures": "figures",
          "pages_for": "figures"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"coopetition.pipeline.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'coopetition.pipeline' has no attribute {name!r}")
