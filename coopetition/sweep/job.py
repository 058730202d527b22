"""What one submitit job runs. A top-level function of an importable module, so submitit can pickle it by name and
the job process (local subprocess or Slurm node) imports it from the installed package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUTCOME_FILE = "coopetition_outcome.json"


def run_point(config: dict[str, Any], run_dir: str | Path, resume: bool, overwrite: bool = False,
              threads: int = 0) -> dict[str, Any]:
    """Train one sweep point into ``run_dir`` (fresh, continued with ``resume``, or replacing an unresumable partial
    run with ``overwrite``). ``threads`` sets torch's CPU threads where the config leaves ``train.threads`` unset.
    Returns the final in-context accuracies (submitit pickles them into the job's result file), and also writes the
    outcome as JSON into the job's log folder: ``sweep status`` reads that, never submitit's pickles, so a shared
    sweep folder cannot make ``status`` run code."""
    import torch

    from coopetition.config import config_from_dict
    from coopetition.train.loop import train

    try:
        run_config = config_from_dict(config)
        if threads and run_config.train.threads is None:
            torch.set_num_threads(threads)
        result = train(run_config, Path(run_dir), overwrite=overwrite, resume=resume, progress=False)
    except BaseException as error:
        _write_outcome({"outcome": "failed", "error": f"{type(error).__name__}: {error}"})
        raise
    summary = {"run_dir": str(result.run_dir), "steps": result.steps, "wall_seconds": result.wall_seconds,
               "in_context_acc": {e: v for (e, m), v in result.final_eval.items() if m == "in_context_acc"}}
    _write_outcome({"outcome": "success", **summary})
    return summary


def _write_outcome(outcome: dict[str, Any]) -> None:
    """Record the job's outcome next to its submitit logs (nothing to do outside a submitit job, e.g. debug)."""
    import submitit

    from coopetition.store.atomic import atomic_write_text

    try:
        folder = submitit.JobEnvironment().paths.folder
    except RuntimeError:  # not inside a submitit job
        return
    atomic_write_text(Path(folder) / OUTCOME_FILE, json.dumps(outcome) + "\n")
