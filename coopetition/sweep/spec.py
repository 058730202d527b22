"""A sweep file (``SWEEP.toml``): base config, fixed overrides, a grid of values, where the runs go, how they run.

::

    name = "quick_seeds"                  # optional; default: the file's stem
    out = "checkpoints/sweeps/quick_seeds"   # optional (this is the default); relative to the working directory

    [base]
    preset = "quick"                      # optional (default quick), as `coopetition train --preset`
    config = "base.toml"                  # optional; relative to the sweep file; merged over the preset

    [set]                                 # fixed overrides of any config field, as `--set section.field=value`
    train.steps = 2000

    [grid]                                # dotted config paths -> lists of values; runs = their cartesian product
    seeds = [0, 1, 2, 3]                  # shorthand: seeds.init = seeds.train = each value
    train.lr = [1e-3, 3e-4]

    [executor]                            # submitit settings (docs/sweeps.md)
    cluster = "auto"                      # auto (Slurm if srun is on PATH, else local) | local | slurm | debug
    max_parallel = 2                      # runs at once (local), Slurm array parallelism
    slurm_partition = "gpu"               # any slurm_* parameter of submitit's SlurmExecutor

Reading a file validates its shape only; ``coopetition.sweep.expand`` builds and validates every point's config.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coopetition.errors import ConfigError

CLUSTERS = ("auto", "local", "slurm", "debug")
TOP_KEYS = ("name", "out", "base", "set", "grid", "executor")
DEFAULT_OUT = Path("checkpoints") / "sweeps"
NAME = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class ExecutorSpec:
    """How the runs are executed. ``timeout_min`` bounds one run (local and Slurm); ``threads`` is torch's CPU
    threads per run where the config leaves ``train.threads`` unset; ``slurm`` holds submitit's ``slurm_*``
    parameters without the prefix."""

    cluster: str = "auto"
    max_parallel: int = 2
    threads: int = 1
    timeout_min: int = 24 * 60
    cpus_per_task: int | None = None
    gpus_per_node: int | None = None
    mem_gb: float | None = None
    slurm: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cluster not in CLUSTERS:
            raise ConfigError(f"executor.cluster must be one of {', '.join(CLUSTERS)}, got {self.cluster!r}")
        for name in ("max_parallel", "threads", "timeout_min", "cpus_per_task", "gpus_per_node"):
            value = getattr(self, name)
            low = 0 if name in ("threads", "gpus_per_node") else 1
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                raise ConfigError(f"executor.{name} must be an integer >= {low}, got {value!r}")
        if self.mem_gb is not None and (isinstance(self.mem_gb, bool) or not isinstance(self.mem_gb, (int, float))
                                        or self.mem_gb <= 0):
            raise ConfigError(f"executor.mem_gb must be a number > 0, got {self.mem_gb!r}")


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file. ``grid`` keeps the file's axis order (run names list axes in that order)."""

    path: Path
    name: str
    out: Path
    preset: str
    config_file: Path | None
    overrides: dict[str, Any]
    grid: dict[str, list[Any]]
    executor: ExecutorSpec

    @property
    def logs(self) -> Path:
        """submitit's folder; ``%j`` becomes the job id (``ARRAY_INDEX`` on Slurm)."""
        return self.out / "submitit_logs" / "%j"


def read_sweep(path: Path, out: Path | None = None, cluster: str | None = None) -> SweepSpec:
    """Parse ``path``; ``out`` and ``cluster`` (the command line's) replace the file's values."""
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot parse sweep file {path}: {err}") from None
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"sweep file {path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(TOP_KEYS)}")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"sweep name must be letters, digits, '.', '_' or '-', got {name!r}")
    base = _table(data, "base")
    extra = sorted(set(base) - {"preset", "config"})
    if extra:
        raise ConfigError(f"[base] takes preset and config, got {', '.join(extra)}")
    preset = base.get("preset", "quick")
    config_file = path.parent / base["config"] if "config" in base else None
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"[base] config file not found: {config_file}")
    grid = flatten(_table(data, "grid"))
    if not grid:
        raise ConfigError(f"sweep file {path}: [grid] is missing or empty; give at least one axis, e.g. seeds = [0, 1]")
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid axis {axis!r} must be a non-empty list of values, got {values!r}")
        if len({_key(v) for v in values}) != len(values):
            raise ConfigError(f"grid axis {axis!r} repeats a value: {values!r}")
    if "seeds" in grid and {"seeds.init", "seeds.train"} & set(grid):
        raise ConfigError("grid: the seeds shorthand sets seeds.init and seeds.train; do not also list them")
    out_dir = out if out is not None else Path(data.get("out", DEFAULT_OUT / name))
    return SweepSpec(path=path, name=name, out=out_dir, preset=preset, config_file=config_file,
                     overrides=flatten(_table(data, "set")), grid=grid,
                     executor=executor_spec(_table(data, "executor"), cluster))


def executor_spec(table: dict[str, Any], cluster: str | None) -> ExecutorSpec:
    from submitit.slurm.slurm import SlurmExecutor

    known = set(ExecutorSpec.__dataclass_fields__) - {"slurm"}
    slurm_keys = SlurmExecutor._valid_parameters()
    plain, slurm = {}, {}
    for key, value in table.items():
        if key in known:
            plain[key] = value
        elif key.startswith("slurm_") and key[len("slurm_"):] in slurm_keys:
            slurm[key[len("slurm_"):]] = value
        else:
            raise ConfigError(f"[executor] unknown setting {key!r}; allowed: {', '.join(sorted(known))} "
                              f"and slurm_<name> for submitit's Slurm parameters ({', '.join(sorted(slurm_keys))})")
    if cluster is not None:
        plain["cluster"] = cluster
    return ExecutorSpec(**plain, slurm=slurm)


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": [..]}}`` (TOML's ``train.lr = [..]``) -> ``{"train.lr": [..]}``; quoted dotted keys pass
    through. Config leaves are never tables, so every nested table is a path."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"sweep file: {key} must be a table ([{key}]), got {value!r}")
    return value


def _key(value: Any) -> str:
    return repr(value)
