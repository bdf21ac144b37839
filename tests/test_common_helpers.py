"""``millpond.common``: the helpers and names smallpond programs import from
``smallpond.common`` work the same (renamed)."""

from __future__ import annotations

import pytest

import millpond
from millpond.common import (
    GB,
    MB,
    InjectedFault,
    SmallpondError,
    UDFType,
    clamp_row_group_size,
    first_value_in_dict,
    get_nth_partition,
    next_power_of_two,
    pytest_running,
    round_up,
    split_into_cols,
    split_into_rows,
)


def test_split_into_rows_is_contiguous_with_longer_runs_first() -> None:
    assert split_into_rows(list(range(10)), 3) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert split_into_rows([1, 2], 4) == [[1], [2], [], []]
    for n in (1, 3, 7):
        items = list(range(23))
        runs = split_into_rows(items, n)
        assert sum(runs, []) == items
        assert [get_nth_partition(items, i, n) for i in range(n)] == runs


def test_split_into_cols_deals_round_robin() -> None:
    assert split_into_cols(list(range(10)), 3) == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert split_into_cols([], 2) == [[], []]


@pytest.mark.parametrize(("x", "power"), [(0, 2), (1, 1), (2, 2), (5, 8), (8, 8), (1025, 2048)])
def test_next_power_of_two(x: int, power: int) -> None:
    assert next_power_of_two(x) == power


def test_small_helpers_and_names() -> None:
    assert round_up(1, MB) == MB and round_up(MB + 1, MB) == 2 * MB
    assert clamp_row_group_size(10) == 122_880 and clamp_row_group_size(10 * GB) == 10 * 1024 * 1024
    assert first_value_in_dict({"a": 1, "b": 2}) == 1 and first_value_in_dict({}) is None
    assert pytest_running()
    assert SmallpondError is millpond.MillpondError and issubclass(InjectedFault, SmallpondError)
    assert UDFType.INTEGER.value == "INTEGER"
