"""The one argument-check policy: TypeError for a wrong type, ValueError for a wrong value."""

import math

import pytest

from lorakit.validate import integer, number, positive_int


@pytest.mark.parametrize("bad", [True, False, 1.0, "3", None, [2]])
def test_a_count_of_the_wrong_type_is_a_type_error(bad):
    with pytest.raises(TypeError, match="r must be an int"):
        positive_int(bad, "r")


@pytest.mark.parametrize("bad", [0, -1, -100])
def test_a_count_below_one_is_a_value_error(bad):
    with pytest.raises(ValueError, match=r"r must be an integer >= 1, got"):
        positive_int(bad, "r")


def test_integer_bounds_are_inclusive_and_named():
    assert integer(1, "r", 1, 8) == 1 and integer(8, "r", 1, 8) == 8
    with pytest.raises(ValueError, match=r"in 1\.\.8, got 9"):
        integer(9, "r", 1, 8)
    assert positive_int(3, "steps") == 3


def test_number_accepts_ints_and_floats_inside_open_or_closed_bounds():
    assert number(2, "alpha", low=0, low_open=True) == 2
    assert number(0.0, "dropout", low=0, high=1, high_open=True) == 0.0
    for bad in (0, -1.5, math.inf, math.nan):
        with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
            number(bad, "alpha", low=0, low_open=True)
    with pytest.raises(ValueError, match="< 1"):
        number(1.0, "dropout", low=0, high=1, high_open=True)
    for bad in (True, "1", None):
        with pytest.raises(TypeError, match="alpha must be a number"):
            number(bad, "alpha")
