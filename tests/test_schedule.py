"""Checkpoint schedule arithmetic."""

import pytest

from coopetition.errors import ConfigError
from coopetition.train.schedule import parse_count, schedule_steps


def test_every_includes_zero_and_last():
    assert schedule_steps("every:4", 10, 32) == [0, 4, 8, 10]


def test_log_spaced_points_are_unique_and_bounded():
    steps = schedule_steps("log:5", 10_000, 32)
    assert steps == [0, 1, 10, 100, 1000, 10_000]


def test_explicit_list_and_union():
    assert schedule_steps("at:3,7+every:5", 12, 32) == [0, 3, 5, 7, 10, 12]


def test_upsample_window_is_dense():
    assert schedule_steps("every:100+upsample:40:60:10", 200, 32) == [0, 40, 50, 60, 100, 200]


def test_sequence_units_round_up_to_whole_steps():
    assert parse_count("100kseq", 32) == 3125
    assert parse_count("4.25Mseq", 32) == 132_813  # 4,250,016 sequences, as the reference's rounding up to 32
    assert parse_count("2k", 32) == 2000


@pytest.mark.parametrize("spec", ["every:0", "every", "log:x", "upsample:5:1:1", "at:99", "sometimes:3"])
def test_bad_schedules_are_config_errors(spec):
    with pytest.raises(ConfigError):
        schedule_steps(spec, 50, 32)
