"""Goal: whatever the account's history, limits and signals, the risk gates never let the account
go over its limits (open + pending positions, exposure, order notional, exposure on one
underlying), not even in a burst of signals each reserved as a pending intent; over time, the
intents issued in any 60 s up to an allowed one stay within the order rate and no two identical
intents fall within the duplicate window; while reducing only reductions pass; raising (or
removing) a limit never turns an allow into a block and lowering one never turns a block into an
allow; the same inputs always give an equal decision; and a decision is allowed exactly when every
gate it reports passed, its code being the first failed gate in `gates.GATES` order.

Method: hypothesis draws limits (0..8 positions, $0..$20,000 exposure in cents, optional order
notional, daily loss, orders per minute, underlying exposure and duplicate window), account states
either folded from random stored histories (fills on both sides, partial and full closes, intents
issued, filled, rejected and expired, halts, across two UTC days, through the JSON contract and
`with_ledger_fields`) or constructed directly from random positions, pending and recent intents on
several symbols of a few underlyings, active, reducing or halted, and signals (quantity 1..20,
limit price $0.01..$50.00, multiplier 1 or 100; some copy a recent intent, some name an open
position to reduce) decoded from JSON. Fills of one position and side share one price, so that
average prices terminate. Each property calls the pure `evaluate` and checks its decision against
the state's own figures; the bursts fold every decision and every reservation back into the state,
as the dispatcher's transaction does, the timed one with the decision time as the intent's time,
and check it against a model of every intent issued.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from dispatcher import gates
from dispatcher.gates import Decision, Freshness, evaluate
from ledger.events import (
    Event,
    IntentIssued,
    Side,
    Signal,
    decode_event,
    decode_signal,
    encode_signal,
    format_decimal,
    format_time,
    with_ledger_fields,
)
from projections.fold import (
    RATE_WINDOW,
    AccountState,
    Limits,
    PendingIntent,
    Position,
    RecentIntent,
    fold,
)

ACCOUNT = "large"
YESTERDAY = datetime(2026, 2, 2, 14, 30, tzinfo=UTC)
TODAY = datetime(2026, 2, 3, 14, 30, tzinfo=UTC)
TOMORROW = datetime(2026, 2, 4, 14, 30, tzinfo=UTC)
NOW = datetime(2026, 2, 3, 20, 0, tzinfo=UTC)
EXPIRES_AT = NOW + timedelta(minutes=5)
RECORDED_AT = NOW
SYMBOL = "MSFT 260220P00400000"
# A few ids, so that fills add to, reduce and flip the same positions and closes find them.
MULTIPLIER_BY_POSITION = {"P-0": "100", "P-1": "100", "P-2": "100", "P-3": "1", "P-4": "1"}
POSITION_IDS = sorted(MULTIPLIER_BY_POSITION)
HISTORY_LENGTH_MAX = 12
BURST_LENGTH_MAX = 25
DIRECT_POSITIONS_MAX = 6
DIRECT_PENDING_MAX = 3
EXPOSURE_CENTS_MAX = 2_000_000
DAILY_LOSS_CENTS_MAX = 500_000
PRICE_CENTS_MAX = 5_000
QUANTITY_MAX = 20
HELD_QUANTITY_MAX = 5
HELD_PRICE_CENTS_MAX = 2_000
POSITIONS_MAX = 8
# Weighted by repetition: fills, closes and intents are what move the figures.
KINDS = ["fill"] * 6 + ["close"] * 3 + ["issue"] * 2 + ["release"] * 2 + ["pause"]
# hypothesis favours the ends of a range: a value from its middle comes about 1 time in 10.
ONE_IN_10 = 6
# hypothesis draws integers from a range this narrow about evenly.
SPREAD_STEPS = 200
LIMIT_NAMES = ("max_open_positions", "max_exposure", "max_order_notional", "daily_loss_limit",
               "max_orders_per_minute", "max_underlying_exposure", "duplicate_window_s")
# Several symbols on a few underlyings (a symbol's first word), so that exposure on one name is
# not the account's exposure.
SYMBOLS = ("MSFT 260220P00400000", "MSFT 260220C00410000", "QCOM 260320P00150000",
           "QCOM 260320P00145000", "AAPL 260220P00230000")
ORDERS_PER_MINUTE_MAX = 6
# Windows on both sides of the 60 s the order rate looks back, and its boundaries.
DUPLICATE_WINDOWS = (1, 10, 30, 59, 60, 61, 90, 120, 600)
WINDOW_SECONDS_MAX = 86_400
# Recent intents of a constructed state were issued up to this long before NOW.
RECENT_AGE_MAX_S = 150
DIRECT_RECENT_MAX = 8

# Each example folds up to a few dozen events through pydantic: 200 examples run in seconds.
# No deadline: building events through the JSON contract is slow enough to trip it on a busy box.
PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)


def cents(amount: int) -> Decimal:
    return Decimal(amount).scaleb(-2)


def spread_cents(low: int, high: int) -> st.SearchStrategy[Decimal]:
    """Draw an amount of low..high cents spread over the whole range.

    hypothesis favours small numbers in a wide integer range (half of 0..2,000,000 fall under
    4,000); a coarse step drawn from a narrow range, plus a fine remainder, reaches every part.
    """
    step = max(1, (high - low) // SPREAD_STEPS)
    return st.tuples(st.integers(0, SPREAD_STEPS), st.integers(0, step - 1)).map(
        lambda drawn: cents(min(high, low + drawn[0] * step + drawn[1]))
    )


def text(number: Decimal) -> str:
    return format_decimal(number)


# --- Events, through the JSON contract -----------------------------------------------------------


def unstored(event_type: str, data: Mapping[str, Any], at: datetime) -> Event:
    document = {"account": ACCOUNT, "type": event_type, "occurred_at": format_time(at),
                "data": data}
    return decode_event(json.dumps(document))


def stored(events: Sequence[Event], first: int) -> list[Event]:
    return [
        with_ledger_fields(event, sequence=sequence, recorded_at=RECORDED_AT,
                           global_position=sequence - 1)
        for sequence, event in enumerate(events, start=first)
    ]


def fold_more(state: AccountState, events: Sequence[Event]) -> AccountState:
    return fold(stored(events, state.sequence + 1), state)


def limits_set(limits: Limits, at: datetime) -> Event:
    data: dict[str, Any] = {"max_open_positions": limits.max_open_positions,
                            "max_exposure": text(limits.max_exposure)}
    if limits.max_order_notional is not None:
        data["max_order_notional"] = text(limits.max_order_notional)
    if limits.daily_loss_limit is not None:
        data["daily_loss_limit"] = text(limits.daily_loss_limit)
    if limits.max_orders_per_minute is not None:
        data["max_orders_per_minute"] = limits.max_orders_per_minute
    if limits.max_underlying_exposure is not None:
        data["max_underlying_exposure"] = text(limits.max_underlying_exposure)
    if limits.duplicate_window_s is not None:
        data["duplicate_window_s"] = limits.duplicate_window_s
    return unstored("LimitsSet", data, at)


def intent_issued(signal: Signal, intent_id: str, position_id: str, at: datetime, *,
                  reducing: bool = False) -> Event:
    data: dict[str, Any] = {
        "intent_id": intent_id,
        "signal_id": signal.signal_id,
        "position_id": position_id,
        "symbol": signal.symbol,
        "instrument": signal.instrument,
        "side": signal.side,
        "quantity": text(signal.quantity),
        "limit_price": text(signal.limit_price),
        "multiplier": text(signal.multiplier),
        "expires_at": format_time(EXPIRES_AT),
        "reducing": reducing,
    }
    return unstored("IntentIssued", data, at)


def signal_evaluated(signal: Signal, decision: Decision, as_of_sequence: int,
                     at: datetime) -> Event:
    data = {
        "signal_id": signal.signal_id,
        "signal": json.loads(encode_signal(signal)),
        "allowed": decision.allowed,
        "gates": [result.model_dump(mode="json") for result in decision.gates],
        "as_of_sequence": as_of_sequence,
    }
    return unstored("SignalEvaluated", data, at)


def intent_filled(intent: PendingIntent, at: datetime) -> Event:
    # Filled at its limit price: the reservation turns into the same exposure, now open.
    data = {
        "fill_id": f"X-{intent.intent_id}",
        "position_id": intent.position_id,
        "symbol": intent.symbol,
        "instrument": intent.instrument,
        "side": intent.side,
        "quantity": text(intent.quantity),
        "price": text(intent.limit_price),
        "multiplier": text(intent.multiplier),
        "intent_id": intent.intent_id,
    }
    return unstored("OrderFilled", data, at)


def intent_rejected(intent_id: str, at: datetime) -> Event:
    return unstored("IntentRejected", {"intent_id": intent_id, "reason": "broker refused"}, at)


# --- Strategies ----------------------------------------------------------------------------------

SIDES: tuple[Side, ...] = ("long", "short")
sides = st.sampled_from(SIDES)
multipliers = st.sampled_from(["1", "100"])
quantities = st.integers(1, QUANTITY_MAX)
prices = spread_cents(1, PRICE_CENTS_MAX)
# Holdings are drawn smaller than signals, so that a state is often, not always, within limits.
held_quantities = st.integers(1, HELD_QUANTITY_MAX)
held_prices = spread_cents(1, HELD_PRICE_CENTS_MAX)


@st.composite
def limits_values(draw: st.DrawFn) -> Limits:
    max_exposure = draw(spread_cents(0, EXPOSURE_CENTS_MAX))
    # An order or underlying limit above the exposure limit could never bind: draw it below,
    # where it matters.
    order_cents_max = int(max_exposure * 100)
    return Limits(
        max_open_positions=draw(st.integers(0, POSITIONS_MAX)),
        max_exposure=max_exposure,
        max_order_notional=draw(st.none() | spread_cents(0, order_cents_max)),
        daily_loss_limit=draw(st.none() | spread_cents(0, DAILY_LOSS_CENTS_MAX)),
        max_orders_per_minute=draw(st.none() | st.integers(0, ORDERS_PER_MINUTE_MAX)),
        max_underlying_exposure=draw(st.none() | spread_cents(0, order_cents_max)),
        duplicate_window_s=draw(st.none() | st.sampled_from(DUPLICATE_WINDOWS)),
    )


@st.composite
def signal_documents(draw: st.DrawFn, quantity: st.SearchStrategy[int] = quantities,
                     price: st.SearchStrategy[Decimal] = prices) -> dict[str, Any]:
    """Draw a signal as its JSON document, without its id (a burst numbers its signals)."""
    return {
        "account": ACCOUNT,
        "occurred_at": format_time(NOW),
        "symbol": draw(st.sampled_from(SYMBOLS)),
        "instrument": "option",
        "side": draw(sides),
        "quantity": str(draw(quantity)),
        "limit_price": text(draw(price)),
        "multiplier": draw(multipliers),
    }


def make_signal(document: Mapping[str, Any], signal_id: str) -> Signal:
    return decode_signal(json.dumps({"signal_id": signal_id, **document}))


signals = signal_documents().map(lambda document: make_signal(document, "S-1"))


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """Draw an unstored history of one account across yesterday and today, in time order."""
    length = draw(st.integers(0, HISTORY_LENGTH_MAX))
    # Events before the break happened yesterday, the others today.
    day_break = draw(st.integers(0, length))
    events: list[Event] = []
    pending: list[str] = []
    # One price per position and side, so that every average entry price terminates: a
    # repeating one crashes the gates (see the xfail in tests/unit/test_gates.py), and these
    # properties are about the limits.
    price_by_holding = {(position_id, side): draw(held_prices)
                        for position_id in POSITION_IDS for side in SIDES}
    for index in range(length):
        at = (YESTERDAY if index < day_break else TODAY) + timedelta(minutes=index)
        kind = draw(st.sampled_from(KINDS))
        if kind == "fill":
            position_id = draw(st.sampled_from(POSITION_IDS))
            side = draw(sides)
            data: dict[str, Any] = {
                "fill_id": f"X-{index}",
                "position_id": position_id,
                "symbol": f"{SYMBOL} {position_id}",
                "instrument": "option",
                "side": side,
                "quantity": str(draw(held_quantities)),
                "price": text(price_by_holding[position_id, side]),
                "multiplier": MULTIPLIER_BY_POSITION[position_id],
            }
            resolves_intent = draw(st.booleans())
            if pending and resolves_intent:
                data["intent_id"] = pending.pop(0)
            events.append(unstored("OrderFilled", data, at))
        elif kind == "close":
            data = {"position_id": draw(st.sampled_from(POSITION_IDS)),
                    "price": text(draw(held_prices)), "reason": "stop_loss"}
            quantity = draw(st.none() | held_quantities)
            if quantity is not None:
                data["quantity"] = str(quantity)
            events.append(unstored("PositionClosed", data, at))
        elif kind == "issue":
            intent_id = f"I-{index}"
            pending.append(intent_id)
            document = draw(signal_documents(held_quantities, held_prices))
            signal = make_signal(document, f"S-{index}")
            events.append(intent_issued(signal, intent_id, f"N-{index}", at))
        elif kind == "release" and pending:
            intent_id = pending.pop(draw(st.integers(0, len(pending) - 1)))
            event_type = draw(st.sampled_from(["IntentRejected", "IntentExpired"]))
            events.append(unstored(event_type, {"intent_id": intent_id, "reason": "late"}, at))
        elif kind == "pause":
            events.append(unstored("TradingHalted", {"reason": "manual stop"}, at))
            events.append(unstored("TradingResumed", {}, at))
    # Left halted 1 time in 10: a halted account blocks everything and hides the other gates.
    if draw(st.integers(0, 9)) == ONE_IN_10:
        halted_at = TODAY + timedelta(hours=4)
        events.append(unstored("TradingHalted", {"reason": "manual stop"}, halted_at))
    return events


def folded_state(history: Sequence[Event], limits: Limits | None) -> AccountState:
    # Limits come last, as they would when set after the positions were opened (the incident).
    tail = [] if limits is None else [limits_set(limits, TODAY + timedelta(hours=5))]
    return fold(stored([*history, *tail], 1), account=ACCOUNT)


@st.composite
def folded_states(draw: st.DrawFn, limits: st.SearchStrategy[Limits | None]) -> AccountState:
    return folded_state(draw(histories()), draw(limits))


@st.composite
def constructed_states(draw: st.DrawFn,
                       limits: st.SearchStrategy[Limits | None]) -> AccountState:
    positions = {}
    for index in range(draw(st.integers(0, DIRECT_POSITIONS_MAX))):
        position_id = f"P-{index}"
        positions[position_id] = Position(
            position_id=position_id, symbol=draw(st.sampled_from(SYMBOLS)), instrument="option",
            side=draw(sides),
            quantity=Decimal(draw(held_quantities)), average_price=draw(held_prices),
            multiplier=Decimal(draw(multipliers)), realized_pnl=Decimal("0"),
            opened_at=TODAY,
        )
    pending = {}
    for index in range(draw(st.integers(0, DIRECT_PENDING_MAX))):
        intent_id = f"I-{index}"
        pending[intent_id] = PendingIntent(
            intent_id=intent_id, signal_id=f"S-{index}", position_id=f"N-{index}",
            symbol=draw(st.sampled_from(SYMBOLS)), instrument="option", side=draw(sides),
            quantity=Decimal(draw(held_quantities)), limit_price=draw(held_prices),
            multiplier=Decimal(draw(multipliers)), expires_at=EXPIRES_AT,
            issued_sequence=len(positions) + index + 1,
        )
    # Issued lately, oldest first: what the order-rate and duplicate gates look back on.
    ages = sorted(draw(st.lists(st.integers(0, RECENT_AGE_MAX_S), max_size=DIRECT_RECENT_MAX)),
                  reverse=True)
    recent = tuple(
        RecentIntent(intent_id=f"R-{index}", occurred_at=NOW - timedelta(seconds=age),
                     symbol=draw(st.sampled_from(SYMBOLS)), side=draw(sides),
                     quantity=Decimal(draw(held_quantities)), limit_price=draw(held_prices))
        for index, age in enumerate(ages))
    trading = draw(st.sampled_from(["active"] * 7 + ["reducing"] * 2 + ["halted"]))
    halted = trading == "halted"
    pnl_days = {day: draw(spread_cents(-DAILY_LOSS_CENTS_MAX, DAILY_LOSS_CENTS_MAX))
                for day in draw(st.sets(st.sampled_from([YESTERDAY.date(), TODAY.date(),
                                                         TOMORROW.date()])))}
    return AccountState(
        account=ACCOUNT,
        sequence=len(positions) + len(pending) + draw(st.integers(0, 100)),
        positions=positions,
        pending=pending,
        limits=draw(limits),
        halted=halted,
        halt_reason=None if trading == "active" else "manual stop",
        realized_pnl_days=pnl_days,
        realized_pnl_total=sum(pnl_days.values(), Decimal("0")),
        last_occurred_at=TODAY,
        reducing=trading == "reducing",
        recent_intents=recent,
    )


def states(limits: st.SearchStrategy[Limits | None]) -> st.SearchStrategy[AccountState]:
    return folded_states(limits) | constructed_states(limits)


# Limits are sometimes never set: 1 time in 10.
limits_or_none = st.tuples(st.integers(0, 9), limits_values()).map(
    lambda drawn: None if drawn[0] == ONE_IN_10 else drawn[1]
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One call of `evaluate`: its four arguments."""

    state: AccountState
    signal: Signal
    now: datetime
    freshness: Freshness

    def decide(self) -> Decision:
        return evaluate(self.state, self.signal, self.now, self.freshness)


