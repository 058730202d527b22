"""Drawing functions for ``coopetition analyze``: each takes the DataFrames of the tables it draws (and, for a page per
evaluator or pair, that value) and returns a Plotly figure; ``common`` holds the shared styling and writing.

Nothing here knows the analyses: which figure an analysis gets is declared by the analysis (``Analysis.figures``,
naming a function here as ``"coopetition.plots.module:function"``), and the pipeline (``coopetition.pipeline``) calls
it. This package never imports ``coopetition.analysis``.
"""
