"""The full run config: one frozen dataclass per concern, serialised to ``config.json`` next to every run.

Configs come from a preset, a TOML/JSON file, or both, plus ``section.field=value`` overrides
(``train.lr=1e-3``, ``task.mixture.0.burstiness=2``). All checks live in the dataclasses' ``__post_init__``
plus ``RunConfig.__post_init__`` for cross-section rules.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dacite

from coopetition.bank import BankConfig
from coopetition.errors import ConfigError
from coopetition.interventions import CheckpointRef, Intervention, parse_spec, validated
from coopetition.model.config import ModelConfig
from coopetition.task.config import TaskConfig
from coopetition.task.evaluators import EvalConfig, check_pair_splits
from coopetition.train.config import SeedConfig, TrainConfig


MAX_BATCH_ACTIVATIONS = 1 << 31  # floats in one residual-stream activation of a batch (8 GiB): beyond it, a typo


@dataclass(frozen=True)
class RunConfig:
    bank: BankConfig = field(default_factory=BankConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seeds: SeedConfig = field(default_factory=SeedConfig)
    preset: str | None = None
    # active in every training step and evaluation, and in every analysis of the run (docs/interventions.md);
    # spec strings are accepted and parsed once, here
    interventions: tuple[Intervention, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "interventions", validated(tuple(self.interventions), self.model, training=True))
        n_tokens = 2 * self.task.context_len + 1
        if n_tokens > self.model.max_seq_len:
            raise ConfigError(f"context_len {self.task.context_len} needs {n_tokens} tokens "
                              f"> model.max_seq_len {self.model.max_seq_len}")
        longest = max(spec.sequence.context_len for spec in self.eval.evaluators())
        if 2 * longest + 1 > self.model.max_seq_len:
            raise ConfigError(f"eval.suite {self.eval.suite!r} has context_len {longest}, which needs "
                              f"{2 * longest + 1} tokens > model.max_seq_len {self.model.max_seq_len}")
        check_pair_splits(self.eval.evaluators(), self.task.mixture)
        for name, batch in (("train.batch_size", self.train.batch_size), ("eval.batch_size", self.eval.batch_size)):
            floats = batch * n_tokens * self.model.d_model
            if floats > MAX_BATCH_ACTIVATIONS:
                raise ConfigError(f"{name} {batch} x {n_tokens} tokens x d_model {self.model.d_model} is {floats:.1e} "
                                  f"floats per residual stream, more than the {MAX_BATCH_ACTIVATIONS:.1e} allowed")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; interventions and checkpoint references as their spec strings, so
        ``config_from_dict(c.to_dict()) == c``."""
        return _plain(self)


def _plain(value: Any) -> Any:
    if isinstance(value, Intervention):
        return value.spec
    if isinstance(value, CheckpointRef):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _NotAnInt:
    """What a bool becomes in an int field, so dacite reports it as a wrong type (JSON ``true`` is not 1)."""

    def __init__(self, value: bool) -> None:
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


def _int_to_float(value: Any) -> Any:
    """Let ``lr = 1`` mean 1.0 (TOML/JSON ints for float fields); anything else is left for dacite to reject."""
    if isinstance(value, bool):
        return _NotAnInt(value)
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return _NotAnInt(value)
    return value


def _no_bool(value: Any) -> Any:
    return _NotAnInt(value) if isinstance(value, bool) else value


def _spec(value: Any) -> Any:
    return parse_spec(value) if isinstance(value, str) else value


def _ref(value: Any) -> Any:
    return CheckpointRef.parse(value) if isinstance(value, str) else value


_DACITE = dacite.Config(strict=True, cast=[tuple], type_hooks={float: _int_to_float, int: _no_bool,
                                                              Intervention: _spec, CheckpointRef: _ref})


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build (and so validate) a RunConfig; unknown keys and wrong types become one-line ConfigErrors."""
    try:
        return dacite.from_dict(RunConfig, data, config=_DACITE)
    except dacite.UnexpectedDataError as err:
        raise ConfigError(f"unknown config key(s): {', '.join(sorted(err.keys))}") from None
    except dacite.WrongTypeError as err:
        raise ConfigError(f"config field {err.field_path} must be {_type_name(err.field_type)}, "
                          f"got {_short(err.value)}") from None
    except dacite.DaciteError as err:
        raise ConfigError(f"bad config: {_short(err, 200)}") from None
    except (TypeError, AttributeError, ValueError) as err:  # a section that is a list, a table for a tuple ...
        raise ConfigError(f"bad config: a section or field has the wrong shape ({_short(err, 120)})") from None


def _short(value: Any, limit: int = 60) -> str:
    text = " ".join(repr(value).split()) if not isinstance(value, BaseException) else " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text()
        return tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot parse config file {path}: {err}") from None


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict update (sections merge, leaves replace)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_value(text: str) -> Any:
    """Command-line values: JSON where it parses (numbers, true/false, null, lists), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_override(data: dict[str, Any], assignment: str) -> dict[str, Any]:
    """``"train.lr=1e-3"`` or ``"task.mixture.0.burstiness=2"`` applied to a config dict (a copy is returned)."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise ConfigError(f"override {assignment!r} must look like section.field=value")
    keys = path.strip().split(".")
    data = json.loads(json.dumps(data))
    node: Any = data
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(f"override {path!r}: {key!r} is not an index of a {len(node)}-item list")
            key = int(key)
        elif not isinstance(node, dict) or key not in node:
            raise ConfigError(f"override {path!r}: unknown field {key!r}")
        if last:
            node[key] = parse_value(raw)
        else:
            node = node[key]
    return data