@st.composite
def cases(draw: st.DrawFn,
          limits: st.SearchStrategy[Limits | None] = limits_or_none) -> Case:
    state = draw(states(limits))
    # Mostly current; sometimes behind within or beyond the bound, or ahead of the head read.
    lag = draw(st.sampled_from([0] * 12 + [1, 2, 5, -1]))
    freshness = Freshness(head=max(0, state.sequence + lag), state_sequence=state.sequence,
                          fold_bound=draw(st.integers(0, 3)))
    now = draw(st.sampled_from([NOW, NOW, NOW, NOW + timedelta(days=1)]))
    return Case(state=state, signal=draw(case_signals(state)), now=now, freshness=freshness)


@st.composite
def case_signals(draw: st.DrawFn, state: AccountState) -> Signal:
    """Draw a signal for a state: any signal, a copy of a recent intent (a duplicate when it is
    recent enough), or one naming an open position (mostly a reduction of it)."""
    kind = draw(st.sampled_from(["any"] * 3 + ["copy", "reduce"]))
    document = draw(signal_documents())
    if kind == "copy" and state.recent_intents:
        recent = draw(st.sampled_from(state.recent_intents))
        document.update(symbol=recent.symbol, side=recent.side, quantity=text(recent.quantity),
                        limit_price=text(recent.limit_price))
    elif kind == "reduce" and state.positions:
        held = state.positions[draw(st.sampled_from(sorted(state.positions)))]
        opposite = "short" if held.side == "long" else "long"
        # Mostly the opposite side and at most the open quantity; sometimes one more, or the
        # same side: an opening that names a position.
        side = draw(st.sampled_from([opposite] * 4 + [held.side]))
        quantity = draw(st.integers(1, int(held.quantity) + 1))
        document.update(symbol=held.symbol, side=side, quantity=str(quantity),
                        multiplier=text(held.multiplier), position_id=held.position_id)
    return make_signal(document, "S-1")


