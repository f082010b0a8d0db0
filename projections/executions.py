"""What the broker reports, checked against the account's state at its head.

A fill that names an open position must be of that position's instrument: same symbol,
instrument, side and multiplier. A position id reused for another instrument would otherwise be
merged into the first position, at its multiplier: exposure understated, P&L wrong. Such a fill
is refused as bad input (ingest dead-letters it). A fill of the other side does not reduce a
position either: a reduction is reported as a `PositionClosed` (docs/events.md).

Pure: no I/O, no clock. Must not import asyncpg, aiokafka, faststream, time, os or logging.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from ledger.errors import InvalidEvent
from ledger.events import Event, OrderFilled, format_decimal
from projections.fold import Position

_SAME_AS_POSITION = ("symbol", "instrument", "side", "multiplier")


def execution_problem(positions: Mapping[str, Position], event: Event) -> InvalidEvent | None:
    """Return why an execution contradicts the open positions, or None if it does not."""
    data = event.data
    if not isinstance(data, OrderFilled):
        return None
    position = positions.get(data.position_id)
    if position is None:
        return None
    for name in _SAME_AS_POSITION:
        given, held = getattr(data, name), getattr(position, name)
        if given != held:
            return InvalidEvent(
                f"data.{name}", _shown(given),
                f"is not the {name} of open position {data.position_id!r} ({_shown(held)!r}): "
                "a fill adds to a position of the same instrument and side; use another "
                "position_id")
    return None


def _shown(value: object) -> object:
    return format_decimal(value) if isinstance(value, Decimal) else value
