"""Dissect a trained run across checkpoints: strategy curves, ablations, patching, probes, progress measures.

Entry point: ``coopetition.analysis.runner.analyze`` (the ``coopetition analyze`` command calls it).
"""
