"""Goal: the one fold turns an account's stored events into exactly the positions, pending intents,
limits, trading state (active, reducing, halted: the last change wins), recent intents (pruned to
the longer of 60 s and the duplicate window, at most ORDER_RATE_MAX) and realised P&L that
docs/design.md describes (a cancel, and a close naming an intent, release it), refuses to be fed
wrongly (foreign account, unsequenced event, sequence gap), and skips duplicates.

Method: build events through the public JSON contract (`decode_event`), stamp them as stored
with `with_ledger_fields`, fold them, and compare the resulting state with figures worked out by
hand. Arrange/Act/Assert, no I/O.
"""

from __future__ import annotations

import dataclasses
import decimal
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest

from ledger.events import ORDER_RATE_MAX, Event, decode_event, format_time, with_ledger_fields
from projections.fold import (
    AccountState,
    ForeignEvent,
    Limits,
    Position,
    RecentIntent,
    SequenceGap,
    UnsequencedEvent,
    apply,
    fold,
    initial_state,
)

ACCOUNT = "large"
MORNING = "2026-02-03T17:29:04Z"
MORNING_AT = datetime(2026, 2, 3, 17, 29, 4, tzinfo=UTC)
RECORDED_AT = datetime(2026, 2, 3, 18, 0, tzinfo=UTC)
SYMBOL = "MSFT 260220P00400000"

# --- Factories: every event goes through the JSON contract ----------------------------------------


def unstored(
    event_type: str,
    data: Mapping[str, Any],
    *,
    occurred_at: str = MORNING,
    account: str = ACCOUNT,
) -> Event:
    document = {"account": account, "type": event_type, "occurred_at": occurred_at, "data": data}
    return decode_event(json.dumps(document))


def stored(event: Event, sequence: int) -> Event:
    return with_ledger_fields(
        event, sequence=sequence, recorded_at=RECORDED_AT, global_position=sequence - 1
    )


def stream(*events: Event, first: int = 1) -> list[Event]:
    return [stored(event, first + index) for index, event in enumerate(events)]


def fill(
    position_id: str = "P-1",
    *,
    fill_id: str | None = None,
    side: str = "long",
    quantity: str = "12",
    price: str = "6.00",
    multiplier: str = "100",
    symbol: str = SYMBOL,
    intent_id: str | None = None,
    fees: str | None = None,
    occurred_at: str = MORNING,
    account: str = ACCOUNT,
) -> Event:
    data: dict[str, Any] = {
        "fill_id": fill_id or f"X-{position_id}-{side}-{quantity}-{price}-{occurred_at}",
        "position_id": position_id,
        "symbol": symbol,
        "instrument": "option",
        "side": side,
        "quantity": quantity,
        "price": price,
        "multiplier": multiplier,
    }
    if intent_id is not None:
        data["intent_id"] = intent_id
    if fees is not None:
        data["fees"] = fees
    return unstored("OrderFilled", data, occurred_at=occurred_at, account=account)


def close(
    position_id: str = "P-1",
    *,
    price: str,
    quantity: str | None = None,
    occurred_at: str = MORNING,
    intent_id: str | None = None,
) -> Event:
    data: dict[str, Any] = {"position_id": position_id, "price": price, "reason": "stop_loss"}
    if quantity is not None:
        data["quantity"] = quantity
    if intent_id is not None:
        data["intent_id"] = intent_id
    return unstored("PositionClosed", data, occurred_at=occurred_at)


def issue(
    intent_id: str = "I-1",
    *,
    quantity: str = "3",
    limit_price: str = "6.00",
    multiplier: str = "100",
    expires_at: str = "2026-02-03T17:34:04Z",
    side: str = "long",
    position_id: str | None = None,
    occurred_at: str = MORNING,
) -> Event:
    data = {
        "intent_id": intent_id,
        "signal_id": f"S-{intent_id}",
        "position_id": position_id or f"P-{intent_id}",
        "symbol": SYMBOL,
        "instrument": "option",
        "side": side,
        "quantity": quantity,
        "limit_price": limit_price,
        "multiplier": multiplier,
        "expires_at": expires_at,
    }
    return unstored("IntentIssued", data, occurred_at=occurred_at)


def release(intent_id: str = "I-1", *, event_type: str = "IntentRejected") -> Event:
    return unstored(event_type, {"intent_id": intent_id, "reason": "broker refused"})


