"""Rendering of an account state as the `positions --json` document of docs/design.md.

This module owns that document's shape and its one rounding step: money figures are quantized to
cents here, at the edge, and nowhere in the fold. It is pure: it must not import asyncpg,
aiokafka, faststream, `time`, `os`, `logging`, or any project module other than `ledger.events`
and `projections.fold`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ledger.events import format_decimal, format_time
from ledger.money import money_json, to_cents
from projections.fold import AccountState, Limits, PendingIntent, Position

__all__ = ["limits_document", "positions_document"]



def _price(price: Decimal) -> str:
    # A price reads with at least cents ("6.2" -> "6.20"), but finer digits are kept: an
    # average of fills ("6.125", or 1/3 of a cent) rounded to cents would report an entry
    # price the position does not have, and quantity x average_price would no longer give
    # its notional.
    padded = to_cents(price)
    return format_decimal(padded if padded == price else price)


def limits_document(limits: Limits | None) -> dict[str, Any] | None:
    """Return the limits as LimitsSet data states them (None when never set)."""
    if limits is None:
        return None
    return {
        "max_open_positions": limits.max_open_positions,
        "max_exposure": format_decimal(limits.max_exposure),
        "max_order_notional": _optional_decimal(limits.max_order_notional),
        "daily_loss_limit": _optional_decimal(limits.daily_loss_limit),
        "max_orders_per_minute": limits.max_orders_per_minute,
        "max_underlying_exposure": _optional_decimal(limits.max_underlying_exposure),
        "duplicate_window_s": limits.duplicate_window_s,
        "max_reconcile_age_s": limits.max_reconcile_age_s,
    }


def _optional_decimal(number: Decimal | None) -> str | None:
    return None if number is None else format_decimal(number)


def _position_document(position: Position) -> dict[str, Any]:
    return {
        "position_id": position.position_id,
        "symbol": position.symbol,
        "side": position.side,
        "quantity": format_decimal(position.quantity),
        "average_price": _price(position.average_price),
        "multiplier": format_decimal(position.multiplier),
        "notional": money_json(position.notional),
    }


def _intent_document(intent: PendingIntent) -> dict[str, Any]:
    return {
        "intent_id": intent.intent_id,
        "symbol": intent.symbol,
        "notional": money_json(intent.notional),
        "expires_at": format_time(intent.expires_at),
        # A reducing intent reserves nothing: it is not in pending_exposure.
        "reducing": intent.reducing,
    }


def positions_document(state: AccountState, *, projected_sequence: int | None) -> dict[str, Any]:
    """Return the `positions --json` document of an account state, ready for json.dumps.

    `as_of_sequence` is the state's sequence, the head it is proven at; `projected_sequence`
    how far the projection had got when it was read (None for a replay as of a time).
    Exposures are the exact sums rounded once, so they may differ by a cent from the sum of
    the rounded notionals listed.

    Raises:
        ValueError: a time in the state is naive (the fold never builds one).
    """
    positions = sorted(state.positions.values(), key=lambda position: position.position_id)
    intents = sorted(state.pending.values(), key=lambda intent: intent.intent_id)
    return {
        "account": state.account,
        "as_of_sequence": state.sequence,
        "projected_sequence": projected_sequence,
        "halted": state.halted,
        "trading_state": state.trading_state,
        # The broker `as_of` of the last PositionsReconciled (null: never reconciled).
        "reconciled_as_of": (None if state.reconciled_as_of is None
                             else format_time(state.reconciled_as_of)),
        "limits": limits_document(state.limits),
        "open_positions": [_position_document(position) for position in positions],
        "pending_intents": [_intent_document(intent) for intent in intents],
        "open_exposure": money_json(state.open_exposure),
        "pending_exposure": money_json(state.pending_exposure),
        "exposure": money_json(state.exposure),
    }
