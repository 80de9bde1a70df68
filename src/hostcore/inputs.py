"""Types for the numbers a request carries: finite and bounded, so no value can overflow.

A float query parameter accepts ``inf``, ``nan`` and ``1e300`` unless told
otherwise, and each of them breaks something further down (``math.floor``,
a command's argument parser, a database's comparison). Routes take these
types instead of a bare ``float``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

# 9999-12-31T23:59:59Z: the last second that datetime, SQL and systemd all format.
MAX_EPOCH_S = 253_402_300_799

EpochSeconds = Annotated[
    float,
    Field(ge=0, le=MAX_EPOCH_S, allow_inf_nan=False),
]