def limits(
    max_open_positions: int = 5,
    max_exposure: str = "10000",
    *,
    max_order_notional: str | None = None,
    daily_loss_limit: str | None = None,
    max_orders_per_minute: int | None = None,
    max_underlying_exposure: str | None = None,
    duplicate_window_s: int | None = None,
    occurred_at: str = MORNING,
) -> Event:
    data: dict[str, Any] = {
        "max_open_positions": max_open_positions,
        "max_exposure": max_exposure,
    }
    optional: dict[str, Any] = {
        "max_order_notional": max_order_notional,
        "daily_loss_limit": daily_loss_limit,
        "max_orders_per_minute": max_orders_per_minute,
        "max_underlying_exposure": max_underlying_exposure,
        "duplicate_window_s": duplicate_window_s,
    }
    data.update({name: value for name, value in optional.items() if value is not None})
    return unstored("LimitsSet", data, occurred_at=occurred_at)


def signal_evaluated(signal_id: str = "S-9") -> Event:
    signal = {
        "signal_id": signal_id,
        "account": ACCOUNT,
        "occurred_at": MORNING,
        "symbol": SYMBOL,
        "instrument": "option",
        "side": "long",
        "quantity": "1",
        "limit_price": "6.00",
        "multiplier": "100",
    }
    gate = {
        "gate": "max_open_positions",
        "passed": False,
        "value": "5",
        "limit": "5",
        "reason": "5 open + 0 pending of 5",
    }
    data = {
        "signal_id": signal_id,
        "signal": signal,
        "allowed": False,
        "gates": [gate],
        "as_of_sequence": 0,
    }
    return unstored("SignalEvaluated", data)


def folded(*events: Event) -> AccountState:
    return fold(stream(*events), account=ACCOUNT)


def position(state: AccountState, position_id: str = "P-1") -> Position:
    return state.positions[position_id]


# --- Start, sequence and account checks -----------------------------------------------------------


def test_initial_state_when_new_account_is_empty_and_at_sequence_0() -> None:
    # Act
    state = initial_state(ACCOUNT)

    # Assert
    assert state.account == ACCOUNT
    assert state.sequence == 0
    assert state.open_positions == 0
    assert state.pending_count == 0
    assert state.exposure == 0
    assert state.limits is None
    assert state.halted is False
    assert state.realized_pnl_days == {}
    assert state.last_occurred_at is None


def test_apply_when_event_is_applied_advances_sequence_and_last_occurred_at() -> None:
    # Arrange
    event = stored(limits(), 1)

    # Act
    state = apply(initial_state(ACCOUNT), event)

    # Assert
    assert state.sequence == 1
    assert state.last_occurred_at == MORNING_AT


def test_apply_when_sequence_already_applied_returns_same_state_object() -> None:
    # Arrange
    events = stream(fill(), limits(), close(price="7.00"))
    state = fold(events, account=ACCOUNT)

    # Act
    results = [apply(state, event) for event in events]

    # Assert
    assert all(result is state for result in results)


def test_fold_when_every_event_is_a_duplicate_returns_same_state_object() -> None:
    # Arrange
    events = stream(fill(), issue())
    state = fold(events, account=ACCOUNT)

    # Act
    again = fold(events, state)

    # Assert
    assert again is state


def test_fold_when_events_redelivered_counts_each_once() -> None:
    # Arrange
    events = stream(fill(), fill(quantity="8", price="6.50"), close(price="7.00", quantity="5"))
    redelivered = [events[0], events[0], events[1], events[0], events[1], events[2], events[2]]

    # Act
    state = fold(redelivered, account=ACCOUNT)

    # Assert
    assert state == fold(events, account=ACCOUNT)
    assert position(state).quantity == Decimal("15")


def test_apply_when_sequence_skips_ahead_raises_sequence_gap_naming_both() -> None:
    # Arrange
    state = fold(stream(*[limits() for _ in range(7)]), account=ACCOUNT)
    event = stored(fill(), 10)

    # Act
    with pytest.raises(SequenceGap) as raised:
        apply(state, event)

    # Assert
    assert str(raised.value) == "account large: expected sequence 8 but was 10"
    assert raised.value.account == ACCOUNT
    assert raised.value.expected_sequence == 8
    assert raised.value.actual_sequence == 10


def test_fold_when_gap_in_the_middle_raises_sequence_gap() -> None:
    # Arrange
    events = [stored(limits(), 1), stored(fill(), 2), stored(close(price="7.00"), 4)]

    # Act / Assert
    with pytest.raises(SequenceGap, match="expected sequence 3 but was 4"):
        fold(events, account=ACCOUNT)


def test_apply_when_event_of_another_account_raises_foreign_event() -> None:
    # Arrange
    state = folded(fill())
    event = stored(fill(account="small"), 2)

    # Act
    with pytest.raises(ForeignEvent) as raised:
        apply(state, event)

    # Assert
    assert "'small'" in str(raised.value)
    assert "'large'" in str(raised.value)
    assert raised.value.account == ACCOUNT
    assert raised.value.event_account == "small"
    assert state.sequence == 1


