"""The one clock: aware UTC, swappable in tests (docs/design.md).

Every process that needs "now" takes a `Clock` and defaults to `utc_now`, so a test can drive
time and no naive datetime ever enters the ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)
