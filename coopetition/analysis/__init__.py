"""Dissect a trained run across checkpoints: strategy curves, ablations, patching, probes, progress measures.

Each analysis is one self-describing class (``base.py``; plug-ins through ``registry.py``); ``runner.compute`` is the
compute engine. The entry point that also writes tables and figures is ``coopetition.pipeline.analyze`` (the
``coopetition analyze`` command calls it).
"""