def test_apply_when_foreign_event_is_a_duplicate_sequence_still_raises() -> None:
    # Arrange: a foreign event is a wiring bug whatever its sequence.
    state = folded(fill(), limits())
    event = stored(fill(account="small"), 1)

    # Act / Assert
    with pytest.raises(ForeignEvent):
        apply(state, event)


def test_apply_when_event_has_no_sequence_raises_unsequenced_event() -> None:
    # Arrange
    event = fill()

    # Act
    with pytest.raises(UnsequencedEvent) as raised:
        apply(initial_state(ACCOUNT), event)

    # Assert
    assert raised.value.event_id == event.event_id
    assert "has no sequence" in str(raised.value)


def test_fold_when_neither_state_nor_account_given_raises_value_error() -> None:
    # Act / Assert
    with pytest.raises(ValueError, match="needs a state or an account"):
        fold([])


def test_fold_when_account_differs_from_state_raises_value_error() -> None:
    # Act / Assert
    with pytest.raises(ValueError, match="account='small'"):
        fold([], initial_state(ACCOUNT), account="small")


def test_fold_when_events_applied_one_by_one_equals_one_fold() -> None:
    # Arrange
    events = stream(limits(), issue(), fill(intent_id="I-1"), close(price="6.50", quantity="4"))
    state = initial_state(ACCOUNT)

    # Act
    for event in events:
        state = apply(state, event)

    # Assert
    assert state == fold(events, account=ACCOUNT)


# --- Fills ---------------------------------------------------------------------------------------


def test_apply_when_fill_of_new_position_opens_it_at_fill_price() -> None:
    # Act
    state = folded(fill(quantity="12", price="6.00", multiplier="100"))

    # Assert
    assert position(state) == Position(
        position_id="P-1",
        symbol=SYMBOL,
        instrument="option",
        side="long",
        quantity=Decimal("12"),
        average_price=Decimal("6.00"),
        multiplier=Decimal("100"),
        realized_pnl=Decimal("0"),
        opened_at=MORNING_AT,
    )
    assert state.open_positions == 1
    assert state.open_exposure == Decimal("7200")
    assert state.realized_pnl_total == 0
    assert state.realized_pnl_days == {}


def test_apply_when_same_side_fill_adds_at_exact_average_price() -> None:
    # Act
    state = folded(fill(quantity="12", price="6.00"), fill(quantity="8", price="6.50"))

    # Assert
    held = position(state)
    assert held.quantity == Decimal("20")
    assert held.average_price == Decimal("6.20")
    assert str(held.average_price) == "6.20"
    assert held.notional == Decimal("12400")
    assert held.opened_at == MORNING_AT
    assert state.open_positions == 1


def test_apply_when_average_does_not_terminate_keeps_38_digits_in_any_thread_context() -> None:
    # Arrange
    events = stream(fill(quantity="1", price="1.00"), fill(quantity="2", price="2.00"))

    # Act: the caller's context must not change the digits every process has to agree on.
    with decimal.localcontext(decimal.Context(prec=6)):
        state = fold(events, account=ACCOUNT)

    # Assert
    assert position(state).average_price == Decimal("1.6666666666666666666666666666666666667")


def test_apply_when_opposite_fill_smaller_reduces_position_and_realises_pnl() -> None:
    # Act
    state = folded(
        fill(side="long", quantity="12", price="6.00"),
        fill(side="short", quantity="5", price="7.00"),
    )

    # Assert
    held = position(state)
    assert held.side == "long"
    assert held.quantity == Decimal("7")
    assert held.average_price == Decimal("6.00")
    assert held.realized_pnl == Decimal("500")
    assert state.realized_pnl_total == Decimal("500")
    assert state.realized_pnl_on(date(2026, 2, 3)) == Decimal("500")


def test_apply_when_opposite_fill_equals_open_quantity_closes_position() -> None:
    # Act
    state = folded(
        fill(side="short", quantity="10", price="4.00"),
        fill(side="long", quantity="10", price="4.50"),
    )

    # Assert
    assert state.open_positions == 0
    assert state.open_exposure == 0
    assert state.realized_pnl_total == Decimal("-500")


