"""The bounded number types routes take instead of a bare float."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter, ValidationError

from hostcore.inputs import MAX_EPOCH_S, EpochSeconds

EPOCH = TypeAdapter(EpochSeconds)


@pytest.mark.parametrize("value", [0, 1714564805.25, MAX_EPOCH_S, "1714564805"])
def test_epoch_seconds_from_1970_to_the_last_second_of_9999_are_accepted(value: object) -> None:
    assert EPOCH.validate_python(value) == float(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value", [-1, MAX_EPOCH_S + 1, float("inf"), float("-inf"), float("nan"), "1e300", 10**400]
)
def test_a_number_no_clock_or_database_can_hold_is_refused(value: object) -> None:
    with pytest.raises(ValidationError):
        EPOCH.validate_python(value)


def test_the_largest_epoch_is_the_last_second_of_the_year_9999() -> None:
    assert datetime.fromtimestamp(MAX_EPOCH_S, UTC) == datetime(
        9999, 12, 31, 23, 59, 59, tzinfo=UTC
    )