# --- Limit changes -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LimitChange:
    """Which limits move, and by how much; an optional limit may also be unset or set."""

    names: frozenset[str]
    positions_by: int
    money_by: Decimal
    toggles: bool
    money_set: Decimal
    # How much shorter (looser) or longer (stricter) the duplicate window gets.
    seconds_by: int


limit_changes = st.builds(
    LimitChange,
    names=st.frozensets(st.sampled_from(LIMIT_NAMES), min_size=1),
    positions_by=st.integers(0, POSITIONS_MAX),
    money_by=spread_cents(0, EXPOSURE_CENTS_MAX),
    toggles=st.booleans(),
    money_set=spread_cents(0, EXPOSURE_CENTS_MAX),
    seconds_by=st.sampled_from([0, 1, 30, 60, 600]),
)


def raised_optional(limit: Decimal | None, change: LimitChange) -> Decimal | None:
    # No limit is the highest limit there is.
    if limit is None or change.toggles:
        return None
    return limit + change.money_by


def lowered_optional(limit: Decimal | None, change: LimitChange) -> Decimal:
    if limit is None:
        return change.money_set
    return max(Decimal("0"), limit - change.money_by)


def raised_count(limit: int | None, change: LimitChange) -> int | None:
    if limit is None or change.toggles:
        return None
    return limit + change.positions_by


