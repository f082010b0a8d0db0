"""Goal: the fold is a deterministic, exact function of an account's history: replay from any
split point equals one fold, redelivered events never count twice, closing everything brings
open exposure back to exactly 0, P&L is exact Decimal arithmetic, events of another account are
refused without harm, counts never go negative, the trading state is the last one set, and the
recent intents are exactly those issued within the longer of 60 s and the duplicate window.

Method: hypothesis builds valid histories of one account (fills on both sides with fees and
intents, closes of known and unknown positions, some naming an intent, intents issued, rejected,
expired and cancelled, limits, halts, reductions and resumes, decisions) across UTC days, through
the JSON contract and `with_ledger_fields`, and streams of intents seconds apart. Each property
folds them and compares against another folding order or against a small independent model
(signed quantities, pending ids, trading state, P&L by hand, intents within the window).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.events import (
    ORDER_RATE_MAX,
    Event,
    IntentCancelledEvent,
    IntentExpiredEvent,
    IntentIssuedEvent,
    IntentRejectedEvent,
    OrderFilledEvent,
    PositionClosedEvent,
    TradingHaltedEvent,
    TradingReducedEvent,
    TradingResumedEvent,
    decode_event,
    format_decimal,
    with_ledger_fields,
)
from projections.fold import AccountState, ForeignEvent, apply, fold, initial_state
from tests.factories import signal_evaluated_data

ACCOUNT = "large"
OTHER_ACCOUNT = "small"
START = datetime(2026, 2, 3, 14, 30, tzinfo=UTC)
RECORDED_AT = datetime(2026, 2, 3, 14, 30, tzinfo=UTC)
# A few ids, so that fills add to, reduce and flip the same positions and closes find them.
MULTIPLIER_BY_POSITION = {"P-0": "100", "P-1": "100", "P-2": "100", "P-3": "1", "P-4": "1"}
POSITION_IDS = sorted(MULTIPLIER_BY_POSITION)
HISTORY_LENGTH_MAX = 30
# side, quantity, open price, close price, fees
Trade = tuple[str, Decimal, Decimal, Decimal, Decimal | None]
# Weighted by repetition: fills and closes are what move the figures.
KINDS = ["fill"] * 5 + ["close"] * 3 + ["issue"] * 2 + ["release", "limits", "halt", "signal"]

# Each property folds a few dozen events, usually several times: 150 examples run in seconds.
# No deadline: building events through pydantic is slow enough to trip it on a loaded CI box.
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)

prices = st.decimals(
    places=2, min_value=Decimal("0.01"), max_value=Decimal("20000"), allow_nan=False
)
quantities = st.one_of(
    st.decimals(places=0, min_value=Decimal("1"), max_value=Decimal("50"), allow_nan=False),
    st.decimals(places=2, min_value=Decimal("0.01"), max_value=Decimal("50"), allow_nan=False),
)
fees = st.one_of(
    st.none(),
    st.decimals(places=2, min_value=Decimal("0"), max_value=Decimal("5"), allow_nan=False),
)


def stored(account: str, event_type: str, data: Mapping[str, Any], at: datetime, seq: int) -> Event:
    document = {
        "account": account,
        "type": event_type,
        "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": data,
    }
    event = decode_event(json.dumps(document))
    return with_ledger_fields(event, sequence=seq, recorded_at=RECORDED_AT, global_position=seq)


def text(number: Decimal) -> str:
    return format_decimal(number)


@st.composite
def fill_data(draw: st.DrawFn, index: int, issued: list[str]) -> dict[str, Any]:
    position_id = draw(st.sampled_from(POSITION_IDS))
    data: dict[str, Any] = {
        "fill_id": f"X-{index}",
        "position_id": position_id,
        "symbol": f"SYM-{position_id}",
        "instrument": "option",
        "side": draw(st.sampled_from(["long", "short"])),
        "quantity": text(draw(quantities)),
        "price": text(draw(prices)),
        "multiplier": MULTIPLIER_BY_POSITION[position_id],
    }
    if draw(st.booleans()):
        data["intent_id"] = draw(st.sampled_from([*issued, "I-unknown"]))
    fee = draw(fees)
    if fee is not None:
        data["fees"] = text(fee)
    return data


@st.composite
def event_data(
    draw: st.DrawFn, kind: str, index: int, at: datetime, issued: list[str]
) -> tuple[str, dict[str, Any]]:
    if kind == "fill":
        return "OrderFilled", draw(fill_data(index, issued))
    if kind == "close":
        data: dict[str, Any] = {
            "position_id": draw(st.sampled_from([*POSITION_IDS, "P-unknown"])),
            "price": text(draw(prices)),
        }
        if draw(st.booleans()):
            data["quantity"] = text(draw(quantities))
        if draw(st.booleans()):
            # The close executes an intent (a reduction): it releases it, whatever it closes.
            data["intent_id"] = draw(st.sampled_from([*issued, "I-unknown"]))
        return "PositionClosed", data
    if kind == "issue":
        position_id = draw(st.sampled_from(POSITION_IDS))
        return "IntentIssued", {
            "intent_id": f"I-{index}",
            "signal_id": f"S-{index}",
            "position_id": position_id,
            "symbol": f"SYM-{position_id}",
            "instrument": "option",
            "side": draw(st.sampled_from(["long", "short"])),
            "quantity": text(draw(quantities)),
            "limit_price": text(draw(prices)),
            "multiplier": MULTIPLIER_BY_POSITION[position_id],
            "expires_at": (at + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    if kind == "release":
        event_type = draw(st.sampled_from(["IntentRejected", "IntentExpired", "IntentCancelled"]))
        intent_id = draw(st.sampled_from([*issued, "I-unknown"]))
        return event_type, {"intent_id": intent_id, "reason": "no fill"}
    if kind == "limits":
        limits: dict[str, Any] = {
            "max_open_positions": draw(st.integers(min_value=0, max_value=20)),
            "max_exposure": text(draw(prices)),
        }
        if draw(st.booleans()):
            limits.update(max_orders_per_minute=draw(st.integers(0, 10)),
                          max_underlying_exposure=text(draw(prices)),
                          duplicate_window_s=draw(st.integers(1, 600)))
        return "LimitsSet", limits
    if kind == "halt":
        event_type = draw(st.sampled_from(["TradingHalted", "TradingReduced", "TradingResumed"]))
        return event_type, {} if event_type == "TradingResumed" else {"reason": "operator"}
    return "SignalEvaluated", signal_evaluated_data(ACCOUNT, index, at, allowed=True)



@st.composite
def histories(draw: st.DrawFn, account: str = ACCOUNT, first: int = 1) -> list[Event]:
    """Draw a valid stored history of one account with sequences first, first + 1, ..."""
    length = draw(st.integers(min_value=0, max_value=HISTORY_LENGTH_MAX))
    at = START
    issued: list[str] = []
    events: list[Event] = []
    for index in range(length):
        # Up to 10 hours between events, so that histories cross UTC midnight.
        at += timedelta(minutes=draw(st.integers(min_value=0, max_value=600)))
        kind = draw(st.sampled_from(KINDS))
        event_type, data = draw(event_data(kind, index, at, issued))
        if event_type == "IntentIssued":
            issued.append(data["intent_id"])
        events.append(stored(account, event_type, data, at, first + index))
    return events


# --- An independent model of what is open and pending ---------------------------------------------


@dataclass
class Model:
    """Signed open quantity per position and the ids of pending intents, kept the simple way."""

    signed: dict[str, Decimal]
    pending: set[str]
    trading: str = "active"

    def step(self, event: Event) -> None:
        if isinstance(event, OrderFilledEvent):
            fill = event.data
            if fill.intent_id is not None:
                self.pending.discard(fill.intent_id)
            delta = fill.quantity if fill.side == "long" else -fill.quantity
            self._set(fill.position_id, self.signed.get(fill.position_id, Decimal(0)) + delta)
        elif isinstance(event, PositionClosedEvent):
            close = event.data
            if close.intent_id is not None:
                self.pending.discard(close.intent_id)
            net = self.signed.get(close.position_id, Decimal(0))
            closed = abs(net) if close.quantity is None else min(close.quantity, abs(net))
            self._set(close.position_id, net - closed if net > 0 else net + closed)
        elif isinstance(event, IntentIssuedEvent):
            self.pending.add(event.data.intent_id)
        elif isinstance(event, IntentRejectedEvent | IntentExpiredEvent | IntentCancelledEvent):
            self.pending.discard(event.data.intent_id)
        elif isinstance(event, TradingHaltedEvent):
            self.trading = "halted"
        elif isinstance(event, TradingReducedEvent):
            self.trading = "reducing"
        elif isinstance(event, TradingResumedEvent):
            self.trading = "active"

    def _set(self, position_id: str, net: Decimal) -> None:
        if net == 0:
            self.signed.pop(position_id, None)
        else:
            self.signed[position_id] = net


def signed_quantities(state: AccountState) -> dict[str, Decimal]:
    return {
        position_id: position.quantity if position.side == "long" else -position.quantity
        for position_id, position in state.positions.items()
    }


def close_all(state: AccountState, close_prices: list[Decimal]) -> list[Event]:
    """Return stored closes, one per open position, each at the next of close_prices."""
    at = (state.last_occurred_at or START) + timedelta(minutes=1)
    return [
        stored(
            ACCOUNT,
            "PositionClosed",
            {"position_id": position_id, "price": text(price)},
            at,
            state.sequence + 1 + index,
        )
        for index, (position_id, price) in enumerate(
            zip(sorted(state.positions), close_prices, strict=False)
        )
    ]


def total_after_closing(state: AccountState, close_prices: list[Decimal]) -> Decimal:
    """Return the realised total after closing every open position at close_prices, by hand.

    An average of several fills may not terminate and then carries 38 significant digits, where
    Decimal addition is no longer associative; adding in the order of the closes keeps the
    comparison exact.
    """
    total = state.realized_pnl_total
    for position_id, price in zip(sorted(state.positions), close_prices, strict=False):
        position = state.positions[position_id]
        per_unit = price - position.average_price
        if position.side == "short":
            per_unit = -per_unit
        total += per_unit * position.quantity * position.multiplier
    return total


def close_prices_of(trades: list[Trade]) -> list[Decimal]:
    return [close_price for _, _, _, close_price, _ in trades]


close_price_lists = st.lists(prices, min_size=len(POSITION_IDS), max_size=len(POSITION_IDS))

# --- Properties ---------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(events=histories())
def test_fold_when_split_at_any_point_equals_one_fold(events: list[Event]) -> None:
    # Arrange
    whole = fold(events, account=ACCOUNT)

    # Act
    resumed = [
        fold(events[split:], fold(events[:split], account=ACCOUNT))
        for split in range(len(events) + 1)
    ]
    stepwise = initial_state(ACCOUNT)
    for event in events:
        stepwise = apply(stepwise, event)

    # Assert
    assert all(state == whole for state in resumed)
    assert stepwise == whole
    assert whole.sequence == len(events)


@PROPERTY_SETTINGS
@given(events=histories(), data=st.data())
def test_fold_when_events_redelivered_equals_fold_of_each_once(
    events: list[Event], data: st.DataObject
) -> None:
    # Arrange: after each event, maybe deliver again one already delivered (at-least-once).
    delivered: list[Event] = []
    for index, event in enumerate(events):
        delivered.append(event)
        if data.draw(st.booleans()):
            delivered.append(events[data.draw(st.integers(min_value=0, max_value=index))])
    once = fold(events, account=ACCOUNT)

    # Act
    redelivered = fold(delivered, account=ACCOUNT)
    twice = fold(events, fold(events, account=ACCOUNT))

    # Assert
    assert redelivered == once
    assert twice == once


@PROPERTY_SETTINGS
@given(events=histories(), close_prices=close_price_lists)
def test_fold_when_every_open_position_closed_open_exposure_is_exactly_zero(
    events: list[Event], close_prices: list[Decimal]
) -> None:
    # Arrange
    state = fold(events, account=ACCOUNT)
    expected_total = total_after_closing(state, close_prices)

    # Act
    closed = fold(close_all(state, close_prices), state)

    # Assert
    assert closed.open_positions == 0
    assert closed.open_exposure == Decimal(0)
    assert closed.realized_pnl_total == expected_total
    assert closed.pending == state.pending


@PROPERTY_SETTINGS
@given(
    trades=st.lists(
        st.tuples(st.sampled_from(["long", "short"]), quantities, prices, prices, fees),
        min_size=1,
        max_size=len(POSITION_IDS),
    )
)
def test_fold_when_positions_opened_then_closed_realises_exact_pnl(
    trades: list[Trade],
) -> None:
    # Arrange: one fill and one close per position, P&L worked out by hand.
    events: list[Event] = []
    expected = Decimal(0)
    for index, (side, quantity, open_price, close_price, fee) in enumerate(trades):
        position_id = POSITION_IDS[index]
        multiplier = Decimal(MULTIPLIER_BY_POSITION[position_id])
        fill = {
            "fill_id": f"X-{index}",
            "position_id": position_id,
            "symbol": "SYM",
            "instrument": "option",
            "side": side,
            "quantity": text(quantity),
            "price": text(open_price),
            "multiplier": text(multiplier),
        }
        if fee is not None:
            fill["fees"] = text(fee)
        events.append(stored(ACCOUNT, "OrderFilled", fill, START, len(events) + 1))
        gain = (close_price - open_price) * quantity * multiplier
        expected += (gain if side == "long" else -gain) - (fee or 0)
    opened = fold(events, account=ACCOUNT)
    closes = [
        stored(
            ACCOUNT,
            "PositionClosed",
            {"position_id": position_id, "price": text(price)},
            START,
            len(events) + 1 + index,
        )
        for index, (position_id, price) in enumerate(
            zip(POSITION_IDS, close_prices_of(trades), strict=False)
        )
    ]

    # Act
    closed = fold(closes, opened)

    # Assert
    assert opened.open_exposure == sum(
        (
            quantity * price * Decimal(MULTIPLIER_BY_POSITION[POSITION_IDS[index]])
            for index, (_, quantity, price, _, _) in enumerate(trades)
        ),
        Decimal(0),
    )
    assert closed.realized_pnl_total == expected
    assert closed.realized_pnl_on(START.date()) == expected
    assert closed.open_positions == 0


@PROPERTY_SETTINGS
@given(events=histories())
def test_apply_when_each_event_applied_matches_model_and_counts_stay_non_negative(
    events: list[Event],
) -> None:
    # Arrange
    model = Model(signed={}, pending=set())
    state = initial_state(ACCOUNT)

    for event in events:
        # Act
        state = apply(state, event)
        model.step(event)

        # Assert
        assert state.open_positions >= 0
        assert state.pending_count >= 0
        assert all(position.quantity > 0 for position in state.positions.values())
        assert signed_quantities(state) == model.signed
        assert set(state.pending) == model.pending
        assert state.trading_state == model.trading
        assert (state.halted, state.reducing) == (model.trading == "halted",
                                                  model.trading == "reducing")
        assert state.open_exposure == sum(
            (p.quantity * p.average_price * p.multiplier for p in state.positions.values()),
            Decimal(0),
        )
        assert state.pending_exposure == sum(
            (abs(i.quantity) * i.limit_price * i.multiplier for i in state.pending.values()),
            Decimal(0),
        )
        assert state.exposure == state.open_exposure + state.pending_exposure
        assert state.exposure >= 0


@PROPERTY_SETTINGS
@given(
    events=histories(),
    foreign=histories(account=OTHER_ACCOUNT).filter(bool),
    data=st.data(),
)
def test_apply_when_event_of_another_account_raises_and_leaves_state_intact(
    events: list[Event], foreign: list[Event], data: st.DataObject
) -> None:
    # Arrange
    state = fold(events, account=ACCOUNT)
    copy = fold(events, account=ACCOUNT)
    intruder = data.draw(st.sampled_from(foreign))

    # Act / Assert
    with pytest.raises(ForeignEvent):
        apply(state, intruder)
    with pytest.raises(ForeignEvent):
        fold([*events, intruder], account=ACCOUNT)
    with pytest.raises(ForeignEvent):
        fold([intruder], state)
    assert state == copy
    assert state.sequence == len(events)


# --- Recent intents: what the order-rate and duplicate gates look back on -------------------------


@PROPERTY_SETTINGS
@given(
    window=st.none() | st.sampled_from([1, 30, 59, 60, 61, 120, 600]),
    steps=st.lists(st.tuples(st.sampled_from([0, 1, 10, 30, 59, 60, 61, 119, 120, 121, 600]),
                             st.sampled_from(["issue"] * 3 + ["release", "close", "halt"])),
                   max_size=40),
)
def test_apply_when_intents_issued_over_time_keeps_exactly_those_within_the_longer_window(
    window: int | None, steps: list[tuple[int, str]],
) -> None:
    # Arrange: limits first, then intents seconds apart, with releases and other events between.
    limits: dict[str, Any] = {"max_open_positions": 5, "max_exposure": "10000"}
    if window is not None:
        limits["duplicate_window_s"] = window
    events = [stored(ACCOUNT, "LimitsSet", limits, START, 1)]
    kept_for = timedelta(seconds=max(60, window or 0))
    issued: list[tuple[str, datetime]] = []
    at = START
    for index, (gap, kind) in enumerate(steps):
        at += timedelta(seconds=gap)
        sequence = len(events) + 1
        if kind == "issue" or not issued:
            data = {
                "intent_id": f"I-{index}", "signal_id": f"S-{index}", "position_id": "P-0",
                "symbol": "SYM-P-0", "instrument": "option", "side": "long", "quantity": "1",
                "limit_price": "1.00", "multiplier": "100",
                "expires_at": (at + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            events.append(stored(ACCOUNT, "IntentIssued", data, at, sequence))
            issued.append((f"I-{index}", at))
        elif kind == "release":
            events.append(stored(ACCOUNT, "IntentCancelled",
                                 {"intent_id": issued[-1][0], "reason": "halt"}, at, sequence))
        elif kind == "close":
            events.append(stored(ACCOUNT, "PositionClosed", {
                "position_id": "P-0", "price": "1.00", "intent_id": issued[0][0]}, at, sequence))
        else:
            events.append(stored(ACCOUNT, "TradingReduced", {"reason": "review"}, at, sequence))

    # Act
    state = fold(events, account=ACCOUNT)

    # Assert: pruned when an intent is issued, of what it puts out of the longer window.
    last = issued[-1][1] if issued else START
    expected = [intent_id for intent_id, issued_at in issued if issued_at > last - kept_for]
    assert [recent.intent_id for recent in state.recent_intents] == expected[-ORDER_RATE_MAX:]
    assert [recent.occurred_at for recent in state.recent_intents] == sorted(
        recent.occurred_at for recent in state.recent_intents)
