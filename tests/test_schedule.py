"""Checkpoint schedule arithmetic, and where points given in sequences land (REFERENCE 4.2)."""

import math

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


def test_every_kseq_rounds_each_point_as_the_reference_does():
    """C25: every:50kseq at batch 32 over 64M sequences. The reference fires at the first loop value i (a multiple of
    32) >= k * 50000, i.e. step ceil(k * 50000 / 32); rounding the interval once (1563 steps) would put the 400th
    point at 625,200 steps = 20,006,400 sequences."""
    steps = schedule_steps("every:50kseq", 2_000_000, 32)
    assert len(steps) == 64_000_000 // 50_000 + 1 == 1281
    assert steps[400] == 625_000 and steps[400] * 32 == 20_000_000
    assert steps == [math.ceil(k * 50_000 / 32) for k in range(1281)]
    assert steps[1:4] == [1563, 3125, 4688]  # 50,016 / 100,000 / 150,016 sequences


def test_every_kseq_with_a_batch_that_does_not_divide_the_interval():
    # batch 48, every 100 sequences: k*100 / 48 = 2.08, 4.17, 6.25, 8.33, 10.4, 12.5, ..., 25 -> ceil each
    assert schedule_steps("every:100seq", 25, 48) == [0, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25]
    for step, k in zip(schedule_steps("every:100seq", 25, 48), range(13)):
        assert step * 48 >= k * 100 > (step - 1) * 48  # the first multiple of the batch size at or past k * 100


def test_upsample_in_sequences_rounds_each_point():
    # 4.25M + k * 10k sequences at batch 32: 132,812.5 -> 132,813; 133,125; 133,437.5 -> 133,438; ...
    assert schedule_steps("upsample:4.25Mseq:4.3Mseq:10kseq", 140_000, 32)[1:-1] == [
        132_813, 133_125, 133_438, 133_750, 134_063, 134_375]
    assert schedule_steps("at:4.25Mseq,4.26Mseq", 140_000, 32) == [0, 132_813, 133_125, 140_000]


@pytest.mark.parametrize("spec", ["every:0", "every", "log:x", "upsample:5:1:1", "at:99", "sometimes:3",
                                  "every:0.4", "every:1e400seq", "at:nan", "upsample:0:5:0seq"])
def test_bad_schedules_are_config_errors(spec):
    with pytest.raises(ConfigError):
        schedule_steps(spec, 50, 32)