def lowered_count(limit: int | None, change: LimitChange) -> int:
    if limit is None:
        return change.positions_by
    return max(0, limit - change.positions_by)


def raised_window(window: int | None, change: LimitChange) -> int | None:
    # A shorter duplicate window looks back on fewer intents: a looser limit.
    if window is None or change.toggles:
        return None
    return max(1, window - change.seconds_by)


def lowered_window(window: int | None, change: LimitChange) -> int:
    if window is None:
        return max(1, change.seconds_by)
    return min(WINDOW_SECONDS_MAX, window + change.seconds_by)


def raise_limits(limits: Limits, change: LimitChange) -> Limits:
    names = change.names
    return Limits(
        max_open_positions=limits.max_open_positions
        + (change.positions_by if "max_open_positions" in names else 0),
        max_exposure=limits.max_exposure
        + (change.money_by if "max_exposure" in names else Decimal("0")),
        max_order_notional=raised_optional(limits.max_order_notional, change)
        if "max_order_notional" in names else limits.max_order_notional,
        daily_loss_limit=raised_optional(limits.daily_loss_limit, change)
        if "daily_loss_limit" in names else limits.daily_loss_limit,
        max_orders_per_minute=raised_count(limits.max_orders_per_minute, change)
        if "max_orders_per_minute" in names else limits.max_orders_per_minute,
        max_underlying_exposure=raised_optional(limits.max_underlying_exposure, change)
        if "max_underlying_exposure" in names else limits.max_underlying_exposure,
        duplicate_window_s=raised_window(limits.duplicate_window_s, change)
        if "duplicate_window_s" in names else limits.duplicate_window_s,
    )


def lower_limits(limits: Limits, change: LimitChange) -> Limits:
    names = change.names
    return Limits(
        max_open_positions=max(0, limits.max_open_positions
                               - (change.positions_by if "max_open_positions" in names else 0)),
        max_exposure=max(Decimal("0"), limits.max_exposure
                         - (change.money_by if "max_exposure" in names else Decimal("0"))),
        max_order_notional=lowered_optional(limits.max_order_notional, change)
        if "max_order_notional" in names else limits.max_order_notional,
        daily_loss_limit=lowered_optional(limits.daily_loss_limit, change)
        if "daily_loss_limit" in names else limits.daily_loss_limit,
        max_orders_per_minute=lowered_count(limits.max_orders_per_minute, change)
        if "max_orders_per_minute" in names else limits.max_orders_per_minute,
        max_underlying_exposure=lowered_optional(limits.max_underlying_exposure, change)
        if "max_underlying_exposure" in names else limits.max_underlying_exposure,
        duplicate_window_s=lowered_window(limits.duplicate_window_s, change)
        if "duplicate_window_s" in names else limits.duplicate_window_s,
    )


