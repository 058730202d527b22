"""--checkpoint-range SPEC: ranges, strides, last-N, comma lists, snapping, and one-line errors."""

import pytest

from coopetition.analysis.selection import parse_spec, resolve
from coopetition.errors import ConfigError, DataError

STEPS = [0, 1, 2, 6, 15, 37, 90, 222, 500, 1000, 2000, 3000, 4000]


@pytest.mark.parametrize("spec, expected", [
    ("0:", STEPS),
    (":", STEPS),
    ("1000:3000", [1000, 2000, 3000]),
    (":6", [0, 1, 2, 6]),
    ("2000:", [2000, 3000, 4000]),
    ("0:4000:4", [0, 15, 500, 4000]),
    ("-3:", [2000, 3000, 4000]),
    ("-1", [4000]),
    ("0,1000,4000", [0, 1000, 4000]),
    ("0:2, 3000:", [0, 1, 2, 3000, 4000]),
    ("5:14", [6]),
])
def test_spec_selects(spec, expected):
    selection = resolve(spec, STEPS)
    assert list(selection.steps) == expected
    assert selection.notes == ()


def test_unknown_step_snaps_to_nearest_with_a_note():
    selection = resolve("1200,2600,7", STEPS)
    assert list(selection.steps) == [6, 1000, 3000]
    assert len(selection.notes) == 3 and "1200" in selection.notes[0] and "1000" in selection.notes[0]


def test_tie_snaps_to_the_earlier_checkpoint():
    assert resolve("1500", STEPS).steps == (1000,)


@pytest.mark.parametrize("spec, message", [
    ("", "empty"),
    ("a:b", "not an integer"),
    ("1:2:3:4", "more than two"),
    ("0:10:0", "stride"),
    ("10:5", "after"),
    ("1,,2", "empty item"),
    ("1.5", "not an integer"),
])
def test_malformed_spec_is_a_config_error(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_spec(spec)


def test_range_without_checkpoints_is_an_error():
    with pytest.raises(ConfigError, match="selects no checkpoint"):
        resolve("5000:9000", STEPS)
    with pytest.raises(ConfigError, match="before the first"):
        resolve("-20:", STEPS)


def test_run_without_checkpoints_is_a_data_error():
    with pytest.raises(DataError):
        resolve("0:", [])