def test_apply_when_opposite_fill_exceeds_open_quantity_flips_position() -> None:
    # Act
    state = folded(
        fill(side="long", quantity="12", price="6.00"),
        fill(side="short", quantity="20", price="7.00", occurred_at="2026-02-03T17:40:00Z"),
    )

    # Assert
    assert position(state) == Position(
        position_id="P-1",
        symbol=SYMBOL,
        instrument="option",
        side="short",
        quantity=Decimal("8"),
        average_price=Decimal("7.00"),
        multiplier=Decimal("100"),
        realized_pnl=Decimal("0"),
        opened_at=datetime(2026, 2, 3, 17, 40, tzinfo=UTC),
    )
    assert state.realized_pnl_total == Decimal("1200")
    assert state.open_exposure == Decimal("5600")


def test_apply_when_fill_has_fees_subtracts_them_from_realised_pnl() -> None:
    # Act
    state = folded(
        fill(quantity="12", price="6.00", fees="1.30"),
        fill(side="short", quantity="2", price="6.50", fees="0.65"),
    )

    # Assert
    assert state.realized_pnl_total == Decimal("-1.30") + Decimal("100") - Decimal("0.65")
    assert state.realized_pnl_on(date(2026, 2, 3)) == Decimal("98.05")
    assert position(state).realized_pnl == Decimal("98.05")
    assert position(state).quantity == Decimal("10")


def test_apply_when_flip_has_fees_charges_them_to_the_new_position() -> None:
    # Act
    state = folded(
        fill(side="long", quantity="1", price="6.00"),
        fill(side="short", quantity="3", price="6.00", fees="2.00"),
    )

    # Assert
    assert position(state).realized_pnl == Decimal("-2.00")
    assert state.realized_pnl_total == Decimal("-2.00")


# --- Closes --------------------------------------------------------------------------------------


def test_apply_when_long_partially_closed_realises_pnl_on_closed_quantity() -> None:
    # Act
    state = folded(fill(quantity="12", price="6.00"), close(price="7.00", quantity="5"))

    # Assert
    held = position(state)
    assert held.quantity == Decimal("7")
    assert held.average_price == Decimal("6.00")
    assert held.realized_pnl == Decimal("500")
    assert state.realized_pnl_total == Decimal("500")
    assert state.open_exposure == Decimal("4200")


def test_apply_when_long_fully_closed_removes_position_and_realises_loss() -> None:
    # Act
    state = folded(fill(quantity="12", price="6.00"), close(price="5.50"))

    # Assert
    assert "P-1" not in state.positions
    assert state.open_positions == 0
    assert state.open_exposure == 0
    assert state.realized_pnl_total == Decimal("-600")
    assert state.realized_pnl_days == {date(2026, 2, 3): Decimal("-600")}


def test_apply_when_short_partially_then_fully_closed_realises_pnl_reversed() -> None:
    # Arrange
    opened = folded(fill(side="short", quantity="10", price="4.00"))

    # Act
    partly = fold(stream(close(price="3.00", quantity="4"), first=2), opened)
    fully = fold(stream(close(price="5.00", occurred_at="2026-02-03T17:50:00Z"), first=3), partly)

    # Assert
    assert position(partly).quantity == Decimal("6")
    assert partly.realized_pnl_total == Decimal("400")
    assert fully.open_positions == 0
    assert fully.realized_pnl_total == Decimal("-200")


def test_apply_when_close_quantity_exceeds_open_clamps_to_open_quantity() -> None:
    # Act
    state = folded(fill(quantity="12", price="6.00"), close(price="7.00", quantity="20"))

    # Assert
    assert state.open_positions == 0
    assert state.realized_pnl_total == Decimal("1200")


def test_apply_when_close_names_unknown_position_changes_only_sequence() -> None:
    # Arrange
    before = folded(fill(), issue())
    event = stored(close("P-404", price="7.00", occurred_at="2026-02-03T18:00:00Z"), 3)

    # Act
    after = apply(before, event)

    # Assert
    assert after.sequence == 3
    assert after.last_occurred_at == datetime(2026, 2, 3, 18, 0, tzinfo=UTC)
    assert after.positions == before.positions
    assert after.pending == before.pending
    assert after.realized_pnl_total == before.realized_pnl_total
    assert after.realized_pnl_days == {}


def test_apply_when_realisations_cross_utc_midnight_books_each_on_its_own_day() -> None:
    # Act
    state = folded(
        fill("P-1", quantity="1", price="6.00", occurred_at="2026-02-03T20:00:00Z"),
        fill("P-2", quantity="1", price="6.00", occurred_at="2026-02-03T20:00:00Z"),
        close("P-1", price="5.00", occurred_at="2026-02-03T23:59:59Z"),
        # 19:30 in New York is already 00:30 the next day in UTC.
        close("P-2", price="8.00", occurred_at="2026-02-03T19:30:00-05:00"),
    )

    # Assert
    assert state.realized_pnl_on(date(2026, 2, 4)) == Decimal("200")
    assert state.realized_pnl_on(date(2026, 2, 3)) == Decimal("-100")
    assert state.realized_pnl_total == Decimal("100")