def with_limits(case: Case, limits: Limits) -> Case:
    return dataclasses.replace(case, state=dataclasses.replace(case.state, limits=limits))


def passed_by_gate(decision: Decision) -> dict[str, bool]:
    return {result.gate: result.passed for result in decision.gates}


def within_limits(state: AccountState, limits: Limits) -> bool:
    return (state.open_positions + state.pending_count <= limits.max_open_positions
            and state.exposure <= limits.max_exposure)


def record(decision: Decision) -> None:
    event("allowed" if decision.allowed else f"blocked: {decision.code}")


# --- The figures of the newer gates, worked out from the state's own fields ----------------------


def reduction_of(state: AccountState, signal: Signal) -> Position | None:
    """Return the open position the signal only reduces: it names it, on the other side, for at
    most what is open less the reductions already pending on it, on its symbol."""
    held = state.positions.get(signal.position_id) if signal.position_id is not None else None
    if held is None or held.side == signal.side or held.symbol != signal.symbol:
        return None
    spoken_for = sum((i.quantity for i in state.pending.values()
                      if i.reducing and i.position_id == held.position_id), Decimal("0"))
    if signal.quantity > held.quantity - spoken_for:
        return None
    return held


def exposure_on(state: AccountState, symbol: str) -> Decimal:
    """Return open + pending exposure on the symbol's underlying (its first word); a pending
    reduction reserves nothing."""
    name = symbol.split()[0]
    held = [p.notional for p in state.positions.values() if p.symbol.split()[0] == name]
    pending = [i.notional for i in state.pending.values()
               if not i.reducing and i.symbol.split()[0] == name]
    return sum(held + pending, Decimal("0"))


def issued_within(state: AccountState, now: datetime, seconds: int) -> int:
    since = now - timedelta(seconds=seconds)
    return sum(1 for intent in state.recent_intents if since < intent.occurred_at)


def identical_within(state: AccountState, signal: Signal, now: datetime, seconds: int) -> bool:
    since = now - timedelta(seconds=seconds)
    return any(since < intent.occurred_at and (intent.symbol, intent.side, intent.quantity,
                                               intent.limit_price)
               == (signal.symbol, signal.side, signal.quantity, signal.limit_price)
               for intent in state.recent_intents)


# --- (a) Never over the limits -------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(case=cases())
def test_evaluate_when_allowed_leaves_room_under_every_limit(case: Case) -> None:
    # Act
    decision = case.decide()

    # Assert
    record(decision)
    if not decision.allowed:
        return
    state, signal, limits = case.state, case.signal, case.state.limits
    assert limits is not None
    reduced = reduction_of(state, signal)
    if reduced is None:
        # An opening: every opening limit has room for it.
        assert state.reducing is False
        assert state.open_positions + state.pending_count + 1 <= limits.max_open_positions
        assert state.exposure + signal.notional <= limits.max_exposure
        if limits.max_order_notional is not None:
            assert signal.notional <= limits.max_order_notional
        if limits.max_underlying_exposure is not None:
            assert exposure_on(state, signal.symbol) + signal.notional \
                <= limits.max_underlying_exposure
    if limits.max_orders_per_minute is not None:
        assert issued_within(state, case.now, 60) + 1 <= limits.max_orders_per_minute
    if limits.duplicate_window_s is not None:
        assert not identical_within(state, signal, case.now, limits.duplicate_window_s)
    if limits.daily_loss_limit is not None:
        assert -state.realized_pnl_on(case.now.astimezone(UTC).date()) < limits.daily_loss_limit
    assert state.halted is False
    assert 0 <= case.freshness.lag <= case.freshness.fold_bound


# --- (b) A burst of signals, each reserved as it is allowed --------------------------------------


def burst_step(state: AccountState, step: dict[str, Any] | str, index: int) -> list[Event]:
    """Return the events the step appends: a decision (and its intent), a fill or a rejection."""
    at = NOW + timedelta(seconds=index)
    if isinstance(step, dict):
        signal = make_signal(step, f"B-{index}")
        decision = evaluate(state, signal, at, Freshness(
            head=state.sequence, state_sequence=state.sequence, fold_bound=0))
        record(decision)
        appended = [signal_evaluated(signal, decision, state.sequence, at)]
        if decision.allowed:
            appended.append(intent_issued(signal, f"BI-{index}", f"BP-{index}", at))
        return appended
    if not state.pending:
        return []
    oldest = min(state.pending.values(), key=lambda intent: intent.issued_sequence)
    if step == "fill":
        return [intent_filled(oldest, at)]
    return [intent_rejected(oldest.intent_id, at)]


@PROPERTY_SETTINGS
@given(
    history=histories(),
    limits=limits_values(),
    steps=st.lists(signal_documents() | signal_documents() | st.sampled_from(["fill", "reject"]),
                   min_size=1, max_size=BURST_LENGTH_MAX),
)
def test_evaluate_when_burst_of_signals_reserved_one_by_one_never_exceeds_limits(
    history: list[Event], limits: Limits, steps: list[dict[str, Any] | str]
) -> None:
    # Arrange
    state = folded_state(history, limits)
    # A history may start over a limit (as in the incident): the burst must not add to it.
    positions_max = max(limits.max_open_positions, state.open_positions + state.pending_count)
    exposure_max = max(limits.max_exposure, state.exposure)

    for index, step in enumerate(steps):
        # Act
        appended = burst_step(state, step, index)
        state = fold_more(state, appended)

        # Assert
        assert state.open_positions + state.pending_count <= positions_max, (index, step)
        assert state.exposure <= exposure_max, (index, step)
        if any(event.type == "IntentIssued" for event in appended):
            assert within_limits(state, limits), (index, step)
    if limits.max_order_notional is not None:
        burst_intents = [intent for intent in state.pending.values()
                         if intent.intent_id.startswith("BI-")]
        assert all(intent.notional <= limits.max_order_notional for intent in burst_intents)


