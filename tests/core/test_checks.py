"""The one integer check at the door: whole numbers in range pass as ints; anything else is one line naming the
setting."""

import pytest

from sdeflow.core.checks import integer


def test_whole_numbers_in_range_pass_as_ints():
    assert integer("n", 3) == 3 and isinstance(integer("n", 3.0), int)
    assert integer("depth", 29, 1, 29) == 29 and integer("cache", 2, 2) == 2


@pytest.mark.parametrize(
    "value, minimum, maximum, words",
    [
        (0, 1, None, "n must be a positive integer, got 0"),
        (2.5, 1, None, "a positive integer, got 2.5"),
        (True, 1, None, "got True"),
        ("3", 1, None, "got '3'"),
        (1, 2, None, "an integer >= 2, got 1"),
        (30, 1, 29, "an integer in [1, 29], got 30"),
    ],
)
def test_anything_else_is_refused_naming_the_setting_and_what_is_accepted(value, minimum, maximum, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        integer("n", value, minimum, maximum)


def test_the_accepted_values_can_be_described_further():
    with pytest.raises(ValueError, match=r"history must be a positive integer or null \(every prediction\), got 0"):
        integer("history", 0, accepted=" or null (every prediction)")