def test_apply_when_realisation_is_stamped_with_an_earlier_day_books_it_on_that_day() -> None:
    # Act
    state = folded(
        fill("P-1", quantity="1", price="6.00", occurred_at="2026-02-03T20:00:00Z"),
        fill("P-2", quantity="1", price="6.00", occurred_at="2026-02-03T20:00:00Z"),
        close("P-1", price="5.00", occurred_at="2026-02-04T10:00:00Z"),
        close("P-2", price="9.00", occurred_at="2026-02-03T21:00:00Z"),
    )

    # Assert: each day keeps its own figure; today's loss stays visible to the gate.
    assert state.realized_pnl_on(date(2026, 2, 4)) == Decimal("-100")
    assert state.realized_pnl_on(date(2026, 2, 3)) == Decimal("300")
    assert state.realized_pnl_total == Decimal("200")


def test_apply_when_a_profit_is_stamped_tomorrow_keeps_todays_loss() -> None:
    # Act: the daily-loss hole of the review: $990 lost today, $0.01 stamped tomorrow.
    state = folded(
        fill("P-1", quantity="1", price="10.00", occurred_at="2026-02-03T20:00:00Z"),
        fill("P-2", quantity="1", price="1.00", occurred_at="2026-02-03T20:00:00Z"),
        close("P-1", price="0.10", occurred_at="2026-02-03T21:00:00Z"),
        close("P-2", price="1.0001", occurred_at="2026-02-04T00:00:01Z"),
    )

    # Assert
    assert state.realized_pnl_on(date(2026, 2, 3)) == Decimal("-990.00")
    assert state.realized_pnl_on(date(2026, 2, 4)) == Decimal("0.0100")


def test_apply_when_a_report_is_older_than_the_days_kept_counts_in_total_only() -> None:
    # Act
    state = folded(
        fill("P-1", quantity="1", price="6.00", occurred_at="2026-02-03T20:00:00Z"),
        fill("P-2", quantity="1", price="6.00", occurred_at="2026-02-03T20:00:00Z"),
        close("P-1", price="5.00", occurred_at="2026-02-20T10:00:00Z"),
        close("P-2", price="9.00", occurred_at="2026-02-03T21:00:00Z"),
    )

    # Assert
    assert state.realized_pnl_days == {date(2026, 2, 20): Decimal("-100")}
    assert state.realized_pnl_total == Decimal("200")


def test_apply_when_days_go_by_keeps_only_the_last_seven() -> None:
    # Act
    events = [fill(f"P-{day}", quantity="1", price="6.00",
                   occurred_at=f"2026-02-{day:02d}T10:00:00Z") for day in range(1, 11)]
    events += [close(f"P-{day}", price="7.00", occurred_at=f"2026-02-{day:02d}T11:00:00Z")
               for day in range(1, 11)]
    state = folded(*events)

    # Assert
    assert sorted(state.realized_pnl_days) == [date(2026, 2, day) for day in range(4, 11)]
    assert state.realized_pnl_total == Decimal("1000")


# --- Intents -------------------------------------------------------------------------------------


def test_apply_when_intent_issued_reserves_its_notional() -> None:
    # Act
    state = folded(limits(), issue("I-1", quantity="3", limit_price="6.00", multiplier="100"))

    # Assert
    pending = state.pending["I-1"]
    assert pending.issued_sequence == 2
    assert pending.signal_id == "S-I-1"
    assert pending.expires_at == datetime(2026, 2, 3, 17, 34, 4, tzinfo=UTC)
    assert state.pending_count == 1
    assert state.pending_exposure == Decimal("1800")
    assert state.exposure == Decimal("1800")


@pytest.mark.parametrize("event_type", ["IntentRejected", "IntentExpired", "IntentCancelled"])
def test_apply_when_intent_released_frees_its_reservation(event_type: str) -> None:
    # Act
    state = folded(issue("I-1"), issue("I-2"), release("I-1", event_type=event_type))

    # Assert
    assert set(state.pending) == {"I-2"}
    assert state.pending_exposure == Decimal("1800")


def test_apply_when_unknown_intent_released_changes_only_sequence() -> None:
    # Arrange
    before = folded(issue("I-1"))

    # Act
    after = apply(before, stored(release("I-404"), 2))

    # Assert
    assert after.pending == before.pending
    assert after.sequence == 2