# --- (b') Orders over time: rate, duplicates and exposure per underlying -------------------------

# Seconds between two steps of a timed burst: mostly the windows' boundaries (so that an intent
# falls exactly 30 or 60 s before a decision) and both sides of them.
GAPS_S = (0, 0, 1, 5, 29, 30, 30, 30, 31, 59, 60, 60, 60, 61, 90)
# Windows a timed burst is bounded by: the boundary gaps, or a second more (an intent then falls
# exactly a second inside), sometimes others.
TIMED_WINDOWS = (30, 31, 60, 61, 30, 31, 60, 61, 1, 59, 90, 120, 600)
# Few prices and quantities, so that a strategy's orders often repeat exactly.
TIMED_PRICES = (Decimal("1.00"), Decimal("2.50"), Decimal("6.00"))
TIMED_QUANTITY_MAX = 3
TIMED_POSITIONS_MAX = 20
TIMED_EXPOSURE_CENTS_MAX = 2_000_000
TIMED_UNDERLYING_CENTS_MAX = 600_000
# Every order notional of a timed burst is a multiple of $0.50, most (multiplier 100) of $50:
# limits that are multiples of $50 too are often reached exactly.
TIMED_LIMIT_STEP = Decimal(50)
TIMED_LIMIT_STEPS = 60
TIMED_HISTORY_MAX = 8
TIMED_BURST_MAX = 30
# History intents were issued up to this long before the burst starts.
TIMED_HISTORY_AGE_MAX_S = 180
TIMED_SETTINGS = settings(max_examples=150, deadline=None)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    """What a strategy asks for; the same Order twice is a duplicate."""

    symbol: str
    side: Side
    quantity: int
    limit_price: Decimal
    multiplier: str

    def document(self) -> dict[str, Any]:
        return {"account": ACCOUNT, "occurred_at": format_time(NOW), "symbol": self.symbol,
                "instrument": "option", "side": self.side, "quantity": str(self.quantity),
                "limit_price": text(self.limit_price), "multiplier": self.multiplier}


