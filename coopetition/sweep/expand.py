"""Grid -> points: one fully resolved, validated config and one readable run dir per combination of grid values.

Every point is built and validated (``RunConfig`` and its schedules) before anything is written or submitted, so one
bad value is one ``ConfigError`` naming the point.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coopetition.bank import SYNTHETIC
from coopetition.config import apply_override, config_from_dict, merge, read_config_file
from coopetition.errors import ConfigError
from coopetition.presets import get_preset
from coopetition.sweep.spec import SweepSpec
from coopetition.train.schedule import schedule_steps

SEED_AXES = ("seeds", "seeds.init", "seeds.train", "seeds.eval")
SHORTHAND = {"seeds": ("seeds.init", "seeds.train")}
UNSAFE = re.compile(r"[^A-Za-z0-9._=+,-]")


@dataclass(frozen=True)
class Point:
    """One run of the sweep: its grid values (axis -> value, file order), resolved config and run dir."""

    name: str
    values: dict[str, Any]
    config: dict[str, Any]
    run_dir: Path

    @property
    def group(self) -> str:
        """The point without its seed axes: what the summary averages over seeds within."""
        return point_name({a: v for a, v in self.values.items() if a not in SEED_AXES}) or "all"


def base_config(spec: SweepSpec) -> dict[str, Any]:
    """Preset, then the [base] config file, then the fixed [set] overrides (as `coopetition train`)."""
    data = get_preset(spec.preset).to_dict()
    if spec.config_file is not None:
        data = merge(data, read_config_file(spec.config_file))
    for path, value in spec.overrides.items():
        data = _assign(data, path, value, "[set]")
    return data


def expand(spec: SweepSpec) -> list[Point]:
    """The cartesian product of the grid in file order (the last axis varies fastest)."""
    base = base_config(spec)
    points, names = [], {}
    for combo in itertools.product(*spec.grid.values()):
        values = dict(zip(spec.grid, combo))
        name = point_name(values)
        data = base
        for axis, value in values.items():
            for path in SHORTHAND.get(axis, (axis,)):
                data = _assign(data, path, value, "grid")
        config = validated(data, name)
        if name in names:
            raise ConfigError(f"grid points {names[name]} and {values} share the run name {name!r}")
        names[name] = values
        points.append(Point(name, values, config, spec.out / "runs" / name))
    return points


def validated(data: dict[str, Any], name: str) -> dict[str, Any]:
    """The config as ``config.json`` will hold it; any bad value (or a missing bank / eval-sets file, which a job
    would only find out about on its node) is a ConfigError naming the point."""
    try:
        config = config_from_dict(data)
        for what, file in (("bank.source", config.bank.source), ("eval.import_path", config.eval.import_path)):
            if file is not None and file != SYNTHETIC and not Path(file).is_file():
                raise ConfigError(f"{what} file not found: {file}")
        tc = config.train
        schedule_steps(tc.checkpoint_schedule, tc.steps, tc.batch_size)
        if tc.eval_schedule:
            schedule_steps(tc.eval_schedule, tc.steps, tc.batch_size)
    except ConfigError as err:
        raise ConfigError(f"sweep point {name}: {err}") from None
    return config.to_dict()


def point_name(values: dict[str, Any]) -> str:
    """``{"seeds.init": 3, "train.lr": 0.001}`` -> ``seeds.init=3__train.lr=0.001`` (safe as a folder name)."""
    return "__".join(UNSAFE.sub("-", f"{axis}={format_value(value)}") for axis, value in values.items())


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def _assign(data: dict[str, Any], path: str, value: Any, where: str) -> dict[str, Any]:
    try:
        return apply_override(data, f"{path}={json.dumps(value)}")
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
