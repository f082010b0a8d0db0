"""What the broker reports, checked against the account's state at its head.

Two kinds of finding. A contradiction is bad input, refused: a fill that names an open position
must be of that position's instrument: same symbol, instrument, side and multiplier. A position
id reused for another instrument would otherwise be merged into the first position, at its
multiplier: exposure understated, P&L wrong. Such a fill is refused (ingest dead-letters it). A
fill of the other side does not reduce a position either: a reduction is reported as a
`PositionClosed` (docs/events.md).

A discrepancy is the broker's truth disagreeing with the ledger's (`discrepancies`): a close
larger than what is open, a close of a position the ledger does not hold, a fill for an intent
that expired, was rejected or cancelled, a fill above its intent's quantity or on the wrong side
of its limit price. The execution happened at the broker, so it is recorded as reported; a
`DiscrepancyFound` beside it names the kind and the figures and moves the account to reducing.
Ingest records them; the audit finds the same ones by replaying the store, with this function.

Pure: no I/O, no clock. Must not import asyncpg, aiokafka, faststream, time, os or logging.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Literal

from ledger.errors import InvalidEvent
from ledger.events import (
    DiscrepancyFound,
    Event,
    IntentFate,
    OrderFilled,
    PositionClosed,
    format_decimal,
    format_time,
    natural_key,
)
from projections.fold import PendingIntent, Position

_AFTER: dict[IntentFate, Literal["fill_after_expiry", "fill_after_rejection",
                                 "fill_after_cancel"]] = {
    "expired": "fill_after_expiry", "rejected": "fill_after_rejection",
    "cancelled": "fill_after_cancel"}

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


def discrepancies(positions: Mapping[str, Position], pending: Mapping[str, PendingIntent],
                  fates: Mapping[str, IntentFate], event: Event) -> list[DiscrepancyFound]:
    """Return what an execution disagrees with, judged on the state just before it.

    `fates`: how the intents that are no longer pending ended (those known not to have been
    filled); an intent in neither `pending` nor `fates` was filled before, or was never the
    ledger's, and a fill for it is not a discrepancy.
    """
    data = event.data
    if isinstance(data, PositionClosed):
        return _close_discrepancies(positions, data, event)
    if not isinstance(data, OrderFilled) or data.intent_id is None:
        return []
    intent = pending.get(data.intent_id)
    if intent is None:
        fate = fates.get(data.intent_id)
        if fate is None:
            return []
        return [DiscrepancyFound(
            kind=_AFTER[fate], execution=natural_key(event), position_id=data.position_id,
            intent_id=data.intent_id,
            reason=f"fill {data.fill_id} for intent {data.intent_id}, which was {fate}")]
    # The beyond-price test, in the intent's direction: a buy may not pay more than its limit, a
    # sell may not receive less.
    beyond = (data.price > intent.limit_price if intent.side == "long"
              else data.price < intent.limit_price)
    if event.occurred_at <= intent.expires_at and data.quantity <= intent.quantity \
            and not beyond:
        return []
    execution = natural_key(event)
    found: list[DiscrepancyFound] = []
    if event.occurred_at > intent.expires_at:
        found.append(DiscrepancyFound(
            kind="fill_after_expiry", execution=execution, position_id=data.position_id,
            intent_id=intent.intent_id,
            reason=f"fill {data.fill_id} at {format_time(event.occurred_at)} for intent "
                   f"{intent.intent_id}, which expired at {format_time(intent.expires_at)}"))
    if data.quantity > intent.quantity:
        found.append(DiscrepancyFound(
            kind="fill_beyond_quantity", execution=execution, position_id=data.position_id,
            intent_id=intent.intent_id, reported=data.quantity, ledger=intent.quantity,
            reason=f"fill {data.fill_id} of {format_decimal(data.quantity)} for intent "
                   f"{intent.intent_id} of {format_decimal(intent.quantity)}"))
    if beyond:
        relation = "above" if intent.side == "long" else "below"
        found.append(DiscrepancyFound(
            kind="fill_beyond_price", execution=execution, position_id=data.position_id,
            intent_id=intent.intent_id, reported=data.price, ledger=intent.limit_price,
            reason=f"fill {data.fill_id} at {format_decimal(data.price)}, {relation} the "
                   f"{intent.side} limit price {format_decimal(intent.limit_price)} of intent "
                   f"{intent.intent_id}"))
    return found


def _close_discrepancies(positions: Mapping[str, Position], close: PositionClosed,
                         event: Event) -> list[DiscrepancyFound]:
    position = positions.get(close.position_id)
    name = close.close_id or "without id"
    if position is None:
        return [DiscrepancyFound(
            kind="close_of_unknown_position", execution=natural_key(event),
            position_id=close.position_id, intent_id=close.intent_id,
            reported=close.quantity, ledger=Decimal(0),
            reason=f"close {name} of position {close.position_id}, which the ledger does not "
                   "hold open")]
    if close.quantity is not None and close.quantity > position.quantity:
        return [DiscrepancyFound(
            kind="close_beyond_open", execution=natural_key(event), position_id=close.position_id,
            intent_id=close.intent_id, reported=close.quantity, ledger=position.quantity,
            reason=f"close {name} of {format_decimal(close.quantity)} on position "
                   f"{close.position_id}, where {format_decimal(position.quantity)} are open")]
    return []
