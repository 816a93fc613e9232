import numpy as np
import pytest

from landscape.errors import LandscapeInputError
from landscape.surface.grid import MAX_POINTS, check_grid_size, parse_axis


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