def test_apply_when_fill_names_pending_intent_releases_it_and_opens_position() -> None:
    # Act
    state = folded(issue("I-1"), fill(intent_id="I-1", quantity="3", price="5.90"))

    # Assert
    assert state.pending_count == 0
    assert state.pending_exposure == 0
    assert state.open_positions == 1
    assert state.open_exposure == Decimal("1770")


def test_apply_when_fill_names_expired_intent_still_records_fill() -> None:
    # Act
    state = folded(
        issue("I-1"),
        release("I-1", event_type="IntentExpired"),
        fill(intent_id="I-1", quantity="3", price="5.90"),
    )

    # Assert
    assert state.pending_count == 0
    assert position(state).quantity == Decimal("3")


# --- Limits, halts, decisions --------------------------------------------------------------------


def test_apply_when_limits_set_replaces_previous_limits() -> None:
    # Act
    state = folded(
        limits(5, "10000"),
        limits(3, "2500.50", max_order_notional="1000", daily_loss_limit="300"),
    )

    # Assert
    assert state.limits == Limits(
        max_open_positions=3,
        max_exposure=Decimal("2500.50"),
        max_order_notional=Decimal("1000"),
        daily_loss_limit=Decimal("300"),
    )


def test_apply_when_trading_halted_then_resumed_clears_halt_and_reason() -> None:
    # Arrange
    halt = unstored("TradingHalted", {"reason": "exposure breach"})
    resume = unstored("TradingResumed", {})

    # Act
    halted = folded(halt)
    resumed = fold(stream(resume, first=2), halted)

    # Assert
    assert halted.halted is True
    assert halted.halt_reason == "exposure breach"
    assert resumed.halted is False
    assert resumed.halt_reason is None


def test_apply_when_signal_evaluated_changes_only_sequence() -> None:
    # Arrange
    before = folded(fill(), issue())

    # Act
    after = apply(before, stored(signal_evaluated(), 3))

    # Assert
    assert after.sequence == 3
    assert after.positions == before.positions
    assert after.pending == before.pending
    assert after.limits == before.limits


# --- Trading states: active, reducing, halted -----------------------------------------------------


def reduced(reason: str = "risk review") -> Event:
    return unstored("TradingReduced", {"reason": reason})


def halted(reason: str = "manual stop") -> Event:
    return unstored("TradingHalted", {"reason": reason})


def resumed() -> Event:
    return unstored("TradingResumed", {})


def test_initial_state_when_new_account_is_active_with_no_recent_intents() -> None:
    # Act
    state = initial_state(ACCOUNT)

    # Assert
    assert (state.halted, state.reducing, state.trading_state) == (False, False, "active")
    assert state.recent_intents == ()


@pytest.mark.parametrize(("events", "expected"), [
    ([reduced("risk review")], (False, True, "risk review", "reducing")),
    ([reduced("risk review"), reduced("flatten")], (False, True, "flatten", "reducing")),
    ([reduced("risk review"), halted("manual stop")], (True, False, "manual stop", "halted")),
    ([halted("manual stop"), reduced("flatten")], (False, True, "flatten", "reducing")),
    ([reduced("risk review"), resumed()], (False, False, None, "active")),
    ([halted("manual stop"), resumed()], (False, False, None, "active")),
    ([reduced("risk review"), halted("manual stop"), resumed()], (False, False, None, "active")),
], ids=["reduced", "reduced-again", "reduced-then-halted", "halted-then-reduced",
        "reduced-then-resumed", "halted-then-resumed", "reduced-halted-resumed"])
def test_apply_when_trading_state_changes_the_last_change_wins(
    events: list[Event], expected: tuple[bool, bool, str | None, str],
) -> None:
    # Act
    state = folded(limits(), *events)

    # Assert
    assert (state.halted, state.reducing, state.halt_reason, state.trading_state) == expected


def test_account_state_when_both_halted_and_reducing_is_halted() -> None:
    # Arrange: the fold never sets both; a state built by hand may, and the halt wins.
    state = dataclasses.replace(initial_state(ACCOUNT), halted=True, reducing=True)

    # Act / Assert
    assert state.trading_state == "halted"


def test_apply_when_trading_reduced_keeps_positions_intents_and_limits() -> None:
    # Arrange
    before = folded(limits(), fill(), issue())

    # Act
    after = apply(before, stored(reduced(), 4))

    # Assert
    assert (after.positions, after.pending, after.limits) == (
        before.positions, before.pending, before.limits)
    assert after.recent_intents == before.recent_intents


# --- Releases: a cancel, and a close that executes an intent --------------------------------------


