"""Hostile input at the boundary (hypothesis): random configs and random command lines either fail cleanly (a
``ConfigError`` / exit code 2, one line, the run dir exactly as before) or make a valid run; never a traceback and
never a partial run directory.

The default profile keeps to a few seconds per test; ``-m slow`` runs the same properties with many more examples.
Each test prints how many examples it tried.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coopetition.cli import main
from coopetition.config import RunConfig, config_from_dict
from coopetition.errors import ConfigError
from coopetition.presets import PRESETS, get_preset
from coopetition.store.reader import RunReader
from tests.conftest import tiny_run_config

CONFIG_EXAMPLES, CONFIG_EXAMPLES_SLOW = 300, 5000
CLI_EXAMPLES, CLI_EXAMPLES_SLOW = 40, 600
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)

# ---------------------------------------------------------------------------------------------------- values
SPECIAL_INTS = [0, 1, 2, -1, 2**31, 2**32, 2**63, -(2**63), 10**20]
SPECIAL_FLOATS = [0.0, -0.0, 1e-3, 1.0, 10.0, 1e308, -1e-3, math.nan, math.inf, -math.inf]
small_ints = st.integers(-3, 8) | st.sampled_from(SPECIAL_INTS)
floats = st.sampled_from(SPECIAL_FLOATS) | st.floats(-10, 10, allow_nan=False)
texts = st.sampled_from(["", "cpu", "cuda", "cuda:0", "cuda:x", "every:1", "every:0", "log:3", "at:1,2",
                         "upsample:0:2:1", "synthetic", "train", "test", "flip", "fewshot", "none", "learned",
                         "rotary", "l2", "ctx8", "1e-3", "nan", "-1", "every:1G", "every:1seq+log:2"]) \
    | st.text(max_size=12)
scalars = st.none() | st.booleans() | small_ints | floats | texts
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=3),
                      max_leaves=6)


def leaf_paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    if isinstance(data, dict):
        return [prefix] * bool(prefix) + [p for k, v in data.items() for p in leaf_paths(v, (*prefix, k))]
    if isinstance(data, list):
        return [prefix] + [p for i, v in enumerate(data) for p in leaf_paths(v, (*prefix, i))]
    return [prefix]


def mutate(data: dict, path: tuple, how: str, value: Any) -> dict:
    data = json.loads(json.dumps(data))
    node = data
    for key in path[:-1]:
        node = node[key]
    key = path[-1]
    if how == "delete" and isinstance(node, dict):
        del node[key]
    elif how == "unknown" and isinstance(node, dict):
        node[f"{key}_typo"] = value
    else:
        node[key] = value
    return data


BASES = [tiny_run_config().to_dict(), *(get_preset(name).to_dict() for name in PRESETS)]


@st.composite
def mutated_configs(draw) -> dict:
    data = draw(st.sampled_from(BASES))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(leaf_paths(data)))
        data = mutate(data, path, draw(st.sampled_from(["set", "set", "delete", "unknown"])), draw(values))
    return data


def check_config(data: dict, tried: list) -> None:
    tried.append(1)
    try:
        config = config_from_dict(data)
    except ConfigError as err:
        assert "\n" not in str(err) and str(err), err
        return
    assert isinstance(config, RunConfig)
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config  # a valid config is stable


def run_config_fuzz(examples: int) -> int:
    tried: list = []
    settings(max_examples=examples, **SETTINGS)(given(mutated_configs())(lambda data: check_config(data, tried)))()
    return len(tried)


def test_random_config_mutations_are_valid_or_one_config_error():
    n = run_config_fuzz(CONFIG_EXAMPLES)
    print(f"config fuzz: {n} examples")
    assert n >= CONFIG_EXAMPLES // 2


@pytest.mark.slow
def test_random_config_mutations_many():
    print(f"config fuzz (slow): {run_config_fuzz(CONFIG_EXAMPLES_SLOW)} examples")


# ---------------------------------------------------------------------------------------------------- command lines
TINY = tiny_run_config(steps=2, checkpoint_schedule="every:1", eval_schedule="every:2")
SET_PATHS = [".".join(map(str, p)) for p in leaf_paths(TINY.to_dict())] + ["train.nope", "bank", "task.mixture.5"]
cli_ints = st.integers(-2, 4).map(str) | st.sampled_from(["1e3", "2**3", "", "x", "-0", "99999999999999999999"])
cli_floats = st.sampled_from(["1e-3", "0", "-1", "nan", "inf", "1e400", "abc", "0.5"])
flag = st.one_of(
    st.tuples(st.sampled_from(["--lr", "--weight-decay"]), cli_floats),
    st.tuples(st.sampled_from(["--steps", "--batch-size", "--threads", "--seed", "--train-seed", "--eval-seed",
                               "--exemplars"]), cli_ints),
    st.tuples(st.just("--classes"), st.integers(-2, 60).map(str) | cli_ints),
    st.tuples(st.sampled_from(["--checkpoints", "--evals", "--device", "--bank", "--eval-sets", "--preset",
                               "--intervene", "--init-from"]),
              texts.filter(lambda t: not t.startswith("-")) | st.sampled_from(["ablate:0:1", "ablate:9:9",
                                                                               "quick", "x@1"])),
    st.tuples(st.just("--set"), st.builds(lambda p, v: f"{p}={v}", st.sampled_from(SET_PATHS),
                                          scalars.map(lambda v: json.dumps(v)) | texts)),
    st.tuples(st.sampled_from(["--overwrite", "--resume", "--no-progress", "--bogus"])),
    st.tuples(st.text(max_size=6)),
)
argv_lists = st.lists(flag, max_size=4).map(lambda flags: [a for f in flags for a in f])


def snapshot(path: Path) -> dict[str, bytes] | None:
    if not path.exists():
        return None
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def check_cli(extra: list[str], workdir: Path, config_file: Path, tried: list, outcomes: dict) -> None:
    tried.append(1)
    run = workdir / "run"
    shutil.rmtree(run, ignore_errors=True)
    argv = ["train", "--run-dir", str(run), "--config", str(config_file), "--no-progress", *extra]
    threads, err = torch.get_num_threads(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    finally:
        torch.set_num_threads(threads)
    outcomes[code] = outcomes.get(code, 0) + 1
    assert code in (0, 2), (argv, err.getvalue())
    if code == 2:
        lines = [line for line in err.getvalue().strip().split("\n") if not line.startswith("coopetition: warning")]
        assert len(lines) == 1 and "Traceback" not in err.getvalue(), err.getvalue()
        assert snapshot(run) is None, f"{argv} left {snapshot(run)}"
    else:
        reader = RunReader.open(run)
        config = config_from_dict(reader.config()["config"])
        steps = [c.step for c in reader.checkpoints(verify=True)]
        assert steps[0] == 0 and steps[-1] == config.train.steps and not (run / ".lock").exists()


def run_cli_fuzz(examples: int) -> tuple[int, dict]:
    tried: list = []
    outcomes: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config_file = workdir / "tiny.json"
        config_file.write_text(json.dumps(TINY.to_dict()))
        settings(max_examples=examples, **SETTINGS)(
            given(argv_lists)(lambda extra: check_cli(extra, workdir, config_file, tried, outcomes)))()
    return len(tried), outcomes


@pytest.mark.e2e
def test_random_command_lines_exit_0_or_2_and_never_leave_a_partial_run():
    n, outcomes = run_cli_fuzz(CLI_EXAMPLES)
    print(f"CLI fuzz: {n} examples, exit codes {outcomes}")
    assert outcomes.get(0, 0) >= 1 and outcomes.get(2, 0) >= 1


@pytest.mark.slow
def test_random_command_lines_many():
    n, outcomes = run_cli_fuzz(CLI_EXAMPLES_SLOW)
    print(f"CLI fuzz (slow): {n} examples, exit codes {outcomes}")
