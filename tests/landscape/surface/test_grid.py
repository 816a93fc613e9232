import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from landscape.errors import LandscapeInputError
from landscape.surface.grid import (
    FORCED_MAX_POINTS,
    MAX_POINTS,
    check_grid_size,
    parse_axis,
    parse_grid,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("-1:1:5", [-1.0, -0.5, 0.0, 0.5, 1.0]),
        ("0:0:1", [0.0]),
        ("-0.5:1.5:3", [-0.5, 0.5, 1.5]),
        ("1e-1:2e-1:2", [0.1, 0.2]),
    ],
)
def test_parse_axis_includes_both_endpoints(text, expected):
    np.testing.assert_array_equal(parse_axis(text), expected)


def test_default_grid_has_2601_points():
    axis = parse_axis("-1:1:51")
    assert axis[0] == -1.0 and axis[-1] == 1.0 and axis[25] == 0.0
    assert check_grid_size(len(axis), len(axis)) == 2601


@pytest.mark.parametrize(
    "text",
    [
        "1:-1:0",
        "1:-1:5",
        "0:1:0",
        "0:1:-3",
        "1:1:5",
        "0:1",
        "0:1:2:3",
        "a:1:3",
        "0:1:2.5",
        "nan:1:3",
        "-inf:1:3",
        "0:1:1",
        "",
    ],
)
def test_parse_axis_refuses_nonsense_in_one_line(text):
    with pytest.raises(LandscapeInputError) as err:
        parse_axis(text, "--x")
    message = str(err.value)
    assert "\n" not in message and "--x" in message


def test_grid_size_guard_and_force():
    with pytest.raises(LandscapeInputError, match="--force"):
        check_grid_size(10_000, 1_000)
    assert check_grid_size(10_000, 1_000, force=True) == 10**7
    assert check_grid_size(MAX_POINTS, None) == MAX_POINTS


@pytest.mark.parametrize(
    "text, needle",
    [
        ("-1:1:2000000000", "refused even with --force"),
        ("-1:1:" + "9" * 5000, "not a whole number"),
        ("-1:1:1e20", "not a whole number"),
        ("-1:1:1.5", "not a whole number"),
        ("-1:1:²", "not a whole number"),
        ("-1:nan:3", "finite"),
        ("1:1.0000000000000002:5", "distinct"),
        ("-1e308:1e308:3", "distinct"),
    ],
)
def test_counts_and_bounds_are_checked_before_anything_is_allocated(monkeypatch, text, needle):
    def no_allocation(*args, **kwargs):
        raise AssertionError("allocated before the check")

    if "distinct" not in needle:
        monkeypatch.setattr(np, "linspace", no_allocation)
    with pytest.raises(LandscapeInputError, match=needle):
        parse_axis(text, "--x", force=True)


def test_the_grid_size_is_checked_on_the_counts_of_both_axes():
    x, y, total = parse_grid("-1:1:2000", "-1:1:1000", force=True)
    assert (x.count, y.count, total) == (2000, 1000, 2_000_000)
    with pytest.raises(LandscapeInputError, match="--force"):
        parse_grid("-1:1:2000", "-1:1:1000")
    with pytest.raises(LandscapeInputError, match="refused even with --force"):
        check_grid_size(FORCED_MAX_POINTS, 2, force=True)


NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "1_000", " 3 ", "0x10", "", "²", "1e20"]),
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=30),
        st.tuples(NUMBER, NUMBER, NUMBER).map(":".join),
        st.lists(NUMBER, max_size=5).map(":".join),
    )
)
def test_any_axis_text_parses_or_is_an_input_error(text):
    try:
        values = parse_axis(text, "--x")
    except LandscapeInputError as err:
        assert "\n" not in str(err)
        return
    assert 1 <= values.size <= MAX_POINTS
    assert np.all(np.isfinite(values)) and np.all(np.diff(values) > 0)