def test_apply_when_intent_cancelled_it_still_counts_as_a_recent_order() -> None:
    # Act
    state = folded(issue("I-1"), release("I-1", event_type="IntentCancelled"))

    # Assert
    assert state.pending_count == 0
    assert [recent.intent_id for recent in state.recent_intents] == ["I-1"]


def test_apply_when_close_names_its_intent_releases_it_and_reduces_the_position() -> None:
    # Arrange: long 12; a reduction of 3 is pending on P-1, and another intent I-2.
    before = folded(fill(quantity="12", price="6.00"),
                    issue("I-1", side="short", quantity="3", position_id="P-1"), issue("I-2"))

    # Act
    state = apply(before, stored(close(price="6.50", quantity="3", intent_id="I-1"), 4))

    # Assert
    assert set(state.pending) == {"I-2"}
    assert position(state).quantity == Decimal("9")
    assert state.realized_pnl_total == Decimal("150")


def test_apply_when_close_of_everything_names_its_intent_releases_it_and_closes() -> None:
    # Act
    state = folded(fill(quantity="12", price="6.00"),
                   issue("I-1", side="short", quantity="12", position_id="P-1"),
                   close(price="5.00", intent_id="I-1"))

    # Assert
    assert state.pending_count == 0
    assert state.open_positions == 0
    assert state.exposure == 0
    assert state.realized_pnl_total == Decimal("-1200")


def test_apply_when_close_of_an_unknown_position_names_its_intent_still_releases_it() -> None:
    # Act
    state = folded(fill(), issue("I-1", side="short", position_id="P-404"),
                   close("P-404", price="5.00", intent_id="I-1"))

    # Assert
    assert state.pending_count == 0
    assert position(state).quantity == Decimal("12")
    assert state.realized_pnl_total == 0


def test_apply_when_close_names_no_intent_leaves_pending_intents() -> None:
    # Act
    state = folded(fill(), issue("I-1", side="short", quantity="3", position_id="P-1"),
                   close(price="6.00", quantity="3"))

    # Assert
    assert set(state.pending) == {"I-1"}
    assert position(state).quantity == Decimal("9")


# --- Recent intents: what the order-rate and duplicate gates look back on -------------------------


def at(seconds: float) -> str:
    """Return the time `seconds` after MORNING, as an event states it."""
    return format_time(MORNING_AT + timedelta(seconds=seconds))


def test_apply_when_intent_issued_records_it_as_a_recent_intent() -> None:
    # Act
    state = folded(issue("I-1", quantity="3", limit_price="6.00", side="short", occurred_at=at(7)))

    # Assert
    assert state.recent_intents == (RecentIntent(
        intent_id="I-1", occurred_at=MORNING_AT + timedelta(seconds=7), symbol=SYMBOL,
        side="short", quantity=Decimal("3"), limit_price=Decimal("6.00")),)
    assert state.intents_since(MORNING_AT + timedelta(seconds=6)) == list(state.recent_intents)
    assert state.intents_since(MORNING_AT + timedelta(seconds=7)) == []


@pytest.mark.parametrize(("window", "age", "kept"), [
    (None, 59, True), (None, 60, False), (None, 61, False),
    # A duplicate window shorter than the rate's 60 s keeps 60 s.
    (30, 45, True), (30, 60, False),
    # A longer one keeps that long.
    (120, 90, True), (120, 119, True), (120, 120, False), (120, 121, False),
    (86_400, 86_399, True), (86_400, 86_400, False),
])
def test_apply_when_intent_issued_prunes_recent_intents_beyond_the_longer_window(
    window: int | None, age: int, kept: bool,
) -> None:
    # Arrange: I-old issued `age` seconds before I-new; I-mid 1 s before.
    events = [limits(duplicate_window_s=window), issue("I-old", occurred_at=at(0)),
              issue("I-mid", occurred_at=at(age - 1)), issue("I-new", occurred_at=at(age))]

    # Act
    state = folded(*events)

    # Assert
    expected = ["I-old", "I-mid", "I-new"] if kept else ["I-mid", "I-new"]
    assert [recent.intent_id for recent in state.recent_intents] == expected


def test_apply_when_no_intent_is_issued_keeps_recent_intents_however_late() -> None:
    # Arrange
    before = folded(limits(), issue("I-1", occurred_at=at(0)))

    # Act: later events of every other kind prune nothing; the gates look at the time.
    state = fold(stream(fill(occurred_at=at(3600)), release("I-1"), reduced(), first=3), before)

    # Assert
    assert [recent.intent_id for recent in state.recent_intents] == ["I-1"]


