"""Sweeps: a grid over seeds and config fields, one run dir per point, executed through submitit (Slurm, or its
local executor), resumable, aggregated into one tidy table and a mean ± spread figure. See docs/sweeps.md.

``spec`` reads SWEEP.toml, ``expand`` turns it into validated points, ``job.run_point`` is what each submitit job
runs, ``run`` plans and submits, ``state`` says where each point stands, ``aggregate`` and ``figure`` summarise.
"""

from coopetition.sweep.job import run_point

__all__ = ["run_point"]