orders = st.builds(Order, symbol=st.sampled_from(SYMBOLS), side=sides,
                   quantity=st.integers(1, TIMED_QUANTITY_MAX),
                   limit_price=st.sampled_from(TIMED_PRICES),
                   multiplier=st.sampled_from(["100"] * 4 + ["1"]))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One step of a timed burst, `gap` seconds after the previous one.

    kind "open": the strategy's order `order` (an index into its few orders); "reduce": an order
    naming the open position `pick` (an index into the sorted ids), on the other side, for
    `over` more than a share of its quantity (over 1: more than is open); "fill", "reject",
    "cancel": the oldest pending intent is filled at its limit price (a reduction as a close
    naming it), rejected or cancelled.
    """

    kind: str
    gap: int
    order: int = 0
    pick: int = 0
    over: int = 0


timed_steps = st.builds(
    Step, kind=st.sampled_from(["open"] * 6 + ["reduce"] * 2 + ["fill", "reject", "cancel"]),
    gap=st.sampled_from(GAPS_S), order=st.integers(0, 3), pick=st.integers(0, 20),
    over=st.sampled_from([0, 0, 0, 1]))


timed_amounts = st.integers(0, TIMED_LIMIT_STEPS).map(lambda steps: steps * TIMED_LIMIT_STEP) \
    | spread_cents(0, TIMED_UNDERLYING_CENTS_MAX)


@st.composite
def timed_limits(draw: st.DrawFn) -> Limits:
    """Limits roomy enough in positions and exposure that the newer limits often decide."""
    return Limits(
        max_open_positions=draw(st.integers(0, TIMED_POSITIONS_MAX)),
        max_exposure=draw(spread_cents(0, TIMED_EXPOSURE_CENTS_MAX)),
        max_order_notional=draw(st.none() | spread_cents(0, TIMED_UNDERLYING_CENTS_MAX)),
        daily_loss_limit=None,
        max_orders_per_minute=draw(st.none() | st.integers(0, ORDERS_PER_MINUTE_MAX)),
        max_underlying_exposure=draw(st.none() | timed_amounts),
        duplicate_window_s=draw(st.none() | st.sampled_from(TIMED_WINDOWS)),
    )



@st.composite
def recent_histories(draw: st.DrawFn, strategy: Sequence[Order]) -> list[Event]:
    """Draw what happened in the minutes before the burst: positions opened, the strategy's
    orders issued (some released), and at times a move to reducing or a halt."""
    events: list[Event] = []
    start = NOW - timedelta(seconds=TIMED_HISTORY_AGE_MAX_S + 1)
    for index in range(draw(st.integers(0, TIMED_HISTORY_MAX))):
        held = draw(orders)
        events.append(unstored("OrderFilled", {
            "fill_id": f"HX-{index}", "position_id": f"HP-{index}", "symbol": held.symbol,
            "instrument": "option", "side": held.side, "quantity": str(held.quantity),
            "price": text(held.limit_price), "multiplier": held.multiplier}, start))
    ages = sorted(draw(st.lists(st.integers(1, TIMED_HISTORY_AGE_MAX_S),
                                max_size=TIMED_HISTORY_MAX)), reverse=True)
    for index, age in enumerate(ages):
        at = NOW - timedelta(seconds=age)
        order = strategy[draw(st.integers(0, len(strategy) - 1))]
        signal = make_signal(order.document(), f"HS-{index}")
        events.append(intent_issued(signal, f"HI-{index}", f"HN-{index}", at))
        if draw(st.integers(0, 3)) == 0:
            events.append(intent_rejected(f"HI-{index}", at))
    trading = draw(st.sampled_from(["active"] * 6 + ["reducing"] * 3 + ["halted"]))
    if trading == "reducing":
        events.append(unstored("TradingReduced", {"reason": "risk review"}, NOW))
    elif trading == "halted":
        events.append(unstored("TradingHalted", {"reason": "manual stop"}, NOW))
    return events


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Issued:
    """An intent as the model remembers it: when, and what it asked for."""

    intent_id: str
    at: datetime
    key: tuple[str, str, Decimal, Decimal]
    underlying: str


def issued_in(events: Sequence[Event]) -> list[Issued]:
    issued = []
    for stored_event in events:
        data = stored_event.data
        if stored_event.type == "IntentIssued":
            assert isinstance(data, IntentIssued)
            issued.append(Issued(
                intent_id=data.intent_id, at=stored_event.occurred_at,
                key=(data.symbol, data.side, data.quantity, data.limit_price),
                underlying=data.symbol.split()[0]))
    return issued


def risk_by_underlying(state: AccountState, reductions: set[str]) -> dict[str, Decimal]:
    """Return open exposure plus the pending openings' exposure, per underlying: what could be
    held if every opening intent filled (a pending reduction only lowers it)."""
    risk = {symbol.split()[0]: Decimal("0") for symbol in SYMBOLS}
    for held in state.positions.values():
        risk[held.symbol.split()[0]] += held.notional
    for intent in state.pending.values():
        if intent.intent_id not in reductions:
            risk[intent.symbol.split()[0]] += intent.notional
    return risk


def timed_signal(state: AccountState, step: Step, strategy: Sequence[Order],
                 signal_id: str) -> Signal | None:
    if step.kind == "open":
        return make_signal(strategy[step.order % len(strategy)].document(), signal_id)
    if not state.positions:
        return None
    held = state.positions[sorted(state.positions)[step.pick % len(state.positions)]]
    quantity = held.quantity + 1 if step.over else max(Decimal(1), held.quantity // 2)
    order = Order(symbol=held.symbol, side="short" if held.side == "long" else "long",
                  quantity=int(quantity), limit_price=TIMED_PRICES[step.pick % 3],
                  multiplier=text(held.multiplier))
    return make_signal({**order.document(), "position_id": held.position_id}, signal_id)


def timed_release(state: AccountState, step: Step, reductions: set[str],
                  at: datetime) -> list[Event]:
    if not state.pending:
        return []
    oldest = min(state.pending.values(), key=lambda intent: intent.issued_sequence)
    if step.kind == "reject":
        return [intent_rejected(oldest.intent_id, at)]
    if step.kind == "cancel":
        return [unstored("IntentCancelled", {"intent_id": oldest.intent_id, "reason": "halt"},
                         at)]
    if oldest.intent_id in reductions:
        # A reduction executes as a close of the position it names (docs/events.md).
        return [unstored("PositionClosed", {
            "close_id": f"C-{oldest.intent_id}", "position_id": oldest.position_id,
            "price": text(oldest.limit_price), "quantity": text(oldest.quantity),
            "intent_id": oldest.intent_id}, at)]
    return [intent_filled(oldest, at)]


def loosened(limits: Limits) -> list[Limits]:
    """Return the limits with one limit at a time raised a little, and each optional one unset."""
    looser = []
    for name in LIMIT_NAMES:
        for toggles in (False, True):
            change = LimitChange(names=frozenset({name}), positions_by=1,
                                 money_by=Decimal("0.01"), toggles=toggles,
                                 money_set=Decimal("0"), seconds_by=1)
            looser.append(raise_limits(limits, change))
    return looser


@TIMED_SETTINGS
@given(
    strategy=st.lists(orders, min_size=1, max_size=3),
    limits=timed_limits(),
    data=st.data(),
    steps=st.lists(timed_steps, min_size=1, max_size=TIMED_BURST_MAX),
)
def test_evaluate_when_orders_come_over_time_keeps_rate_duplicates_and_names_within_limits(
    strategy: list[Order], limits: Limits, data: st.DataObject, steps: list[Step],
) -> None:
    # Arrange: limits first, then the minutes before the burst.
    history = data.draw(recent_histories(strategy))
    events = stored([limits_set(limits, NOW - timedelta(hours=1)), *history], 1)
    state = fold(events, account=ACCOUNT)
    issued = issued_in(events)
    reductions: set[str] = set()
    start_risk = risk_by_underlying(state, reductions)
    now = NOW

    for index, step in enumerate(steps):
        now += timedelta(seconds=step.gap)
        signal = None if step.kind in ("fill", "reject", "cancel") \
            else timed_signal(state, step, strategy, f"T-{index}")
        if signal is None:
            state = fold_more(state, timed_release(state, step, reductions, now))
            continue

        # Act
        before = state
        decision = evaluate(before, signal, now, Freshness(
            head=before.sequence, state_sequence=before.sequence, fold_bound=0))
        reduced = reduction_of(before, signal)
        record(decision)
        appended = [signal_evaluated(signal, decision, before.sequence, now)]
        if decision.allowed:
            intent_id = f"TI-{index}"
            if reduced is not None:
                reductions.add(intent_id)
            appended.append(intent_issued(
                signal, intent_id, f"TP-{index}" if reduced is None else reduced.position_id,
                now, reducing=reduced is not None))
        state = fold_more(before, appended)
        issued += issued_in(appended)

        # Assert: the newer gates decide exactly as the model of every intent issued says.
        passed = passed_by_gate(decision)
        earlier = [intent for intent in issued if intent.intent_id != f"TI-{index}"]
        if limits.max_orders_per_minute is not None:
            in_minute = [intent for intent in earlier if now - RATE_WINDOW < intent.at <= now]
            assert passed[gates.MAX_ORDER_RATE] == (
                len(in_minute) + 1 <= limits.max_orders_per_minute), (index, in_minute)
        if limits.duplicate_window_s is not None:
            key = (signal.symbol, signal.side, signal.quantity, signal.limit_price)
            window = timedelta(seconds=limits.duplicate_window_s)
            twins = [intent for intent in earlier
                     if intent.key == key and now - window < intent.at <= now]
            assert passed[gates.DUPLICATE_ORDER] == (twins == []), (index, twins)
            ages = {now - intent.at for intent in earlier if intent.key == key}
            if window in ages:
                event("identical intent exactly a window before")
            if window - timedelta(seconds=1) in ages:
                event("identical intent a second inside the window")
        if limits.max_underlying_exposure is not None and reduced is None:
            assert passed[gates.MAX_UNDERLYING_EXPOSURE] == (
                exposure_on(before, signal.symbol) + signal.notional
                <= limits.max_underlying_exposure)
            if exposure_on(before, signal.symbol) + signal.notional \
                    == limits.max_underlying_exposure:
                event("exactly at the underlying limit")

        # Assert (b): a looser limit, any one, keeps every gate that passed passing.
        for looser in loosened(limits):
            again = evaluate(dataclasses.replace(before, limits=looser), signal, now,
                             Freshness(head=before.sequence, state_sequence=before.sequence,
                                       fold_bound=0))
            assert again.allowed or not decision.allowed, (looser, again.reason)
            assert all(passed_by_gate(again)[code] for code, ok in passed.items() if ok)
        if not decision.allowed:
            continue

        # Assert (a): the intents issued in the 60 s up to this one are within the rate...
        assert before.trading_state == "active" or (
            before.trading_state == "reducing" and reduced is not None), decision.reason
        new = issued[-1]
        if limits.max_orders_per_minute is not None:
            in_minute = [intent for intent in issued if now - RATE_WINDOW < intent.at <= now]
            assert len(in_minute) <= limits.max_orders_per_minute, (index, in_minute)
        # ...no identical intent was issued within the duplicate window...
        if limits.duplicate_window_s is not None:
            window = timedelta(seconds=limits.duplicate_window_s)
            twins = [intent for intent in issued[:-1]
                     if intent.key == new.key and now - window < intent.at <= now]
            assert twins == [], (index, new, twins)
        # ...and no opening took an underlying over its limit.
        if limits.max_underlying_exposure is not None:
            if reduced is None:
                assert state.exposure_on(new.underlying) <= limits.max_underlying_exposure
            for name, risk in risk_by_underlying(state, reductions).items():
                assert risk <= max(limits.max_underlying_exposure, start_risk[name]), name


# --- (c) Monotonic in every limit ----------------------------------------------------------------


@PROPERTY_SETTINGS
@given(case=cases(limits_values()), change=limit_changes)
def test_evaluate_when_limits_raised_never_turns_an_allow_into_a_block(
    case: Case, change: LimitChange
) -> None:
    # Arrange
    assert case.state.limits is not None
    raised = with_limits(case, raise_limits(case.state.limits, change))

    # Act
    before = case.decide()
    after = raised.decide()

    # Assert
    record(before)
    if before.allowed:
        assert after.allowed
    passed_after = passed_by_gate(after)
    for code, passed in passed_by_gate(before).items():
        if passed:
            assert passed_after[code], code


@PROPERTY_SETTINGS
@given(case=cases(limits_values()), change=limit_changes)
def test_evaluate_when_limits_lowered_never_turns_a_block_into_an_allow(
    case: Case, change: LimitChange
) -> None:
    # Arrange
    assert case.state.limits is not None
    lowered = with_limits(case, lower_limits(case.state.limits, change))

    # Act
    before = case.decide()
    after = lowered.decide()

    # Assert
    record(before)
    if not before.allowed:
        assert not after.allowed
    passed_after = passed_by_gate(after)
    for code, passed in passed_by_gate(before).items():
        if not passed:
            assert not passed_after[code], code


# --- (d) Determinism -----------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(case=cases())
def test_evaluate_when_same_inputs_gives_an_equal_decision(case: Case) -> None:
    # Arrange
    state_before = dataclasses.replace(case.state)

    # Act
    first = case.decide()
    second = case.decide()

    # Assert
    assert first == second
    assert case.state == state_before


@PROPERTY_SETTINGS
@given(history=histories(), limits=limits_or_none, document=signal_documents())
def test_evaluate_when_state_refolded_and_signal_redecoded_gives_an_equal_decision(
    history: list[Event], limits: Limits | None, document: dict[str, Any]
) -> None:
    # Arrange
    state, again = folded_state(history, limits), folded_state(history, limits)
    freshness = Freshness(head=state.sequence, state_sequence=state.sequence, fold_bound=0)

    # Act
    first = evaluate(state, make_signal(document, "S-1"), NOW, freshness)
    second = evaluate(again, make_signal(document, "S-1"), NOW, freshness)

    # Assert
    assert first == second
    assert first.code == second.code
    assert first.reason == second.reason


# --- (e) Allowed exactly when every reported gate passed, code in order of precedence ------------


@PROPERTY_SETTINGS
@given(case=cases())
def test_evaluate_when_any_inputs_allows_iff_every_gate_passed_and_codes_first_failure(
    case: Case,
) -> None:
    # Act
    decision = case.decide()

    # Assert
    record(decision)
    codes = [result.gate for result in decision.gates]
    assert all(code in gates.GATES for code in codes)
    assert codes == sorted(set(codes), key=gates.GATES.index)
    assert decision.allowed == all(result.passed for result in decision.gates)
    failed = [code for code in gates.GATES if code in codes
              and not passed_by_gate(decision)[code]]
    assert decision.code == (failed[0] if failed else None)
    assert (decision.code is None) == decision.allowed
    assert (decision.reason == "all gates passed") == decision.allowed
    assert codes[0] == gates.PROJECTION_STALE
    if not decision.gates[0].passed:
        assert codes == [gates.PROJECTION_STALE]
    if case.state.limits is None and decision.gates[0].passed:
        assert decision.code in (gates.TRADING_HALTED, gates.TRADING_REDUCING,
                                 gates.LIMITS_NOT_SET)