def test_apply_when_recent_intents_are_at_the_cap_drops_the_oldest() -> None:
    # Arrange: ORDER_RATE_MAX intents in the same second.
    base = folded(limits())
    recent = tuple(RecentIntent(intent_id=f"I-{index}", occurred_at=MORNING_AT, symbol=SYMBOL,
                                side="long", quantity=Decimal("1"), limit_price=Decimal("1"))
                   for index in range(ORDER_RATE_MAX))
    before = dataclasses.replace(base, recent_intents=recent)

    # Act
    state = apply(before, stored(issue("I-new", occurred_at=at(1)), 2))

    # Assert
    assert len(state.recent_intents) == ORDER_RATE_MAX
    assert state.recent_intents[0].intent_id == "I-1"
    assert state.recent_intents[-1].intent_id == "I-new"


def test_apply_when_limits_set_folds_the_new_limits() -> None:
    # Act
    state = folded(limits(3, "2500", max_orders_per_minute=4, max_underlying_exposure="1000.50",
                          duplicate_window_s=30))

    # Assert
    assert state.limits == Limits(
        max_open_positions=3, max_exposure=Decimal("2500"), max_order_notional=None,
        daily_loss_limit=None, max_orders_per_minute=4,
        max_underlying_exposure=Decimal("1000.50"), duplicate_window_s=30)


# --- Values --------------------------------------------------------------------------------------


def test_fold_when_same_events_folded_twice_gives_equal_distinct_states() -> None:
    # Arrange
    events = stream(limits(), fill(), issue(), close(price="6.40", quantity="2"))

    # Act
    first = fold(events, account=ACCOUNT)
    second = fold(events, account=ACCOUNT)

    # Assert
    assert first == second
    assert first is not second
    assert first != initial_state(ACCOUNT)


def test_account_state_when_mapping_mutated_refuses() -> None:
    # Arrange
    state = folded(fill())

    # Act / Assert
    with pytest.raises(TypeError):
        state.positions["P-2"] = position(state)  # type: ignore[index]


def test_account_state_when_built_from_a_dict_is_not_changed_through_that_dict() -> None:
    # Arrange
    held = position(folded(fill()))
    positions = {"P-1": held}
    state = AccountState(
        account=ACCOUNT,
        sequence=1,
        positions=positions,
        pending={},
        limits=None,
        halted=False,
        halt_reason=None,
        realized_pnl_days={},
        realized_pnl_total=Decimal("0"),
        last_occurred_at=None,
    )

    # Act
    positions.clear()

    # Assert
    assert isinstance(state.positions, MappingProxyType)
    assert state.open_positions == 1


def test_apply_when_state_folded_further_leaves_earlier_state_unchanged() -> None:
    # Arrange
    before = folded(fill())

    # Act
    apply(before, stored(close(price="7.00"), 2))

    # Assert
    assert before.open_positions == 1
    assert before.sequence == 1


# --- The incident --------------------------------------------------------------------------------

# (symbol, quantity, price): 12 put positions of $1,640 to $17,100 opened in 13 minutes.
INCIDENT_FILLS = [
    ("MSFT 260220P00400000", "12", "6.00"),
    ("CRM 260220P00270000", "4", "4.10"),
    ("META 260220P00700000", "10", "17.10"),
    ("AVGO 260220P00220000", "9", "11.00"),
    ("AMD 260220P00110000", "8", "5.25"),
    ("AAPL 260220P00230000", "15", "3.20"),
    ("QCOM 260220P00150000", "6", "4.50"),
    ("QCOM 260220P00145000", "7", "3.80"),
    ("GOOGL 260220P00190000", "10", "8.40"),
    ("NVDA 260220P00125000", "11", "12.00"),
    ("ORCL 260220P00160000", "12", "7.75"),
    ("INTC 260220P00020000", "20", "1.05"),
]


def test_fold_when_incident_fills_arrive_counts_every_position_and_exposure() -> None:
    # Arrange
    fills = [
        fill(
            f"P-{index + 1}",
            symbol=symbol,
            quantity=quantity,
            price=price,
            occurred_at=f"2026-02-03T17:{20 + index:02d}:00Z",
        )
        for index, (symbol, quantity, price) in enumerate(INCIDENT_FILLS)
    ]

    # Act
    state = folded(limits(5, "10000"), *fills)

    # Assert
    notionals = sorted(held.notional for held in state.positions.values())
    assert state.open_positions == 12
    assert notionals[0] == Decimal("1640")
    assert notionals[-1] == Decimal("17100")
    assert state.open_exposure == Decimal("83200")
    assert state.exposure == Decimal("83200")
    assert state.limits is not None
    assert state.open_positions > state.limits.max_open_positions
    assert state.open_exposure > state.limits.max_exposure
