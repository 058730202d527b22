"""The spec grammar, config validation and the command-line helpers: bad specs are one-line ConfigErrors."""

import argparse
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from coopetition.config import config_from_dict
from coopetition.errors import ConfigError
from coopetition.interventions import REGISTRY, Intervention, intervene, parse_spec
from coopetition.interventions.cli import (add_analyze_arguments, add_train_arguments, init_from_arg,
                                           interventions_from_args)
from coopetition.model import ModelConfig, build_model
from coopetition.presets import get_preset
from coopetition.train.config import TrainConfig

EXAMPLES = {
    "ablate": "ablate:0:1,0:4", "preserve": "preserve:keys+values:1", "ablate_embed": "ablate_embed",
    "induction": "induction:1:3:0.8", "match": "match:1:3:0.1", "prev_token": "prev_token:0:2:1.0:labels",
    "no_prev_token": "no_prev_token:0:*:labels", "copy": "copy:1:3", "temperature": "temperature:1:0,1:2:0.5",
    "silence": "silence:1:0,1:5", "graft_in": "graft_in:runs/main@last:0", "graft_out": "graft_out:runs/main@20000:0",
    "patch": "patch:z:1:3@4",
}
MORE = ["ablate:1:*:mean", "ablate:0:0,1:2:resample", "preserve:patterns", "prev_token:0:2:0.25", "patch:resid:2",
        "patch:resid:0@3", "patch:pattern:1:0", "temperature:0:*:2.5", "no_prev_token:0:1", "induction:1:0,1:1:0"]


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


@pytest.mark.parametrize("spec", [*EXAMPLES.values(), *MORE])
def test_a_spec_round_trips_through_its_object(spec):
    parsed = parse_spec(spec)
    assert parse_spec(parsed.spec) == parsed and parse_spec(parsed.spec).spec == parsed.spec
    assert parsed.spec.split(":")[0] == spec.split(":")[0] and str(parsed) == parsed.spec


def test_the_config_holds_objects_and_records_their_specs():
    config = config_from_dict({**get_preset("quick").to_dict(), "interventions": ["ablate:0:1", "preserve:patterns"]})
    assert config.interventions == (parse_spec("ablate:0:1"), parse_spec("preserve:patterns"))
    assert all(isinstance(i, Intervention) for i in config.interventions)
    assert config.to_dict()["interventions"] == ["ablate:0:1", "preserve:patterns"]
    assert config_from_dict(config.to_dict()) == config
    assert get_preset("quick").interventions == () and get_preset("quick").train.init_from is None


def test_analysis_only_interventions_are_refused_in_training():
    with pytest.raises(ConfigError, match="analysis only"):
        config_from_dict({**get_preset("quick").to_dict(), "interventions": ["patch:z:1:3"]})


def test_train_flags_are_parsed_once_into_objects():
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args(["--intervene", "ablate:0:1", "--intervene", "induction:1:3:0.8",
                              "--init-from", "runs/ciwl@4000"])
    assert interventions_from_args(args) == (parse_spec("ablate:0:1"), parse_spec("induction:1:3:0.8"))
    assert str(init_from_arg(args)) == "runs/ciwl@4000"
    data = {**get_preset("quick").to_dict(), "interventions": [i.spec for i in interventions_from_args(args)]}
    data["train"]["init_from"] = str(init_from_arg(args))
    config = config_from_dict(data)
    assert [i.spec for i in config.interventions] == ["ablate:0:1", "induction:1:3:0.8"]
    assert str(config.train.init_from) == "runs/ciwl@4000"
    assert interventions_from_args(parser.parse_args([])) == () and init_from_arg(parser.parse_args([])) is None


def test_bad_flags_fail_when_parsed_not_after_training():
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    with pytest.raises(ConfigError, match="unknown intervention"):
        interventions_from_args(parser.parse_args(["--intervene", "clamp:1:3"]))
    with pytest.raises(ConfigError, match="RUN@STEP"):
        init_from_arg(parser.parse_args(["--init-from", "runs/ciwl"]))
    with pytest.raises(ConfigError, match="step must be an integer"):
        TrainConfig(init_from="runs/ciwl@soon")


def test_analyze_flag():
    parser = argparse.ArgumentParser()
    add_analyze_arguments(parser)
    assert interventions_from_args(parser.parse_args(["--intervene", "ablate:0:*"])) == (parse_spec("ablate:0:*"),)


def test_adding_an_intervention_is_adding_one_class():
    @dataclass(frozen=True)
    class Negate(Intervention):
        name: ClassVar[str] = "test_negate"
        usage: ClassVar[str] = "test_negate"

        @classmethod
        def parse(cls, args):
            return cls()

        def edit_logits(self, logits, inputs, labels):
            return -logits

    try:
        model = build_model(ModelConfig(d_model=16, n_heads=2), 8, 10, 10, init_seed=0)
        exemplars, labels = torch.randn(3, 3, 8), torch.randint(0, 10, (3, 2))
        assert torch.equal(intervene(("test_negate",), model)(exemplars, labels), -model(exemplars, labels))
        config = config_from_dict({**get_preset("quick").to_dict(), "interventions": ["test_negate"]})
        assert config.interventions == (Negate(),) and config.to_dict()["interventions"] == ["test_negate"]
        from coopetition.cli import build_parser  # the CLI help lists it, from the registry
        assert "test_negate" in build_parser()._subparsers._group_actions[0].choices["train"].format_help()
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
