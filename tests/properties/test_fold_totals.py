"""Goal: the figures the gates read on every decision (open and pending exposure, pending count,
exposure per underlying, quantity spoken for by reducing intents), which the fold keeps up to
date event by event instead of summing every row, are the very Decimals the plain sums give:
same value, same exponent, after every event, for ordinary and for extreme figures (where a
kept sum can no longer be exact and the plain sum takes over).
Method: hypothesis draws histories of fills, closes, intents (opening and reducing) and their
releases over a few positions and underlyings, with quantities, prices and multipliers from
cents to the contract's bounds; the history is applied event by event to a state whose figures
are kept, and folded at once, and every figure is compared digit for digit with the sum over
the state's rows.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.events import Event, decode_event, format_decimal, underlying, with_ledger_fields
from projections.fold import AccountState, apply, fold, initial_state

ACCOUNT = "large"
START = datetime(2026, 2, 3, 14, 30, tzinfo=UTC)
POSITIONS = {"P-0": "AAPL 260220C00200000", "P-1": "AAPL 260220P00180000",
             "P-2": "MSFT 260220P00400000", "P-3": "QCOM"}
_ZERO = Decimal("0")


def _amount(places: int, digits: int) -> st.SearchStrategy[Decimal]:
    top = Decimal(10) ** (digits - places) - Decimal(1).scaleb(-places)
    return st.one_of(
        st.decimals(places=2, min_value=Decimal("0.01"), max_value=Decimal("500"),
                    allow_nan=False, allow_infinity=False),
        st.decimals(places=places, min_value=Decimal(1).scaleb(-places), max_value=top,
                    allow_nan=False, allow_infinity=False))


quantities = _amount(6, 9)
prices = _amount(6, 9)
multipliers = st.sampled_from(["1", "100", "0.5", "999999", "1.000001"])


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    events: list[Event] = []
    issued: list[str] = []
    for index in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from(["fill", "fill", "close", "issue", "issue", "release"]))
        position_id = draw(st.sampled_from(sorted(POSITIONS)))
        symbol = POSITIONS[position_id]
        instrument = "equity" if " " not in symbol else "option"
        multiplier = "1" if instrument == "equity" else draw(multipliers)
        data: dict[str, Any]
        if kind == "fill":
            event_type, data = "OrderFilled", {
                "fill_id": f"X-{index}", "position_id": position_id, "symbol": symbol,
                "instrument": instrument, "side": draw(st.sampled_from(["long", "short"])),
                "quantity": format_decimal(draw(quantities)),
                "price": format_decimal(draw(prices)), "multiplier": multiplier}
            if draw(st.booleans()) and issued:
                data["intent_id"] = draw(st.sampled_from(issued))
        elif kind == "close":
            event_type, data = "PositionClosed", {
                "position_id": position_id, "price": format_decimal(draw(prices))}
            if draw(st.booleans()):
                data["quantity"] = format_decimal(draw(quantities))
            if draw(st.booleans()) and issued:
                data["intent_id"] = draw(st.sampled_from(issued))
        elif kind == "issue":
            issued.append(f"I-{index}")
            event_type, data = "IntentIssued", {
                "intent_id": f"I-{index}", "signal_id": f"S-{index}",
                "position_id": position_id, "symbol": symbol, "instrument": instrument,
                "side": draw(st.sampled_from(["long", "short"])),
                "quantity": format_decimal(draw(quantities)),
                "limit_price": format_decimal(draw(prices)), "multiplier": multiplier,
                "expires_at": "2026-02-03T15:30:00Z", "reducing": draw(st.booleans())}
        else:
            event_type, data = draw(st.sampled_from(
                ["IntentRejected", "IntentExpired", "IntentCancelled"])), {
                "intent_id": draw(st.sampled_from([*issued, "I-unknown"])), "reason": "none"}
        document = {"account": ACCOUNT, "type": event_type, "data": data,
                    "occurred_at": (START + timedelta(seconds=index)).strftime(
                        "%Y-%m-%dT%H:%M:%SZ")}
        events.append(with_ledger_fields(decode_event(json.dumps(document)), sequence=index + 1,
                                         recorded_at=START, global_position=index + 1))
    return events


def plain(state: AccountState) -> dict[str, Decimal | int]:
    """Every kept figure, summed over the rows as the properties always did."""
    positions, pending = list(state.positions.values()), list(state.pending.values())
    opening = [i for i in pending if not i.reducing]
    figures: dict[str, Decimal | int] = {
        "open": sum((p.notional for p in positions), _ZERO),
        "pending": sum((i.notional for i in opening), _ZERO),
        "pending_count": len(opening)}
    for name in {underlying(symbol) for symbol in POSITIONS.values()}:
        figures[f"on {name}"] = (
            sum((p.notional for p in positions if underlying(p.symbol) == name), _ZERO)
            + sum((i.notional for i in opening if underlying(i.symbol) == name), _ZERO))
    for position_id in POSITIONS:
        figures[f"reducing {position_id}"] = sum(
            (i.quantity for i in pending if i.reducing and i.position_id == position_id), _ZERO)
    return figures


def kept(state: AccountState) -> dict[str, Decimal | int]:
    figures: dict[str, Decimal | int] = {
        "open": state.open_exposure, "pending": state.pending_exposure,
        "pending_count": state.pending_count}
    for name in {underlying(symbol) for symbol in POSITIONS.values()}:
        figures[f"on {name}"] = state.exposure_on(name)
    for position_id in POSITIONS:
        figures[f"reducing {position_id}"] = state.reducing_pending_on(position_id)
    return figures


def digits(figures: dict[str, Decimal | int]) -> dict[str, object]:
    # as_tuple: sign, digits and exponent, so that 1800.00 and 1800.0000 differ.
    return {key: value.as_tuple() if isinstance(value, Decimal) else value
            for key, value in figures.items()}


@settings(max_examples=300, deadline=None)
@given(events=histories())
def test_kept_figures_after_every_event_are_the_plain_sums_digit_for_digit(
        events: list[Event]) -> None:
    state = initial_state(ACCOUNT)
    assert state.pending_count == 0  # from here on the fold keeps the figures
    for event in events:
        state = apply(state, event)
        assert digits(kept(state)) == digits(plain(state)), event.sequence
    once = initial_state(ACCOUNT)
    assert once.exposure == _ZERO
    folded = fold(events, once)
    assert digits(kept(folded)) == digits(plain(folded))
