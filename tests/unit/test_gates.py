"""Goal: the risk gates allow a signal only when every limit has room for it (pending intents
counted like open positions), fail closed when the view cannot be proved current, the account is
halted or its limits were never set, report the figures each gate compared, and name the first
failed gate in order of precedence. The newer limits block at their boundary and pass just below:
the orders issued in the 60 s before a decision (one 60 s old no longer counts), open + pending
exposure on the signal's underlying only, an identical intent (symbol, side, quantity, limit price)
within the duplicate window. While reducing, openings are blocked and only an order that reduces an
open position (names it, other side, at most its quantity, same symbol) passes, past the opening
limits but not the rate and duplicate ones; a halt overrides reducing. The incident of
docs/design.md (11 open positions worth $98,630 against limits of 5 and $10,000) must be blocked
whatever the signal.

Method: build account states by folding stored events made through the public JSON contract
(`decode_event` then `with_ledger_fields`, sequences 1..n), or by constructing `AccountState`
directly; decode signals from JSON; pin `now` and the freshness; call `evaluate` and compare the
decision and its gate figures with figures worked out by hand. Arrange/Act/Assert, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from dispatcher import gates
from dispatcher.gates import Decision, Freshness, evaluate
from ledger.events import (
    Event,
    GateResult,
    Signal,
    decode_event,
    decode_signal,
    format_time,
    with_ledger_fields,
)
from projections.fold import AccountState, Limits, Position, fold, initial_state

ACCOUNT = "large"
MORNING = "2026-02-03T17:29:04Z"
YESTERDAY_EVENING = "2026-02-02T20:15:00Z"
NOW = datetime(2026, 2, 3, 17, 45, tzinfo=UTC)
RECORDED_AT = datetime(2026, 2, 3, 17, 45, tzinfo=UTC)
SYMBOL = "MSFT 260220P00400000"
FOLD_BOUND = 5

# --- Factories: every event and signal goes through the JSON contract ----------------------------


def unstored(event_type: str, data: Mapping[str, Any], *, occurred_at: str = MORNING) -> Event:
    document = {"account": ACCOUNT, "type": event_type, "occurred_at": occurred_at, "data": data}
    return decode_event(json.dumps(document))


def folded(*events: Event) -> AccountState:
    stored = [
        with_ledger_fields(event, sequence=index, recorded_at=RECORDED_AT,
                           global_position=index - 1)
        for index, event in enumerate(events, start=1)
    ]
    return fold(stored, account=ACCOUNT)


def fill(position_id: str, *, quantity: str = "1", price: str = "1.00", multiplier: str = "100",
         symbol: str = SYMBOL, occurred_at: str = MORNING, fill_id: str | None = None,
         side: str = "long") -> Event:
    data = {
        "fill_id": fill_id or f"X-{position_id}",
        "position_id": position_id,
        "symbol": symbol,
        "instrument": "option",
        "side": side,
        "quantity": quantity,
        "price": price,
        "multiplier": multiplier,
    }
    return unstored("OrderFilled", data, occurred_at=occurred_at)


def close(position_id: str, *, price: str, quantity: str | None = None,
          occurred_at: str = MORNING) -> Event:
    data = {"position_id": position_id, "price": price, "reason": "stop_loss"}
    if quantity is not None:
        data["quantity"] = quantity
    return unstored("PositionClosed", data, occurred_at=occurred_at)


def issue(intent_id: str, *, quantity: str = "1", limit_price: str = "1.00",
          multiplier: str = "100", symbol: str = SYMBOL, side: str = "long",
          occurred_at: str = MORNING, position_id: str | None = None) -> Event:
    data: dict[str, Any] = {
        "intent_id": intent_id,
        "signal_id": f"S-{intent_id}",
        "position_id": position_id or f"P-{intent_id}",
        "symbol": symbol,
        "instrument": "option",
        "side": side,
        "quantity": quantity,
        "limit_price": limit_price,
        "multiplier": multiplier,
        "expires_at": "2026-02-03T17:50:00Z",
        # An intent naming a position it reduces, as the dispatcher issues it.
        "reducing": position_id is not None,
    }
    return unstored("IntentIssued", data, occurred_at=occurred_at)


def reject(intent_id: str) -> Event:
    return unstored("IntentRejected", {"intent_id": intent_id, "reason": "broker refused"})


def limits(max_open_positions: int = 5, max_exposure: str = "10000", *,
           max_order_notional: str | None = None, daily_loss_limit: str | None = None,
           max_orders_per_minute: int | None = None, max_underlying_exposure: str | None = None,
           duplicate_window_s: int | None = None, occurred_at: str = MORNING) -> Event:
    data: dict[str, Any] = {"max_open_positions": max_open_positions,
                            "max_exposure": max_exposure}
    optional: dict[str, Any] = {
        "max_order_notional": max_order_notional, "daily_loss_limit": daily_loss_limit,
        "max_orders_per_minute": max_orders_per_minute,
        "max_underlying_exposure": max_underlying_exposure,
        "duplicate_window_s": duplicate_window_s,
    }
    data.update({name: value for name, value in optional.items() if value is not None})
    return unstored("LimitsSet", data, occurred_at=occurred_at)


def halt(reason: str) -> Event:
    return unstored("TradingHalted", {"reason": reason})


def resume() -> Event:
    return unstored("TradingResumed", {"reason": "checked"})


def reduce_only(reason: str) -> Event:
    return unstored("TradingReduced", {"reason": reason})


def cancel(intent_id: str) -> Event:
    return unstored("IntentCancelled", {"intent_id": intent_id, "reason": "halted"})


def ago(seconds: float) -> str:
    """Return the time `seconds` before NOW, as an event states it."""
    return format_time(NOW - timedelta(seconds=seconds))


def signal(*, quantity: str = "1", limit_price: str = "1.00", multiplier: str = "100",
           signal_id: str = "S-1", symbol: str = SYMBOL, account: str = ACCOUNT,
           side: str = "long", position_id: str | None = None) -> Signal:
    document = {
        "signal_id": signal_id,
        "account": account,
        "occurred_at": "2026-02-03T17:44:00Z",
        "symbol": symbol,
        "instrument": "option",
        "side": side,
        "quantity": quantity,
        "limit_price": limit_price,
        "multiplier": multiplier,
    }
    if position_id is not None:
        document["position_id"] = position_id
    return decode_signal(json.dumps(document))


def current(state: AccountState) -> Freshness:
    return Freshness(head=state.sequence, state_sequence=state.sequence, fold_bound=FOLD_BOUND)


def gate(decision: Decision, code: str) -> GateResult:
    found = [result for result in decision.gates if result.gate == code]
    assert len(found) == 1, (code, decision.gates)
    return found[0]


def gate_codes(decision: Decision) -> list[str]:
    return [result.gate for result in decision.gates]


def position(position_id: str, notional: str) -> Position:
    return Position(
        position_id=position_id,
        symbol=SYMBOL,
        instrument="option",
        side="long",
        quantity=Decimal("1"),
        average_price=Decimal(notional) / 100,
        multiplier=Decimal("100"),
        realized_pnl=Decimal("0"),
        opened_at=NOW - timedelta(hours=1),
    )


# --- Allowed -------------------------------------------------------------------------------------


def test_evaluate_when_every_gate_has_room_allows_and_reports_every_gate_figures() -> None:
    # Arrange: 2 open ($1,200 + $800), 1 pending ($500), $100 lost today; order of $800.
    state = folded(
        limits(5, "10000", max_order_notional="2000", daily_loss_limit="500"),
        fill("P-1", quantity="2", price="6.00"),
        fill("P-2", quantity="1", price="8.00"),
        fill("P-3", quantity="1", price="3.00"),
        close("P-3", price="2.00"),
        issue("I-1", quantity="1", limit_price="5.00"),
    )
    order = signal(quantity="2", limit_price="4.00")

    # Act
    decision = evaluate(state, order, NOW, current(state))

    # Assert
    assert decision.allowed is True
    assert decision.code is None
    assert decision.reason == "all gates passed"
    assert all(result.passed for result in decision.gates)
    stale = gate(decision, gates.PROJECTION_STALE)
    assert (stale.value, stale.limit) == (Decimal("0"), Decimal(FOLD_BOUND))
    assert gate(decision, gates.TRADING_HALTED).reason == "Trading not halted"
    order_gate = gate(decision, gates.MAX_ORDER_NOTIONAL)
    assert (order_gate.value, order_gate.limit) == (Decimal("800"), Decimal("2000"))
    assert order_gate.reason == "Order $800.00 <= $2,000.00"
    positions = gate(decision, gates.MAX_OPEN_POSITIONS)
    assert (positions.value, positions.limit) == (Decimal("4"), Decimal("5"))
    assert positions.reason == "Positions 2 + 1 pending + 1 <= 5"
    exposure = gate(decision, gates.MAX_EXPOSURE)
    assert (exposure.value, exposure.limit) == (Decimal("3300"), Decimal("10000"))
    assert exposure.reason == "Exposure $2,500.00 + $800.00 <= $10,000.00"
    loss = gate(decision, gates.DAILY_LOSS_LIMIT)
    assert (loss.value, loss.limit) == (Decimal("100"), Decimal("500"))
    assert loss.reason == "Daily loss $100.00 < $500.00"


def test_evaluate_when_gates_reported_lists_them_in_order_of_precedence() -> None:
    # Arrange
    state = folded(limits(5, "10000", max_order_notional="2000", daily_loss_limit="500"))

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    codes = gate_codes(decision)
    assert codes == sorted(codes, key=gates.GATES.index)
    assert {gates.PROJECTION_STALE, gates.TRADING_HALTED, gates.MAX_ORDER_NOTIONAL,
            gates.MAX_OPEN_POSITIONS, gates.MAX_EXPOSURE, gates.DAILY_LOSS_LIMIT} <= set(codes)


def test_evaluate_when_optional_limits_not_set_passes_them_with_no_limit() -> None:
    # Arrange
    state = folded(limits(5, "10000"))

    # Act
    decision = evaluate(state, signal(quantity="3", limit_price="6.00"), NOW, current(state))

    # Assert
    assert decision.allowed is True
    order_gate = gate(decision, gates.MAX_ORDER_NOTIONAL)
    assert order_gate.limit is None
    assert order_gate.reason == "Order $1,800.00: no limit set"
    loss = gate(decision, gates.DAILY_LOSS_LIMIT)
    assert loss.limit is None
    assert loss.reason == "Daily loss: no limit set"


def test_evaluate_when_allowed_code_is_none() -> None:
    # Arrange
    state = folded(limits(1, "100"))

    # Act
    decision = evaluate(state, signal(quantity="1", limit_price="1.00"), NOW, current(state))

    # Assert
    assert decision.allowed is True
    assert decision.code is None


# --- Open positions, counting pending intents ----------------------------------------------------


def test_evaluate_when_5_of_5_positions_open_blocks_with_max_open_positions() -> None:
    # Arrange
    state = folded(limits(5, "10000"), *[fill(f"P-{index}") for index in range(1, 6)])

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.allowed is False
    assert decision.code == gates.MAX_OPEN_POSITIONS
    assert "Positions 5 + 0 pending + 1 > 5" in decision.reason
    positions = gate(decision, gates.MAX_OPEN_POSITIONS)
    assert positions.passed is False
    assert (positions.value, positions.limit) == (Decimal("6"), Decimal("5"))


def test_evaluate_when_3_open_and_2_pending_blocks_a_6th() -> None:
    # Arrange
    state = folded(
        limits(5, "10000"),
        fill("P-1"), fill("P-2"), fill("P-3"),
        issue("I-1"), issue("I-2"),
    )

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert state.open_positions == 3
    assert state.pending_count == 2
    assert decision.allowed is False
    assert decision.code == gates.MAX_OPEN_POSITIONS
    assert "Positions 3 + 2 pending + 1 > 5" in decision.reason


def test_evaluate_when_pending_intent_released_allows_again() -> None:
    # Arrange
    state = folded(
        limits(5, "10000"),
        fill("P-1"), fill("P-2"), fill("P-3"),
        issue("I-1"), issue("I-2"),
        reject("I-2"),
    )

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.allowed is True
    assert gate(decision, gates.MAX_OPEN_POSITIONS).reason == "Positions 3 + 1 pending + 1 <= 5"


def test_evaluate_when_4_of_5_positions_open_allows_the_5th() -> None:
    # Arrange
    state = folded(limits(5, "10000"), *[fill(f"P-{index}") for index in range(1, 5)])

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.allowed is True
    assert gate(decision, gates.MAX_OPEN_POSITIONS).value == Decimal("5")


def test_evaluate_when_max_open_positions_is_0_blocks_any_signal() -> None:
    # Arrange
    state = folded(limits(0, "10000"))

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.code == gates.MAX_OPEN_POSITIONS
    assert "Positions 0 + 0 pending + 1 > 0" in decision.reason


# --- Exposure and order notional -----------------------------------------------------------------


def test_evaluate_when_9000_open_and_1800_order_at_10000_blocks_with_max_exposure() -> None:
    # Arrange
    state = folded(
        limits(5, "10000"),
        fill("P-1", quantity="12", price="6.00"),
        fill("P-2", quantity="3", price="6.00"),
    )

    # Act
    decision = evaluate(state, signal(quantity="3", limit_price="6.00"), NOW, current(state))

    # Assert
    assert state.exposure == Decimal("9000")
    assert decision.allowed is False
    assert decision.code == gates.MAX_EXPOSURE
    assert "Exposure $9,000.00 + $1,800.00 > $10,000.00" in decision.reason
    exposure = gate(decision, gates.MAX_EXPOSURE)
    assert (exposure.value, exposure.limit) == (Decimal("10800"), Decimal("10000"))


def test_evaluate_when_exposure_is_partly_pending_counts_it_and_blocks() -> None:
    # Arrange: $7,200 open + $1,800 reserved by a pending intent.
    state = folded(
        limits(5, "10000"),
        fill("P-1", quantity="12", price="6.00"),
        issue("I-1", quantity="3", limit_price="6.00"),
    )

    # Act
    decision = evaluate(state, signal(quantity="3", limit_price="6.00"), NOW, current(state))

    # Assert
    assert decision.code == gates.MAX_EXPOSURE
    assert "Exposure $9,000.00 + $1,800.00 > $10,000.00" in decision.reason


def test_evaluate_when_exposure_reaches_exactly_the_limit_allows() -> None:
    # Arrange
    state = folded(limits(5, "10000"), fill("P-1", quantity="15", price="6.00"))

    # Act
    decision = evaluate(state, signal(quantity="1", limit_price="10.00"), NOW, current(state))

    # Assert
    assert decision.allowed is True
    exposure = gate(decision, gates.MAX_EXPOSURE)
    assert exposure.value == exposure.limit == Decimal("10000")
    assert exposure.reason == "Exposure $9,000.00 + $1,000.00 <= $10,000.00"


def test_evaluate_when_exposure_one_cent_over_the_limit_blocks() -> None:
    # Arrange
    state = folded(limits(5, "10000"), fill("P-1", quantity="15", price="6.00"))
    order = signal(quantity="1", limit_price="1000.01", multiplier="1")

    # Act
    decision = evaluate(state, order, NOW, current(state))

    # Assert
    assert decision.code == gates.MAX_EXPOSURE
    assert "Exposure $9,000.00 + $1,000.01 > $10,000.00" in decision.reason


def test_evaluate_when_order_notional_over_its_limit_blocks_with_max_order_notional() -> None:
    # Arrange
    state = folded(limits(5, "10000", max_order_notional="1500"))

    # Act
    decision = evaluate(state, signal(quantity="3", limit_price="6.00"), NOW, current(state))

    # Assert
    assert decision.allowed is False
    assert decision.code == gates.MAX_ORDER_NOTIONAL
    assert "Order $1,800.00 > $1,500.00" in decision.reason
    order_gate = gate(decision, gates.MAX_ORDER_NOTIONAL)
    assert (order_gate.value, order_gate.limit) == (Decimal("1800"), Decimal("1500"))


def test_evaluate_when_order_notional_exactly_at_its_limit_allows() -> None:
    # Arrange
    state = folded(limits(5, "10000", max_order_notional="1800"))

    # Act
    decision = evaluate(state, signal(quantity="3", limit_price="6.00"), NOW, current(state))

    # Assert
    assert decision.allowed is True
    assert gate(decision, gates.MAX_ORDER_NOTIONAL).reason == "Order $1,800.00 <= $1,800.00"


# --- Daily loss ----------------------------------------------------------------------------------


def test_evaluate_when_daily_loss_reached_blocks_with_daily_loss_limit() -> None:
    # Arrange: bought at $6.00, sold at $1.00, 1 contract: $500 lost today.
    state = folded(
        limits(5, "10000", daily_loss_limit="500"),
        fill("P-1", price="6.00"),
        close("P-1", price="1.00"),
    )

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.allowed is False
    assert decision.code == gates.DAILY_LOSS_LIMIT
    assert "Daily loss $500.00 >= $500.00" in decision.reason
    loss = gate(decision, gates.DAILY_LOSS_LIMIT)
    assert (loss.value, loss.limit) == (Decimal("500"), Decimal("500"))


def test_evaluate_when_a_profit_is_stamped_tomorrow_still_blocks_todays_loss() -> None:
    # Arrange: $990 lost today; then a $0.01 profit whose report is stamped tomorrow.
    state = folded(
        limits(5, "10000", daily_loss_limit="500"),
        fill("P-1", price="10.00"),
        close("P-1", price="0.10"),
        fill("P-2", price="1.00", multiplier="1"),
        close("P-2", price="1.01", occurred_at="2026-02-04T00:00:01Z"),
    )

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.code == gates.DAILY_LOSS_LIMIT
    assert gate(decision, gates.DAILY_LOSS_LIMIT).value == Decimal("990")


def test_evaluate_when_daily_loss_below_the_limit_allows() -> None:
    # Arrange
    state = folded(
        limits(5, "10000", daily_loss_limit="500"),
        fill("P-1", price="6.00"),
        close("P-1", price="1.01"),
    )

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.allowed is True
    assert gate(decision, gates.DAILY_LOSS_LIMIT).reason == "Daily loss $499.00 < $500.00"


def test_evaluate_when_loss_was_realised_yesterday_allows() -> None:
    # Arrange
    state = folded(
        limits(5, "10000", daily_loss_limit="500"),
        fill("P-1", price="9.00", occurred_at=YESTERDAY_EVENING),
        close("P-1", price="1.00", occurred_at=YESTERDAY_EVENING),
    )

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert state.realized_pnl_on(date(2026, 2, 2)) == Decimal("-800")
    assert decision.allowed is True
    assert gate(decision, gates.DAILY_LOSS_LIMIT).value == Decimal("0")


def test_evaluate_when_today_is_profitable_reports_a_negative_loss_and_allows() -> None:
    # Arrange
    state = folded(
        limits(5, "10000", daily_loss_limit="500"),
        fill("P-1", price="1.00"),
        close("P-1", price="3.00"),
    )

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.allowed is True
    assert gate(decision, gates.DAILY_LOSS_LIMIT).value == Decimal("-200")


def test_evaluate_when_loss_under_a_dollar_has_a_repeating_average_returns_a_decision() -> None:
    # Arrange: 3 puts at $0.40, $0.40, $0.45 (average $0.41666...), 1 sold at $0.41:
    # realised -$0.6666... (no daily loss limit is needed: the gate always reports the loss).
    state = folded(
        limits(5, "10000"),
        fill("P-1", fill_id="X-1", price="0.40"),
        fill("P-1", fill_id="X-2", price="0.40"),
        fill("P-1", fill_id="X-3", price="0.45"),
        close("P-1", price="0.41", quantity="1"),
    )
    assert -Decimal("0.67") < state.realized_pnl_on(NOW.date()) < -Decimal("0.66")

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.allowed is True
    assert gate(decision, gates.DAILY_LOSS_LIMIT).passed is True


def test_evaluate_when_now_is_same_instant_in_another_timezone_still_blocks_daily_loss() -> None:
    # Arrange: $500 lost at 00:30 UTC on Feb 4; now is 00:45 UTC, i.e. 19:45 on Feb 3 at UTC-5.
    state = folded(
        limits(5, "10000", daily_loss_limit="500"),
        fill("P-1", price="6.00", occurred_at="2026-02-04T00:20:00Z"),
        close("P-1", price="1.00", occurred_at="2026-02-04T00:30:00Z"),
    )
    now_utc = datetime(2026, 2, 4, 0, 45, tzinfo=UTC)
    now_new_york = now_utc.astimezone(timezone(timedelta(hours=-5)))
    assert now_new_york == now_utc

    # Act
    decision = evaluate(state, signal(), now_new_york, current(state))

    # Assert
    assert decision == evaluate(state, signal(), now_utc, current(state))
    assert decision.code == gates.DAILY_LOSS_LIMIT


# --- Fail closed: halted, limits never set, stale projection -------------------------------------


def test_evaluate_when_trading_halted_blocks_with_the_halt_reason() -> None:
    # Arrange
    state = folded(limits(5, "10000"), halt("exposure review after the 17:33 incident"))

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.allowed is False
    assert decision.code == gates.TRADING_HALTED
    assert "Trading halted: exposure review after the 17:33 incident" in decision.reason
    assert gate(decision, gates.TRADING_HALTED).passed is False


def test_evaluate_when_trading_resumed_allows_again() -> None:
    # Arrange
    state = folded(limits(5, "10000"), halt("review"), resume())

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.allowed is True


def test_evaluate_when_limits_never_set_blocks_with_limits_not_set() -> None:
    # Arrange
    state = folded(fill("P-1"))

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.allowed is False
    assert decision.code == gates.LIMITS_NOT_SET
    assert "Limits never set" in decision.reason
    assert gate_codes(decision) == [gates.PROJECTION_STALE, gates.SIGNAL_STALE,
                                    gates.TRADING_HALTED, gates.TRADING_REDUCING,
                                    gates.LIMITS_NOT_SET]


def test_evaluate_when_new_account_has_no_events_blocks_with_limits_not_set() -> None:
    # Arrange
    state = initial_state(ACCOUNT)

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.code == gates.LIMITS_NOT_SET


def test_evaluate_when_lag_beyond_fold_bound_blocks_with_only_the_freshness_gate() -> None:
    # Arrange: the figures are over every limit too, but must not even be reported.
    state = folded(limits(0, "0"), fill("P-1"), halt("review"))
    freshness = Freshness(head=state.sequence + FOLD_BOUND + 1, state_sequence=state.sequence,
                          fold_bound=FOLD_BOUND)

    # Act
    decision = evaluate(state, signal(), NOW, freshness)

    # Assert
    assert decision.allowed is False
    assert decision.code == gates.PROJECTION_STALE
    assert gate_codes(decision) == [gates.PROJECTION_STALE]
    stale = decision.gates[0]
    assert stale.passed is False
    assert stale.value == Decimal(FOLD_BOUND + 1)
    assert stale.limit == Decimal(FOLD_BOUND)
    assert decision.reason == "Projection 6 events behind head 9, beyond the fold bound 5"


def test_evaluate_when_lag_equals_fold_bound_passes_the_freshness_gate() -> None:
    # Arrange
    state = folded(limits(5, "10000"))
    freshness = Freshness(head=state.sequence + FOLD_BOUND, state_sequence=state.sequence,
                          fold_bound=FOLD_BOUND)

    # Act
    decision = evaluate(state, signal(), NOW, freshness)

    # Assert
    assert decision.allowed is True
    stale = gate(decision, gates.PROJECTION_STALE)
    assert stale.passed is True
    assert stale.value == Decimal(FOLD_BOUND)
    assert "within the fold bound" in stale.reason


def test_evaluate_when_state_is_ahead_of_head_blocks_with_projection_stale() -> None:
    # Arrange: a negative lag means the head read is older than the state: not provably current.
    state = folded(limits(5, "10000"), fill("P-1"))
    freshness = Freshness(head=state.sequence - 1, state_sequence=state.sequence,
                          fold_bound=FOLD_BOUND)

    # Act
    decision = evaluate(state, signal(), NOW, freshness)

    # Assert
    assert decision.code == gates.PROJECTION_STALE
    assert decision.gates[0].value == Decimal("-1")


def test_evaluate_when_fold_bound_is_0_and_lag_is_1_blocks() -> None:
    # Arrange
    state = folded(limits(5, "10000"))
    freshness = Freshness(head=state.sequence + 1, state_sequence=state.sequence, fold_bound=0)

    # Act
    decision = evaluate(state, signal(), NOW, freshness)

    # Assert
    assert decision.code == gates.PROJECTION_STALE


# --- Precedence ----------------------------------------------------------------------------------


def test_evaluate_when_gates_listed_are_in_the_documented_order_of_precedence() -> None:
    # Assert
    assert gates.GATES == (
        "projection_stale", "signal_stale", "trading_halted", "trading_reducing",
        "limits_not_set", "reconciliation_stale", "max_order_notional", "max_open_positions",
        "max_exposure", "max_underlying_exposure", "max_order_rate", "duplicate_order",
        "daily_loss_limit",
    )


def test_evaluate_when_halted_and_over_limits_at_once_codes_trading_halted() -> None:
    # Arrange
    state = folded(
        limits(1, "100", max_order_notional="50", daily_loss_limit="0"),
        fill("P-1", quantity="12", price="6.00"),
        halt("manual stop"),
    )

    # Act
    decision = evaluate(state, signal(quantity="3", limit_price="6.00"), NOW, current(state))

    # Assert
    assert decision.allowed is False
    assert decision.code == gates.TRADING_HALTED
    failed = [result.gate for result in decision.gates if not result.passed]
    assert failed == [gates.TRADING_HALTED, gates.MAX_ORDER_NOTIONAL, gates.MAX_OPEN_POSITIONS,
                      gates.MAX_EXPOSURE, gates.DAILY_LOSS_LIMIT]
    assert decision.reason.startswith("Trading halted: manual stop; Order $1,800.00 > $50.00; ")


def test_evaluate_when_halted_and_limits_never_set_codes_trading_halted() -> None:
    # Arrange
    state = folded(halt("manual stop"))

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.code == gates.TRADING_HALTED
    assert [result.gate for result in decision.gates if not result.passed] == [
        gates.TRADING_HALTED, gates.LIMITS_NOT_SET]


def test_evaluate_when_order_and_positions_both_over_codes_max_order_notional() -> None:
    # Arrange
    state = folded(limits(1, "100000", max_order_notional="100"), fill("P-1"))

    # Act
    decision = evaluate(state, signal(quantity="2", limit_price="6.00"), NOW, current(state))

    # Assert
    assert decision.code == gates.MAX_ORDER_NOTIONAL
    assert gate(decision, gates.MAX_OPEN_POSITIONS).passed is False


def test_evaluate_when_positions_and_exposure_both_over_codes_max_open_positions() -> None:
    # Arrange
    state = folded(limits(1, "100"), fill("P-1", quantity="12", price="6.00"))

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.code == gates.MAX_OPEN_POSITIONS
    assert gate(decision, gates.MAX_EXPOSURE).passed is False


def test_evaluate_when_exposure_and_daily_loss_both_over_codes_max_exposure() -> None:
    # Arrange
    state = folded(
        limits(5, "100", daily_loss_limit="10"),
        fill("P-1", price="6.00"),
        close("P-1", price="1.00"),
    )

    # Act
    decision = evaluate(state, signal(quantity="2", limit_price="6.00"), NOW, current(state))

    # Assert
    assert decision.code == gates.MAX_EXPOSURE
    assert gate(decision, gates.DAILY_LOSS_LIMIT).passed is False


# --- The incident --------------------------------------------------------------------------------

# The 11 puts open when the gates read "Positions 0/5, Exposure $0": $98,630 in all.
INCIDENT_FILLS = [
    ("MSFT", "30", "5.70"), ("CRM", "4", "4.10"), ("META", "20", "6.00"),
    ("AVGO", "14", "7.00"), ("AMD", "16", "4.00"), ("AAPL", "20", "4.10"),
    ("QCOM", "10", "5.30"), ("GOOGL", "20", "5.50"), ("NVDA", "25", "5.80"),
    ("ORCL", "18", "4.05"), ("INTC", "12", "4.50"),
]


def incident_state() -> AccountState:
    fills = [
        fill(f"P-{symbol}", quantity=quantity, price=price, symbol=f"{symbol} 260220P00100000")
        for symbol, quantity, price in INCIDENT_FILLS
    ]
    return folded(*fills, limits(5, "10000"))


@pytest.mark.parametrize(
    ("quantity", "limit_price", "multiplier"),
    [("1", "0.01", "1"), ("1", "1.00", "100"), ("12", "6.00", "100"), ("20", "50.00", "100")],
)
def test_evaluate_when_incident_state_11_open_worth_98630_blocks_any_signal(
    quantity: str, limit_price: str, multiplier: str
) -> None:
    # Arrange
    state = incident_state()
    order = signal(quantity=quantity, limit_price=limit_price, multiplier=multiplier)

    # Act
    decision = evaluate(state, order, NOW, current(state))

    # Assert
    assert state.open_positions == 11
    assert state.exposure == Decimal("98630")
    assert decision.allowed is False
    assert decision.code == gates.MAX_OPEN_POSITIONS
    assert "Positions 11 + 0 pending + 1 > 5" in decision.reason
    assert "Exposure $98,630.00 + " in decision.reason
    assert gate(decision, gates.MAX_EXPOSURE).passed is False


def test_evaluate_when_incident_state_built_directly_blocks() -> None:
    # Arrange
    notionals = ["17100", "1640", "12000", "9800", "6400", "8200", "5300", "11000", "14500",
                 "7290", "5400"]
    base = initial_state(ACCOUNT)
    state = AccountState(
        account=ACCOUNT,
        sequence=12,
        positions={f"P-{index}": position(f"P-{index}", notional)
                   for index, notional in enumerate(notionals)},
        pending={},
        limits=Limits(max_open_positions=5, max_exposure=Decimal("10000"),
                      max_order_notional=None, daily_loss_limit=None),
        halted=False,
        halt_reason=None,
        realized_pnl_days=base.realized_pnl_days,
        realized_pnl_total=base.realized_pnl_total,
        last_occurred_at=NOW,
    )

    # Act
    decision = evaluate(state, signal(quantity="1", limit_price="0.01", multiplier="1"), NOW,
                        current(state))

    # Assert
    assert state.exposure == Decimal("98630")
    assert decision.allowed is False
    assert "Positions 11 + 0 pending + 1 > 5" in decision.reason
    assert "Exposure $98,630.00 + $0.01 > $10,000.00" in decision.reason


# --- Programmer errors ---------------------------------------------------------------------------


def test_evaluate_when_signal_is_of_another_account_raises_assertion_error() -> None:
    # Arrange
    state = folded(limits(5, "10000"))

    # Act / Assert
    with pytest.raises(AssertionError):
        evaluate(state, signal(account="small"), NOW, current(state))


# --- Stale signals --------------------------------------------------------------------------------


def test_evaluate_when_signal_is_older_than_the_limit_blocks_with_signal_stale() -> None:
    # Arrange: the signal occurred at 17:44:00, the decision is at 17:45:00.
    state = folded(limits(5, "10000"))

    # Act
    decision = evaluate(state, signal(), NOW, current(state),
                        max_signal_age=timedelta(seconds=10))

    # Assert
    assert decision.code == gates.SIGNAL_STALE
    stale = gate(decision, gates.SIGNAL_STALE)
    assert (stale.value, stale.limit) == (Decimal("60"), Decimal("10"))
    assert stale.reason == "Signal 60 s old > 10 s"


def test_evaluate_when_signal_is_within_the_limit_passes_signal_stale() -> None:
    # Arrange
    state = folded(limits(5, "10000"))

    # Act
    decision = evaluate(state, signal(), NOW - timedelta(seconds=50.5), current(state),
                        max_signal_age=timedelta(seconds=10))

    # Assert
    assert decision.allowed is True
    assert gate(decision, gates.SIGNAL_STALE).value == Decimal("9.5")


def test_evaluate_when_no_age_limit_records_the_age_and_passes() -> None:
    # Arrange
    state = folded(limits(5, "10000"))

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    stale = gate(decision, gates.SIGNAL_STALE)
    assert (stale.passed, stale.value, stale.limit) == (True, Decimal("60"), None)


# --- Order rate: intents issued in the 60 s before the decision, plus the one it would issue ------


def roomy(*, max_orders_per_minute: int | None = None, duplicate_window_s: int | None = None,
          occurred_at: str = MORNING) -> Event:
    """Limits with room for 50 positions and $100,000, and the rate or duplicate limit given."""
    return limits(50, "100000", max_orders_per_minute=max_orders_per_minute,
                  duplicate_window_s=duplicate_window_s, occurred_at=occurred_at)


def test_evaluate_when_3_intents_in_the_last_60_s_and_limit_3_blocks_the_4th() -> None:
    # Arrange: issued 59 s, 30 s and 1 s before the decision.
    state = folded(roomy(max_orders_per_minute=3),
                   *[issue(f"I-{age}", occurred_at=ago(age)) for age in (59, 30, 1)])

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.allowed is False
    assert decision.code == gates.MAX_ORDER_RATE
    rate = gate(decision, gates.MAX_ORDER_RATE)
    assert (rate.value, rate.limit) == (Decimal("4"), Decimal("3"))
    assert rate.reason == "Orders 3 in the last 60 s + 1 > 3"
    assert decision.reason == "Orders 3 in the last 60 s + 1 > 3"


def test_evaluate_when_2_intents_in_the_last_60_s_and_limit_3_allows_the_3rd() -> None:
    # Arrange
    state = folded(roomy(max_orders_per_minute=3),
                   *[issue(f"I-{age}", occurred_at=ago(age)) for age in (59, 1)])

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.allowed is True
    rate = gate(decision, gates.MAX_ORDER_RATE)
    assert (rate.value, rate.limit) == (Decimal("3"), Decimal("3"))
    assert rate.reason == "Orders 2 in the last 60 s + 1 <= 3"


@pytest.mark.parametrize("age", [60, 61, 3600])
def test_evaluate_when_an_intent_is_60_s_old_or_older_it_does_not_count(age: int) -> None:
    # Arrange: 3 intents, the first issued `age` seconds before the decision.
    state = folded(roomy(max_orders_per_minute=3),
                   issue("I-old", occurred_at=ago(age)),
                   issue("I-2", occurred_at=ago(30)), issue("I-3", occurred_at=ago(1)))

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.allowed is True
    assert gate(decision, gates.MAX_ORDER_RATE).reason == "Orders 2 in the last 60 s + 1 <= 3"


@pytest.mark.parametrize("release", [reject, cancel])
def test_evaluate_when_a_recent_intent_was_released_it_still_counts_as_an_order(
    release: Any,
) -> None:
    # Arrange: the rate counts orders sent, whatever became of them.
    state = folded(roomy(max_orders_per_minute=2),
                   issue("I-1", occurred_at=ago(20)), issue("I-2", occurred_at=ago(10)),
                   release("I-1"))

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert state.pending_count == 1
    assert decision.code == gates.MAX_ORDER_RATE
    assert "Orders 2 in the last 60 s + 1 > 2" in decision.reason


def test_evaluate_when_max_orders_per_minute_is_0_blocks_any_signal() -> None:
    # Arrange
    state = folded(roomy(max_orders_per_minute=0))

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.code == gates.MAX_ORDER_RATE
    assert "Orders 0 in the last 60 s + 1 > 0" in decision.reason


def test_evaluate_when_no_order_rate_set_passes_with_no_limit_set() -> None:
    # Arrange
    state = folded(roomy(), *[issue(f"I-{age}", occurred_at=ago(age)) for age in (3, 2, 1)])

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.allowed is True
    rate = gate(decision, gates.MAX_ORDER_RATE)
    assert (rate.passed, rate.value, rate.limit) == (True, Decimal("4"), None)
    assert rate.reason == "Orders 3 in the last 60 s + 1: no limit set"


# --- Exposure on one underlying (a symbol's first word), open and pending -------------------------

QCOM_150 = "QCOM 260320P00150000"
QCOM_145 = "QCOM 260320P00145000"
QCOM_140 = "QCOM 260320P00140000"


def qcom_state(max_underlying_exposure: str | None, *extra: Event) -> AccountState:
    """$1,200 open and $600 pending on QCOM; $5,000 open on MSFT and $700 on QCOMX."""
    return folded(
        limits(5, "100000", max_underlying_exposure=max_underlying_exposure),
        fill("P-Q", symbol=QCOM_150, quantity="2", price="6.00"),
        issue("I-Q", symbol=QCOM_145, quantity="1", limit_price="6.00"),
        fill("P-M", quantity="10", price="5.00"),
        fill("P-X", symbol="QCOMX 260320P00010000", quantity="1", price="7.00"),
        *extra,
    )


def test_evaluate_when_exposure_on_the_underlying_would_exceed_its_limit_blocks() -> None:
    # Arrange
    state = qcom_state("2000")

    # Act
    decision = evaluate(state, signal(symbol=QCOM_140, quantity="3", limit_price="3.00"), NOW,
                        current(state))

    # Assert
    assert decision.allowed is False
    assert decision.code == gates.MAX_UNDERLYING_EXPOSURE
    on_name = gate(decision, gates.MAX_UNDERLYING_EXPOSURE)
    assert (on_name.value, on_name.limit) == (Decimal("2700"), Decimal("2000"))
    assert on_name.reason == "QCOM exposure $1,800.00 + $900.00 > $2,000.00"
    assert gate(decision, gates.MAX_EXPOSURE).passed is True


def test_evaluate_when_exposure_on_the_underlying_reaches_exactly_its_limit_allows() -> None:
    # Arrange
    state = qcom_state("2000")

    # Act
    decision = evaluate(state, signal(symbol=QCOM_140, quantity="1", limit_price="2.00"), NOW,
                        current(state))

    # Assert
    assert decision.allowed is True
    on_name = gate(decision, gates.MAX_UNDERLYING_EXPOSURE)
    assert on_name.value == on_name.limit == Decimal("2000")
    assert on_name.reason == "QCOM exposure $1,800.00 + $200.00 <= $2,000.00"


def test_evaluate_when_exposure_on_the_underlying_one_cent_over_blocks() -> None:
    # Arrange
    state = qcom_state("2000")

    # Act
    decision = evaluate(state, signal(symbol=QCOM_140, quantity="1", limit_price="200.01",
                                      multiplier="1"), NOW, current(state))

    # Assert
    assert decision.code == gates.MAX_UNDERLYING_EXPOSURE
    assert "QCOM exposure $1,800.00 + $200.01 > $2,000.00" in decision.reason


def test_evaluate_when_the_pending_intent_on_the_underlying_is_released_allows() -> None:
    # Arrange: without the $600 pending, $1,200 + $900 <= $2,100.
    pending = qcom_state("2100")
    released = qcom_state("2100", reject("I-Q"))
    order = signal(symbol=QCOM_140, quantity="3", limit_price="3.00")

    # Act
    blocked = evaluate(pending, order, NOW, current(pending))
    allowed = evaluate(released, order, NOW, current(released))

    # Assert
    assert blocked.code == gates.MAX_UNDERLYING_EXPOSURE
    assert "QCOM exposure $1,800.00 + $900.00 > $2,100.00" in blocked.reason
    assert allowed.allowed is True
    assert gate(allowed, gates.MAX_UNDERLYING_EXPOSURE).reason == (
        "QCOM exposure $1,200.00 + $900.00 <= $2,100.00")


@pytest.mark.parametrize("symbol", ["AAPL 260220P00230000", "QCOMX 260320P00010000", "QCO"])
def test_evaluate_when_exposure_is_on_other_underlyings_ignores_it(symbol: str) -> None:
    # Arrange: $1,800 on QCOM, $5,000 on MSFT, $700 on QCOMX; the limit is $1,000 a name.
    state = qcom_state("1000")
    name = symbol.split()[0]
    held = Decimal("700") if name == "QCOMX" else Decimal("0")

    # Act
    decision = evaluate(state, signal(symbol=symbol, quantity="1", limit_price="3.00"), NOW,
                        current(state))

    # Assert
    assert decision.allowed is True
    on_name = gate(decision, gates.MAX_UNDERLYING_EXPOSURE)
    assert on_name.value == held + Decimal("300")
    assert on_name.reason.startswith(f"{name} exposure ${held:,.2f} + $300.00 <= $1,000.00")


def test_evaluate_when_no_underlying_limit_set_passes_with_no_limit_set() -> None:
    # Arrange
    state = qcom_state(None)

    # Act
    decision = evaluate(state, signal(symbol=QCOM_140, quantity="3", limit_price="3.00"), NOW,
                        current(state))

    # Assert
    assert decision.allowed is True
    on_name = gate(decision, gates.MAX_UNDERLYING_EXPOSURE)
    assert (on_name.value, on_name.limit) == (Decimal("2700"), None)
    assert on_name.reason == "QCOM exposure $1,800.00 + $900.00: no limit set"


# --- Duplicate orders: same symbol, side, quantity and limit price within the window --------------


def duplicate_state(age: float, window: int | None = 30) -> AccountState:
    return folded(roomy(duplicate_window_s=window),
                  issue("I-1", quantity="3", limit_price="6.00", occurred_at=ago(age)))


def test_evaluate_when_an_identical_intent_was_issued_within_the_window_blocks() -> None:
    # Arrange
    state = duplicate_state(12)

    # Act
    decision = evaluate(state, signal(quantity="3", limit_price="6.00"), NOW, current(state))

    # Assert
    assert decision.allowed is False
    assert decision.code == gates.DUPLICATE_ORDER
    duplicate = gate(decision, gates.DUPLICATE_ORDER)
    assert (duplicate.value, duplicate.limit) == (Decimal("1"), Decimal("0"))
    assert duplicate.reason == ("Duplicate of intent I-1 issued 12.0 s ago within 30 s "
                                "(same symbol, side, quantity and limit price)")


def test_evaluate_when_the_limit_price_is_written_differently_but_equal_still_blocks() -> None:
    # Arrange
    state = duplicate_state(29)

    # Act
    decision = evaluate(state, signal(quantity="3.0", limit_price="6"), NOW, current(state))

    # Assert
    assert decision.code == gates.DUPLICATE_ORDER


@pytest.mark.parametrize("age", [30, 31, 600])
def test_evaluate_when_the_identical_intent_is_at_or_beyond_the_window_allows(age: int) -> None:
    # Arrange
    state = duplicate_state(age)

    # Act
    decision = evaluate(state, signal(quantity="3", limit_price="6.00"), NOW, current(state))

    # Assert
    assert decision.allowed is True
    duplicate = gate(decision, gates.DUPLICATE_ORDER)
    assert (duplicate.value, duplicate.limit) == (Decimal("0"), Decimal("0"))
    assert duplicate.reason == "No identical order in the last 30 s"


@pytest.mark.parametrize("changed", [
    {"symbol": "MSFT 260220P00405000"},
    {"side": "short"},
    {"quantity": "2"},
    {"limit_price": "6.01"},
])
def test_evaluate_when_the_recent_intent_differs_in_any_field_allows(
    changed: dict[str, str],
) -> None:
    # Arrange
    state = duplicate_state(1)
    fields = {"quantity": "3", "limit_price": "6.00", **changed}

    # Act
    decision = evaluate(state, signal(**fields), NOW, current(state))

    # Assert
    assert decision.allowed is True
    assert gate(decision, gates.DUPLICATE_ORDER).value == Decimal("0")


def test_evaluate_when_the_duplicate_window_is_longer_than_60_s_looks_back_that_far() -> None:
    # Arrange: an identical intent 90 s ago, then another kind of intent 10 s ago.
    state = folded(roomy(duplicate_window_s=120),
                   issue("I-1", quantity="3", limit_price="6.00", occurred_at=ago(90)),
                   issue("I-2", quantity="1", limit_price="6.00", occurred_at=ago(10)))

    # Act
    decision = evaluate(state, signal(quantity="3", limit_price="6.00"), NOW, current(state))

    # Assert
    assert decision.code == gates.DUPLICATE_ORDER
    assert "Duplicate of intent I-1 issued 90.0 s ago within 120 s" in decision.reason


def test_evaluate_when_several_identical_intents_names_the_latest() -> None:
    # Arrange
    state = folded(roomy(duplicate_window_s=60),
                   issue("I-1", quantity="3", limit_price="6.00", occurred_at=ago(50)),
                   issue("I-2", quantity="3", limit_price="6.00", occurred_at=ago(5)))

    # Act
    decision = evaluate(state, signal(quantity="3", limit_price="6.00"), NOW, current(state))

    # Assert
    duplicate = gate(decision, gates.DUPLICATE_ORDER)
    assert duplicate.value == Decimal("2")
    assert duplicate.reason.startswith("Duplicate of intent I-2 issued 5.0 s ago within 60 s")


def test_evaluate_when_no_duplicate_window_set_passes_with_no_window_set() -> None:
    # Arrange
    state = duplicate_state(1, window=None)

    # Act
    decision = evaluate(state, signal(quantity="3", limit_price="6.00"), NOW, current(state))

    # Assert
    assert decision.allowed is True
    duplicate = gate(decision, gates.DUPLICATE_ORDER)
    assert (duplicate.passed, duplicate.value, duplicate.limit) == (True, None, None)
    assert duplicate.reason == "Duplicate orders: no window set"


# --- Reducing: openings blocked, an order that only reduces an open position passes --------------

# The opening limits a reduction passes without adding to their figures.
REDUCED_BY_OPENING_LIMITS = (gates.MAX_ORDER_NOTIONAL, gates.MAX_OPEN_POSITIONS,
                             gates.MAX_EXPOSURE, gates.MAX_UNDERLYING_EXPOSURE)


def at_limits(*events: Event, max_orders_per_minute: int | None = None,
              duplicate_window_s: int | None = None) -> AccountState:
    """P-1: long 5 MSFT puts at $6.00, then `events`: at every opening limit (1 of 1 position,
    $3,000 of $3,000 in all and on MSFT, orders of at most $100)."""
    return folded(limits(1, "3000", max_order_notional="100", max_underlying_exposure="3000",
                         max_orders_per_minute=max_orders_per_minute,
                         duplicate_window_s=duplicate_window_s),
                  fill("P-1", quantity="5", price="6.00"), *events)


def reduction(quantity: str = "5", **fields: str) -> Signal:
    arguments = {"side": "short", "position_id": "P-1", "limit_price": "6.00", **fields}
    return signal(quantity=quantity, **arguments)


def test_evaluate_when_reducing_blocks_an_opening_with_trading_reducing() -> None:
    # Arrange: the account has room for this opening, but it is reducing.
    state = folded(limits(5, "10000"), reduce_only("risk review"))

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert state.trading_state == "reducing"
    assert decision.allowed is False
    assert decision.code == gates.TRADING_REDUCING
    assert decision.reason == "Trading reducing (risk review): openings blocked"
    assert [result.gate for result in decision.gates if not result.passed] == [
        gates.TRADING_REDUCING]


@pytest.mark.parametrize("quantity", ["5", "2"])
@pytest.mark.parametrize("reducing", [True, False])
def test_evaluate_when_a_signal_reduces_a_position_passes_although_every_opening_limit_is_full(
    reducing: bool, quantity: str,
) -> None:
    # Arrange
    state = at_limits(*([reduce_only("risk review")] if reducing else []))

    # Act
    decision = evaluate(state, reduction(quantity), NOW, current(state))

    # Assert
    assert gates.reduces(state, reduction(quantity)) == state.positions["P-1"]
    assert decision.allowed is True
    for code in REDUCED_BY_OPENING_LIMITS:
        result = gate(decision, code)
        assert (result.passed, result.value, result.limit) == (True, None, None), code
        assert result.reason == "reduces position P-1: no new risk"
    expected = (f"Trading reducing: short {quantity} reduces position P-1" if reducing
                else "Trading not reducing")
    assert gate(decision, gates.TRADING_REDUCING).reason == expected


def test_evaluate_when_the_same_order_names_no_position_it_is_an_opening_over_the_limits() -> None:
    # Arrange
    state = at_limits()

    # Act
    decision = evaluate(state, reduction(position_id="P-404"), NOW, current(state))

    # Assert
    assert decision.code == gates.MAX_ORDER_NOTIONAL
    assert [result.gate for result in decision.gates if not result.passed] == list(
        REDUCED_BY_OPENING_LIMITS)


@pytest.mark.parametrize("fields", [
    {"quantity": "6"},
    {"side": "long"},
    {"position_id": "P-404"},
    {"symbol": "MSFT 260220P00405000"},
], ids=["more-than-open", "same-side", "unknown-position", "other-symbol"])
def test_evaluate_when_reducing_a_signal_that_does_not_only_reduce_is_an_opening(
    fields: dict[str, str],
) -> None:
    # Arrange
    state = at_limits(reduce_only("risk review"))
    order = reduction(**fields)

    # Act
    decision = evaluate(state, order, NOW, current(state))

    # Assert
    assert gates.reduces(state, order) is None
    assert decision.allowed is False
    assert decision.code == gates.TRADING_REDUCING
    assert gate(decision, gates.MAX_OPEN_POSITIONS).reason == "Positions 1 + 0 pending + 1 > 1"


def test_evaluate_when_a_reducing_signal_is_over_the_order_rate_blocks() -> None:
    # Arrange
    state = at_limits(reduce_only("risk review"), issue("I-1", occurred_at=ago(10)),
                      max_orders_per_minute=1)

    # Act
    decision = evaluate(state, reduction(), NOW, current(state))

    # Assert
    assert decision.code == gates.MAX_ORDER_RATE
    assert decision.reason == "Orders 1 in the last 60 s + 1 > 1"


def test_evaluate_when_a_reducing_signal_repeats_an_intent_within_the_window_blocks() -> None:
    # Arrange: the same reduction was issued 4 s ago and rejected, so all 5 are open again.
    state = at_limits(
        reduce_only("risk review"),
        issue("I-1", side="short", quantity="5", limit_price="6.00", position_id="P-1",
              occurred_at=ago(4)),
        reject("I-1"),
        duplicate_window_s=30)

    # Act
    decision = evaluate(state, reduction(), NOW, current(state))

    # Assert
    assert decision.code == gates.DUPLICATE_ORDER
    assert decision.reason.startswith("Duplicate of intent I-1 issued 4.0 s ago within 30 s")


def test_evaluate_when_halted_after_reducing_blocks_even_a_reduction_with_trading_halted() -> None:
    # Arrange
    state = at_limits(reduce_only("risk review"), halt("manual stop"))

    # Act
    decision = evaluate(state, reduction(), NOW, current(state))

    # Assert
    assert state.trading_state == "halted"
    assert decision.code == gates.TRADING_HALTED
    assert decision.reason == "Trading halted: manual stop"
    assert gate(decision, gates.TRADING_REDUCING).reason == "Trading not reducing"


def test_evaluate_when_reducing_after_a_halt_lets_a_reduction_pass_and_blocks_openings() -> None:
    # Arrange
    state = folded(limits(5, "10000"), fill("P-1", quantity="5", price="6.00"),
                   halt("manual stop"), reduce_only("flatten"))

    # Act
    reduced = evaluate(state, reduction(), NOW, current(state))
    opening = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert state.trading_state == "reducing"
    assert reduced.allowed is True
    assert gate(reduced, gates.TRADING_HALTED).reason == "Trading not halted"
    assert opening.code == gates.TRADING_REDUCING
    assert opening.reason == "Trading reducing (flatten): openings blocked"


def test_evaluate_when_resumed_after_reducing_allows_openings() -> None:
    # Arrange
    state = folded(limits(5, "10000"), reduce_only("risk review"), resume())

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert state.trading_state == "active"
    assert decision.allowed is True


def test_evaluate_when_reducing_and_limits_never_set_blocks_a_reduction_too() -> None:
    # Arrange
    state = folded(fill("P-1", quantity="5", price="6.00"), reduce_only("risk review"))

    # Act
    decision = evaluate(state, reduction(), NOW, current(state))

    # Assert
    assert decision.code == gates.LIMITS_NOT_SET
    assert gate(decision, gates.TRADING_REDUCING).passed is True


# --- Pending reductions and the duplicate window's memory --------------------------------------


def test_evaluate_when_pending_reductions_already_cover_the_position_a_new_one_is_an_opening(
) -> None:
    # Arrange: long 5; a reduction of 3 is pending on P-1; another of 3 would sell 6 of 5.
    state = at_limits(
        reduce_only("risk review"),
        issue("I-1", side="short", quantity="3", limit_price="6.00", position_id="P-1",
              occurred_at=ago(4)))

    # Act
    decision = evaluate(state, reduction("3"), NOW, current(state))

    # Assert
    assert decision.code == gates.TRADING_REDUCING


def test_evaluate_when_the_duplicate_window_was_just_raised_looks_back_as_far_as_remembered(
) -> None:
    # Arrange: I-1 100 s ago, I-2 30 s ago (I-1 forgotten then: 60 s kept), window raised to
    # 300 s 20 s ago; the bound in docs/design.md: a raised window looks back at first only as
    # far as the fold remembered, and I-3 (50 s ago) is within that.
    state = folded(roomy(occurred_at=ago(200)),
                   issue("I-1", quantity="3", limit_price="6.00", occurred_at=ago(100)),
                   issue("I-3", quantity="2", limit_price="6.00", occurred_at=ago(50)),
                   issue("I-2", quantity="1", limit_price="6.00", occurred_at=ago(30)),
                   roomy(duplicate_window_s=300, occurred_at=ago(20)))

    # Act
    forgotten = evaluate(state, signal(quantity="3", limit_price="6.00"), NOW, current(state))
    remembered = evaluate(state, signal(quantity="2", limit_price="6.00"), NOW, current(state))

    # Assert
    assert forgotten.allowed is True
    assert remembered.code == gates.DUPLICATE_ORDER


def test_evaluate_when_a_raised_duplicate_window_has_run_its_length_sees_all_of_it() -> None:
    # Arrange: window raised to 300 s, then an intent 250 s ago: kept for the whole new window.
    state = folded(roomy(duplicate_window_s=300, occurred_at=ago(400)),
                   issue("I-1", quantity="3", limit_price="6.00", occurred_at=ago(250)),
                   issue("I-2", quantity="1", limit_price="6.00", occurred_at=ago(30)))

    # Act
    decision = evaluate(state, signal(quantity="3", limit_price="6.00"), NOW, current(state))

    # Assert
    assert decision.code == gates.DUPLICATE_ORDER


# --- Reconciliation age ---------------------------------------------------------------------------


def reconcile_within(max_reconcile_age_s: int) -> Event:
    return unstored("LimitsSet", {"max_open_positions": 50, "max_exposure": "100000",
                                  "max_reconcile_age_s": max_reconcile_age_s})


def reconciled(seconds_ago: float) -> Event:
    return unstored("PositionsReconciled", {"as_of": ago(seconds_ago), "head": 1},
                    occurred_at=ago(seconds_ago))


def test_evaluate_when_never_reconciled_and_an_age_limit_is_set_blocks_openings() -> None:
    # Arrange
    state = folded(reconcile_within(30))

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.code == gates.RECONCILIATION_STALE
    assert decision.reason == ("Never reconciled with the broker: openings need a "
                               "reconciliation at most 30 s old")


@pytest.mark.parametrize(("seconds_ago", "allowed"), [(0, True), (29.999, True), (30, True),
                                                      (30.001, False), (3600, False)])
def test_evaluate_when_the_last_reconciliation_ages_blocks_past_the_limit_and_not_before(
    seconds_ago: float, allowed: bool,
) -> None:
    # Arrange
    state = folded(reconcile_within(30), reconciled(seconds_ago))

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    result = gate(decision, gates.RECONCILIATION_STALE)
    assert (decision.allowed, result.passed) == (allowed, allowed)
    assert result.value == Decimal(str(seconds_ago))
    assert result.limit == Decimal(30)


def test_evaluate_when_a_newer_reconciliation_arrives_the_stale_gate_releases() -> None:
    # Arrange: stale at 90 s, then the broker's view of 5 s ago matched.
    stale = folded(reconcile_within(30), reconciled(90))
    fresh = folded(reconcile_within(30), reconciled(90), reconciled(5))

    # Act
    before = evaluate(stale, signal(), NOW, current(stale))
    after = evaluate(fresh, signal(), NOW, current(fresh))

    # Assert
    assert before.reason == "Last reconciliation 90 s old > 30 s"
    assert (before.code, after.allowed) == (gates.RECONCILIATION_STALE, True)


def test_evaluate_when_reconciliation_is_stale_a_reduction_still_passes() -> None:
    # Arrange
    state = folded(reconcile_within(30), fill("P-1", quantity="5", price="6.00"),
                   reconciled(600))

    # Act
    decision = evaluate(state, reduction(), NOW, current(state))

    # Assert
    assert decision.allowed is True
    assert gate(decision, gates.RECONCILIATION_STALE).reason == "reduces position P-1: no new risk"


def test_evaluate_when_no_age_limit_is_set_never_asks_for_a_reconciliation() -> None:
    # Arrange
    state = folded(limits(50, "100000"))

    # Act
    decision = evaluate(state, signal(), NOW, current(state))

    # Assert
    assert decision.allowed is True
    assert gate(decision, gates.RECONCILIATION_STALE).reason == "Reconciliation age: no limit set"
