"""The spec grammar, config validation and the command-line helpers: bad specs are one-line ConfigErrors."""

import argparse
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from coopetition.config import apply_override, config_from_dict
from coopetition.errors import ConfigError
from coopetition.interventions import REGISTRY, Intervention, intervene, parse_spec
from coopetition.interventions.cli import (add_analyze_arguments, add_train_arguments, overrides_from_args,
                                           specs_from_args)
from coopetition.model import ModelConfig, build_model
from coopetition.presets import get_preset
from coopetition.train.config import TrainConfig

EXAMPLES = {
    "ablate": "ablate:0:1,0:4", "preserve": "preserve:keys+values:1", "ablate_embed": "ablate_embed",
    "induction": "induction:1:3:0.8", "match": "match:1:3:0.1", "prev_token": "prev_token:0:2:1.0:labels",
    "no_prev_token": "no_prev_token:0:*:labels", "copy": "copy:1:3", "temperature": "temperature:1:0,1:2:0.5",
    "silence": "silence:1:0,1:5", "graft_in": "graft_in:runs/main@last:0", "graft_out": "graft_out:runs/main@20000:0",
}


def test_every_registered_intervention_has_a_documented_example():
    assert set(REGISTRY) == set(EXAMPLES)
    for name, spec in EXAMPLES.items():
        assert parse_spec(spec).name == name and REGISTRY[name].usage


@pytest.mark.parametrize("spec, message", [
    ("ablate:3:9", "head 3:9 does not exist"),
    ("induction:1:3:1.5", "strength must be in [0, 1], got 1.5"),
    ("prev_token:0:2:-0.1", "strength must be in [0, 1]"),
    ("temperature:1:0:0", "temperature must be in (0,"),
    ("match:1:0:-1", "temperature must be in [0,"),
    ("ablate:1", "expected heads as LAYER:HEAD"),
    ("copy:1:*", "copies exactly one head"),
    ("preserve:patterns:2", "layer 2 does not exist"),
    ("graft_out:runs/main@20000:2", "layer 2 must be in [-1, 1]"),
    ("graft_out:runs/main:0", "RUN@STEP"),
    ("optogenetics:1", "unknown intervention 'optogenetics'"),
])
def test_bad_specs_are_rejected_by_the_config_with_one_line(spec, message):
    data = {**get_preset("quick").to_dict(), "interventions": [spec]}
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert message in str(err.value) and spec in str(err.value) and "\n" not in str(err.value)


def test_specs_are_recorded_in_the_config_as_given():
    config = config_from_dict({**get_preset("quick").to_dict(), "interventions": ["ablate:0:1", "preserve:patterns"]})
    assert config.interventions == ("ablate:0:1", "preserve:patterns")
    assert config.to_dict()["interventions"] == ("ablate:0:1", "preserve:patterns")
    assert get_preset("quick").interventions == () and get_preset("quick").train.init_from is None


def test_train_flags_become_overrides():
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args(["--intervene", "ablate:0:1", "--intervene", "induction:1:3:0.8",
                              "--init-from", "runs/ciwl@4000"])
    data = get_preset("quick").to_dict()
    for override in overrides_from_args(args):
        data = apply_override(data, override)
    config = config_from_dict(data)
    assert config.interventions == ("ablate:0:1", "induction:1:3:0.8")
    assert config.train.init_from == "runs/ciwl@4000"
    assert overrides_from_args(parser.parse_args([])) == []


def test_bad_flags_fail_when_parsed_not_after_training():
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    with pytest.raises(ConfigError, match="unknown intervention"):
        overrides_from_args(parser.parse_args(["--intervene", "clamp:1:3"]))
    with pytest.raises(ConfigError, match="RUN@STEP"):
        overrides_from_args(parser.parse_args(["--init-from", "runs/ciwl"]))
    with pytest.raises(ConfigError, match="step must be an integer"):
        TrainConfig(init_from="runs/ciwl@soon")


def test_analyze_flag():
    parser = argparse.ArgumentParser()
    add_analyze_arguments(parser)
    assert specs_from_args(parser.parse_args(["--intervene", "ablate:0:*"])) == ("ablate:0:*",)


def test_adding_an_intervention_is_adding_one_class():
    @dataclass(frozen=True)
    class Negate(Intervention):
        name: ClassVar[str] = "test_negate"
        usage: ClassVar[str] = "test_negate"

        @classmethod
        def parse(cls, args):
            return cls()

        def edit_logits(self, logits, inputs):
            return -logits

    try:
        model = build_model(ModelConfig(d_model=16, n_heads=2), 8, 10, 10, init_seed=0)
        exemplars, labels = torch.randn(3, 3, 8), torch.randint(0, 10, (3, 2))
        assert torch.equal(intervene(("test_negate",), model)(exemplars, labels), -model(exemplars, labels))
    finally:
        del REGISTRY["test_negate"]


@pytest.mark.parametrize("spec, message", [("ablate:3:9", "head 3:9 does not exist"),
                                           ("induction:1:3:2", "strength must be in [0, 1]")])
def test_cli_rejects_a_bad_spec_with_one_line_and_exit_code_2(tmp_path, capsys, spec, message):
    from coopetition.cli import main

    code = main(["train", "--preset", "quick", "--run-dir", str(tmp_path / "run"), "--set", f'interventions=["{spec}"]'])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
