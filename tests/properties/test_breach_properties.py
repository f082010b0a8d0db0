"""Goal: for any history, the breach finder reports exactly the events at which the account was
over a limit in force, as ordered, non-overlapping intervals whose peaks exceed their limits,
whether or not the times follow the sequence; feeding in chunks changes nothing; a window only
clips; the samples stay within their bound and keep the peaks; the finder's state is the fold's;
and a history whose every intent the gates allowed breaks no order-rate, underlying-exposure or
duplicate-order limit.

Method: hypothesis builds valid histories of one account (fills on both sides, adds and flips,
closes, some executing an intent, intents issued, filled, rejected, expired and cancelled, limits
raised and lowered with optional order, daily-loss, order-rate, underlying-exposure and
duplicate-window limits, halts, reductions and resumes, decisions) seconds to days apart, on
symbols sharing underlyings, through the JSON contract and `with_ledger_fields`. An independent
model folds every prefix with the public `projections.fold.apply` and computes, event by event,
which gates are over their limits (the rate and duplicate figures from
`AccountState.intents_since`, the underlying's from `AccountState.exposure_on`); the finder's
intervals must cover exactly those events. A decided history is built as the dispatcher builds
one: each signal of a burst is evaluated by `dispatcher.gates.evaluate` on the state folded so
far, at the decision's time, and issued as an intent stamped with that time when allowed. Its
signals open positions, and some reduce them: an allowed reducing intent reserves nothing, in the
gates as in the fold.

Discrepancies: the same histories, stored as ingest stores them (a `DiscrepancyFound` after an
execution, for some of what `projections.executions.discrepancies` finds, judged on the state
folded by `apply` just before it and on the fates of the intents ended before it); the audit must
list exactly what that function found at each execution, `recorded` exactly where one was
stored, and within a window exactly those of the window's executions.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import event as tally
from hypothesis import given, settings
from hypothesis import strategies as st

from console.charts import terminal_chart
from dispatcher.gates import Freshness, evaluate, issued_intent, reduces
from ledger.events import (
    Event,
    IntentCancelledEvent,
    IntentExpiredEvent,
    IntentFate,
    IntentIssuedEvent,
    IntentRejectedEvent,
    LimitsSetEvent,
    OrderFilledEvent,
    PositionClosedEvent,
    Signal,
    build_event,
    decode_event,
    decode_signal,
    format_decimal,
    notional,
    underlying,
    with_ledger_fields,
)
from projections.breaches import (
    GATES,
    SAMPLES_MAX_MIN,
    AccountAudit,
    Breach,
    BreachFinder,
    Gate,
    audit_document,
    audit_events,
)
from projections.executions import discrepancies
from projections.fold import (
    RATE_WINDOW,
    AccountState,
    Limits,
    apply,
    fold,
    initial_state,
    trading_day,
)
from tests.factories import signal_evaluated_data

ACCOUNT = "large"
START = datetime(2026, 2, 3, 14, 30, tzinfo=UTC)
RECORDED_AT = datetime(2026, 2, 3, 14, 30, tzinfo=UTC)
MULTIPLIER_BY_POSITION = {"P-0": "100", "P-1": "100", "P-2": "1", "P-3": "100"}
POSITION_IDS = sorted(MULTIPLIER_BY_POSITION)
# Two positions on each underlying, so that exposure on one underlying adds up.
UNDERLYING_BY_POSITION = {"P-0": "AAA", "P-1": "AAA", "P-2": "BBB", "P-3": "BBB"}
UNDERLYINGS = sorted(set(UNDERLYING_BY_POSITION.values()))
# Long enough to go over a limit and come back within it.
HISTORY_LENGTH_MIN = 6
HISTORY_LENGTH_MAX = 40
# Weighted by repetition: fills, closes and intents move the figures; limits move the lines.
KIND_WEIGHTS = {
    "fill": 5,
    "close": 3,
    "issue": 4,
    "release": 2,
    "limits": 2,
    "halt": 1,
    "signal": 1,
}
KINDS = [kind for kind, weight in KIND_WEIGHTS.items() for _ in range(weight)]

# Each example folds every prefix of a history of up to 40 events: 150 examples run in seconds.
# No deadline: building events through pydantic is slow enough to trip it on a loaded CI box.
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)

# Round figures, so that exposures and losses land exactly on limits now and then.
prices = st.one_of(
    st.sampled_from([Decimal("1.00"), Decimal("2.50"), Decimal("6.00"), Decimal("17.10")]),
    st.decimals(places=2, min_value=Decimal("0.01"), max_value=Decimal("200"), allow_nan=False),
)
# Mostly away from the fill prices, so that closes realise losses and profits.
close_prices = st.one_of(
    st.sampled_from([Decimal("0.50"), Decimal("0.80"), Decimal("5.00"), Decimal("20.00")]),
    prices,
)
quantities = st.one_of(
    st.integers(min_value=1, max_value=20).map(Decimal),
    st.decimals(places=2, min_value=Decimal("0.01"), max_value=Decimal("20"), allow_nan=False),
)
money_limits = st.one_of(
    st.sampled_from([Decimal("0"), Decimal("500"), Decimal("1000"), Decimal("7200")]),
    st.decimals(places=2, min_value=Decimal("0"), max_value=Decimal("20000"), allow_nan=False),
)

# Small, so that a day's losses from a few closes go over them now and then.
loss_limits = st.sampled_from([Decimal("0"), Decimal("10"), Decimal("100"), Decimal("500")])
# Around the minute and the steps between events, so that windows end right at an intent.
duplicate_windows = st.sampled_from([1, 30, 60, 61, 120, 600])
rates = st.integers(min_value=0, max_value=4)
# Seconds to days: intents fall inside and outside the rate and duplicate windows, on their
# edges, and on the next UTC day.
STEPS = [timedelta(seconds=seconds) for seconds in (0, 1, 30, 59, 60, 61)] + [
    timedelta(minutes=7), timedelta(hours=3), timedelta(days=1)]
# Intents repeat these often enough to be duplicates now and then.
intent_quantities = st.one_of(st.sampled_from([Decimal(1), Decimal(2)]), quantities)
intent_prices = st.one_of(st.sampled_from([Decimal("1.00"), Decimal("2.50")]), prices)


def text(number: Decimal) -> str:
    return format_decimal(number)


def symbol_of(position_id: str) -> str:
    return f"{UNDERLYING_BY_POSITION[position_id]} {position_id}"


def stored(event_type: str, data: Mapping[str, Any], at: datetime, sequence: int) -> Event:
    document = {
        "account": ACCOUNT,
        "type": event_type,
        "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": data,
    }
    event = decode_event(json.dumps(document))
    return with_ledger_fields(
        event, sequence=sequence, recorded_at=RECORDED_AT, global_position=sequence
    )


@st.composite
def event_data(
    draw: st.DrawFn, kind: str, index: int, at: datetime, issued: list[str]
) -> tuple[str, dict[str, Any]]:
    if kind == "fill":
        position_id = draw(st.sampled_from(POSITION_IDS))
        data: dict[str, Any] = {
            "fill_id": f"X-{index}",
            "position_id": position_id,
            "symbol": symbol_of(position_id),
            "instrument": "option",
            "side": draw(st.sampled_from(["long", "short"])),
            "quantity": text(draw(quantities)),
            "price": text(draw(prices)),
            "multiplier": MULTIPLIER_BY_POSITION[position_id],
        }
        if draw(st.booleans()) and issued:
            data["intent_id"] = draw(st.sampled_from(issued))
        return "OrderFilled", data
    if kind == "close":
        data = {
            "position_id": draw(st.sampled_from(POSITION_IDS)),
            "price": text(draw(close_prices)),
        }
        if draw(st.booleans()):
            data["quantity"] = text(draw(quantities))
        if issued and draw(st.integers(min_value=0, max_value=3)) == 0:
            # A close that executes an intent releases it.
            data["intent_id"] = draw(st.sampled_from(issued))
        return "PositionClosed", data
    if kind == "issue":
        position_id = draw(st.sampled_from([*POSITION_IDS, f"P-new-{index}"]))
        issued.append(f"I-{index}")
        symbol = (symbol_of(position_id) if position_id in UNDERLYING_BY_POSITION
                  else f"{draw(st.sampled_from(UNDERLYINGS))} NEW")
        return "IntentIssued", {
            "intent_id": f"I-{index}",
            "signal_id": f"S-{index}",
            "position_id": position_id,
            "symbol": symbol,
            "instrument": "option",
            "side": draw(st.sampled_from(["long", "short"])),
            "quantity": text(draw(intent_quantities)),
            "limit_price": text(draw(intent_prices)),
            "multiplier": MULTIPLIER_BY_POSITION.get(position_id, "100"),
            "expires_at": (at + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    if kind == "release":
        event_type = draw(st.sampled_from(["IntentRejected", "IntentExpired", "IntentCancelled"]))
        intent_id = draw(st.sampled_from([*issued, "I-unknown"]))
        return event_type, {"intent_id": intent_id, "reason": "no fill"}
    if kind == "limits":
        data = {
            "max_open_positions": draw(st.integers(min_value=0, max_value=4)),
            "max_exposure": text(draw(money_limits)),
        }
        if draw(st.booleans()):
            data["max_order_notional"] = text(draw(money_limits))
        if draw(st.booleans()):
            data["daily_loss_limit"] = text(draw(loss_limits))
        if draw(st.booleans()):
            data["max_orders_per_minute"] = draw(rates)
        if draw(st.booleans()):
            data["max_underlying_exposure"] = text(draw(money_limits))
        if draw(st.booleans()):
            data["duplicate_window_s"] = draw(duplicate_windows)
        return "LimitsSet", data
    if kind == "halt":
        state = draw(st.sampled_from(["TradingHalted", "TradingReduced", "TradingResumed"]))
        return state, ({} if state == "TradingResumed" else {"reason": "operator"})
    return "SignalEvaluated", signal_evaluated_data(ACCOUNT, index, at, allowed=False)



@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """Return a stored history, sequences 1..n, times never going back, seconds to days apart."""
    kinds = draw(
        st.lists(st.sampled_from(KINDS), min_size=HISTORY_LENGTH_MIN, max_size=HISTORY_LENGTH_MAX)
    )
    if draw(st.integers(min_value=0, max_value=3)) > 0:
        # Most histories set limits first, as a real account does; the others start without.
        kinds[0] = "limits"
    events: list[Event] = []
    issued: list[str] = []
    at = START
    for index, kind in enumerate(kinds):
        at += draw(st.sampled_from(STEPS))
        event_type, data = draw(event_data(kind, index, at, issued))
        events.append(stored(event_type, data, at, index + 1))
    return events


# --- An independent model of the gates, from the public fold -----------------------------------


@dataclass(frozen=True)
class Over:
    """A gate over its limit after one event: the value and the limit then in force."""

    value: Decimal
    limit: Decimal


def over_limits(events: list[Event]) -> list[dict[Gate, Over]]:
    """Return, for each event in order, the gates over their limits right after it."""
    state = initial_state(ACCOUNT)
    halted_orders: int | None = None
    # The order-rate and duplicate-order figures last judged over: they stand until the next
    # intent, or until new limits take them back within.
    by_intent: dict[Gate, Over] = {}
    latest = START
    result: list[dict[Gate, Over]] = []
    for event in events:
        before = state
        state = apply(state, event)
        latest = max(latest, event.occurred_at)
        is_order = isinstance(event, (OrderFilledEvent, IntentIssuedEvent))
        over: dict[Gate, Over] = {}
        if state.limits is not None:
            over.update(level_gates_over(state, event, latest))
            if halted_orders is not None and not state.halted:
                halted_orders = None
            elif state.halted and (is_order or halted_orders is not None):
                halted_orders = (halted_orders or 0) + is_order
            if halted_orders is not None:
                over["trading_halted"] = Over(Decimal(halted_orders), Decimal(0))
            if isinstance(event, IntentIssuedEvent):
                by_intent = intent_gates_over(before, event, state.limits)
            elif isinstance(event, LimitsSetEvent):
                by_intent = rejudged(by_intent, state.limits)
            over.update(by_intent)
        result.append(over)
    return result


def intent_gates_over(before: AccountState, event: IntentIssuedEvent,
                      limits: Limits) -> dict[Gate, Over]:
    """Return the rate and duplicate gates an intent is over, judged as the gates judged it."""
    over: dict[Gate, Over] = {}
    at = event.occurred_at
    if limits.max_orders_per_minute is not None:
        rate = len(before.intents_since(at - RATE_WINDOW)) + 1
        if rate > limits.max_orders_per_minute:
            over["max_order_rate"] = Over(Decimal(rate), Decimal(limits.max_orders_per_minute))
    if limits.duplicate_window_s is not None:
        data = event.data
        same = [intent for intent in
                before.intents_since(at - timedelta(seconds=limits.duplicate_window_s))
                if (intent.symbol, intent.side, intent.quantity, intent.limit_price)
                == (data.symbol, data.side, data.quantity, data.limit_price)]
        if same:
            over["duplicate_order"] = Over(Decimal(len(same)), Decimal(0))
    return over


def rejudged(by_intent: dict[Gate, Over], limits: Limits) -> dict[Gate, Over]:
    """Return the rate and duplicate figures still over the limits just set."""
    kept: dict[Gate, Over] = {}
    rate = by_intent.get("max_order_rate")
    if rate is not None and limits.max_orders_per_minute is not None \
            and rate.value > limits.max_orders_per_minute:
        kept["max_order_rate"] = Over(rate.value, Decimal(limits.max_orders_per_minute))
    duplicate = by_intent.get("duplicate_order")
    if duplicate is not None and limits.duplicate_window_s is not None:
        kept["duplicate_order"] = duplicate
    return kept


def highest_underlying(state: AccountState) -> Decimal:
    names = {underlying(position.symbol) for position in state.positions.values()}
    names |= {underlying(intent.symbol) for intent in state.pending.values()}
    return max((state.exposure_on(name) for name in names), default=Decimal(0))


def level_gates_over(state: AccountState, event: Event, latest: datetime) -> dict[Gate, Over]:
    limits = state.limits
    assert limits is not None
    over: dict[Gate, Over] = {}
    positions = state.open_positions + state.pending_count
    if positions > limits.max_open_positions:
        over["max_open_positions"] = Over(Decimal(positions), Decimal(limits.max_open_positions))
    if state.exposure > limits.max_exposure:
        over["max_exposure"] = Over(state.exposure, limits.max_exposure)
    order_max = limits.max_order_notional
    if order_max is not None:
        if isinstance(event, OrderFilledEvent):
            order = notional(event.data.quantity, event.data.price, event.data.multiplier)
        elif isinstance(event, IntentIssuedEvent):
            order = notional(event.data.quantity, event.data.limit_price, event.data.multiplier)
        else:
            order = None
        if order is not None and order > order_max:
            over["max_order_notional"] = Over(order, order_max)
    loss = -state.realized_pnl_on(trading_day(latest))
    if limits.daily_loss_limit is not None and loss > limits.daily_loss_limit:
        over["daily_loss_limit"] = Over(loss, limits.daily_loss_limit)
    highest = highest_underlying(state)
    if limits.max_underlying_exposure is not None and highest > limits.max_underlying_exposure:
        over["max_underlying_exposure"] = Over(highest, limits.max_underlying_exposure)
    return over


def covered(breach: Breach, last_sequence: int) -> range:
    """Return the sequences at which the breach's gate was over: from opening to closing."""
    end = last_sequence + 1 if breach.last_sequence is None else breach.last_sequence
    return range(breach.first_sequence, end)


def gate_breaches(result: AccountAudit, gate: Gate) -> list[Breach]:
    return [breach for breach in result.breaches if breach.gate == gate]


# --- Properties -----------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(histories())
def test_breaches_when_any_history_cover_exactly_the_events_over_each_limit(
    events: list[Event],
) -> None:
    # Arrange
    expected = over_limits(events)

    # Act
    result = audit_events(ACCOUNT, events)

    # Assert
    assert_covers_exactly(result, expected, len(events))


@PROPERTY_SETTINGS
@given(histories(), st.randoms(use_true_random=False))
def test_breaches_when_times_run_backwards_still_cover_exactly_the_events_over_each_limit(
    events: list[Event], shuffler: Any,
) -> None:
    """Late and back-dated intents: the rate and duplicate windows count by time, not order."""
    # Arrange
    times = [event.occurred_at for event in events]
    shuffler.shuffle(times)
    shuffled = _restamped(events, times)
    expected = over_limits(shuffled)

    # Act
    result = audit_events(ACCOUNT, shuffled)

    # Assert
    assert_covers_exactly(result, expected, len(events))


def assert_covers_exactly(result: AccountAudit, expected: list[dict[Gate, Over]],
                          length: int) -> None:
    for gate in GATES:
        over_at = {index + 1: over[gate] for index, over in enumerate(expected) if gate in over}
        breaches = gate_breaches(result, gate)
        reported = [sequence for breach in breaches for sequence in covered(breach, length)]
        assert reported == sorted(over_at), gate
        for breach in breaches:
            values = [over_at[sequence].value for sequence in covered(breach, length)]
            assert breach.peak == max(values), breach
            assert breach.limit == over_at[breach.first_sequence].limit, breach


@PROPERTY_SETTINGS
@given(histories())
def test_breaches_when_none_reported_every_prefix_is_within_limits_and_peaks_exceed_limits(
    events: list[Event],
) -> None:
    # Act
    result = audit_events(ACCOUNT, events)

    # Assert
    if not result.breaches:
        for end in range(1, len(events) + 1):
            state = fold(events[:end], account=ACCOUNT)
            if state.limits is not None:
                positions = state.open_positions + state.pending_count
                assert positions <= state.limits.max_open_positions
                assert state.exposure <= state.limits.max_exposure
                if state.limits.max_underlying_exposure is not None:
                    assert highest_underlying(state) <= state.limits.max_underlying_exposure
    for breach in result.breaches:
        assert breach.peak > breach.limit, breach


@PROPERTY_SETTINGS
@given(histories())
def test_breaches_when_any_history_are_ordered_and_never_overlap_within_a_gate(
    events: list[Event],
) -> None:
    # Act
    result = audit_events(ACCOUNT, events)

    # Assert
    ranks = [(breach.first_sequence, GATES.index(breach.gate)) for breach in result.breaches]
    assert ranks == sorted(ranks)
    for gate in GATES:
        breaches = gate_breaches(result, gate)
        for earlier, later in itertools.pairwise(breaches):
            assert earlier.last_sequence is not None, earlier
            assert earlier.first_sequence <= earlier.last_sequence <= later.first_sequence
        for breach in breaches:
            assert (breach.closed_at is None) == (breach.last_sequence is None)
            assert breach.opened_at == events[breach.first_sequence - 1].occurred_at


@PROPERTY_SETTINGS
@given(histories(), st.data())
def test_breach_finder_when_fed_in_two_chunks_or_one_by_one_equals_one_pass(
    events: list[Event], data: st.DataObject
) -> None:
    # Arrange
    split = data.draw(st.integers(min_value=0, max_value=len(events)))
    chunked = BreachFinder(ACCOUNT)
    single = BreachFinder(ACCOUNT)

    # Act
    chunked.feed_many(events[:split])
    chunked.feed_many(events[split:])
    for event in events:
        single.feed(event)

    # Assert
    once = audit_events(ACCOUNT, events)
    assert chunked.finish() == once
    assert single.finish() == once
    assert chunked.state == fold(events, account=ACCOUNT)


@PROPERTY_SETTINGS
@given(histories(), st.integers(min_value=SAMPLES_MAX_MIN, max_value=8))
def test_samples_when_any_history_stay_within_bound_and_keep_the_peaks(
    events: list[Event], samples_max: int
) -> None:
    # Arrange
    finder = BreachFinder(ACCOUNT, samples_max=samples_max)

    # Act
    finder.feed_many(events)
    result = finder.finish()

    # Assert
    assert len(result.samples) <= samples_max
    assert len(result.samples) == min(len(events), len(result.samples))
    sequences = [sample.sequence for sample in result.samples]
    assert sequences == sorted(set(sequences))
    assert sequences[-1] == len(events)
    assert max(sample.positions for sample in result.samples) == result.peak_open_positions
    assert max(sample.exposure for sample in result.samples) == result.peak_exposure
    if len(events) <= samples_max:
        assert sequences == list(range(1, len(events) + 1))


@PROPERTY_SETTINGS
@given(histories(), st.data())
def test_breaches_when_window_starts_mid_history_only_clip_intervals(
    events: list[Event], data: st.DataObject
) -> None:
    # Arrange: the window opens at some event's time; with times never going back, its first
    # event is the first one stamped at or after that time.
    window_from = events[data.draw(st.integers(min_value=0, max_value=len(events) - 1))].occurred_at
    start = next(event.sequence for event in events if event.occurred_at >= window_from)
    assert start is not None
    whole = audit_events(ACCOUNT, events)

    # Act
    clipped = audit_events(ACCOUNT, events, window_from=window_from)

    # Assert
    assert clipped.events == len(events) - start + 1
    assert [b for b in clipped.breaches if b.first_sequence > start] == [
        b for b in whole.breaches if b.first_sequence > start
    ]
    for breach in clipped.breaches:
        assert breach.first_sequence >= start
        if breach.first_sequence == start:
            spanning = [
                b
                for b in gate_breaches(whole, breach.gate)
                if b.first_sequence <= start
                and (b.last_sequence is None or b.last_sequence >= start)
            ]
            assert len(spanning) == 1, (breach, whole.breaches)
            assert breach.last_sequence == spanning[0].last_sequence
            assert breach.peak <= spanning[0].peak


# Gates whose figures depend on when events occurred, not only on their order.
TIMED_GATES = frozenset({"daily_loss_limit", "max_order_rate", "duplicate_order"})


def _restamped(events: list[Event], times: list[datetime]) -> list[Event]:
    return [event.model_copy(update={"occurred_at": at})
            for event, at in zip(events, times, strict=True)]


@PROPERTY_SETTINGS
@given(histories(), st.randoms(use_true_random=False))
def test_audit_when_times_run_backwards_never_raises_and_finds_the_same_breaches(
    events: list[Event], shuffler: Any,
) -> None:
    """Late fills and back-dated imports: occurred_at need not follow the sequence."""
    # Arrange
    times = [event.occurred_at for event in events]
    shuffler.shuffle(times)
    shuffled = _restamped(events, times)

    # Act
    in_order = audit_events(ACCOUNT, events)
    backwards = audit_events(ACCOUNT, shuffled)
    rows = terminal_chart(backwards.samples)

    # Assert: what does not depend on the clock is what it was, and the chart draws.
    def timeless(audit: AccountAudit) -> list[tuple[object, ...]]:
        return [(b.gate, b.limit, b.peak, b.first_sequence, b.last_sequence)
                for b in audit.breaches if b.gate not in TIMED_GATES]

    assert timeless(backwards) == timeless(in_order)
    assert (backwards.peak_open_positions, backwards.peak_exposure) == (
        in_order.peak_open_positions, in_order.peak_exposure)
    assert len(rows) == (2 if backwards.samples else 0)
    assert audit_document([backwards])["accounts"][0]["events"] == len(events)


@pytest.mark.parametrize("history", [[], ["limits"], ["fill"], ["signal"]])
def test_audit_when_an_account_has_one_event_or_none_reports_and_charts(
        history: list[str]) -> None:
    # Arrange
    events = []
    for index, kind in enumerate(history):
        sample: dict[str, tuple[str, dict[str, Any]]] = {
            "limits": ("LimitsSet", {"max_open_positions": 1, "max_exposure": "100"}),
            "fill": ("OrderFilled", {"fill_id": "X-1", "position_id": "P-0", "symbol": "S",
                                     "instrument": "equity", "side": "long", "quantity": "1",
                                     "price": "1000"}),
            "signal": ("SignalEvaluated", signal_evaluated_data(ACCOUNT, 1, START,
                                                                 allowed=False)),
        }
        event_type, data = sample[kind]
        events.append(stored(event_type, data, START, index + 1))

    # Act
    result = audit_events(ACCOUNT, events)

    # Assert: no limits ever set is no breach, not a crash.
    assert result.breaches == []
    assert result.events == len(events)
    assert len(terminal_chart(result.samples)) in (0, 2)


# --- Decided histories: every intent is one the gates allowed ------------------------------------

# Two underlyings, two strikes each: exposure on one underlying adds up across its symbols.
DECIDED_SYMBOLS = ["MSFT 260220P00400000", "MSFT 260320C00420000", "AMD 260220P00110000",
                   "AMD 260320C00120000"]
# Mostly a burst, seconds apart; now and then around a minute or longer.
DECIDED_STEPS = [timedelta(seconds=seconds) for seconds in (0, 0, 1, 1, 5, 20, 30, 59, 60, 61, 300)]
BURST_LENGTH_MIN = 5
BURST_LENGTH_MAX = 40
INTENT_TTL = timedelta(minutes=2)
# The limits these histories are about, each often set, sometimes not.
NEW_GATES = ("max_order_rate", "max_underlying_exposure", "duplicate_order")


@st.composite
def decided_limits(draw: st.DrawFn) -> dict[str, Any]:
    """Draw a LimitsSet's data: loose older limits, and the new ones mostly set."""
    data: dict[str, Any] = {
        "max_open_positions": draw(st.integers(min_value=1, max_value=30)),
        "max_exposure": text(draw(st.sampled_from([Decimal("5000"), Decimal("100000")]))),
    }
    if draw(st.integers(min_value=0, max_value=3)) > 0:
        data["max_orders_per_minute"] = draw(st.integers(min_value=1, max_value=4))
    if draw(st.integers(min_value=0, max_value=3)) > 0:
        # A few orders' worth (an order is $100 to $1,800): often binding, rarely blocking all.
        data["max_underlying_exposure"] = text(draw(st.one_of(
            st.sampled_from([Decimal("1000"), Decimal("2500"), Decimal("4000")]),
            st.decimals(places=2, min_value=Decimal("500"), max_value=Decimal("8000"),
                        allow_nan=False))))
    if draw(st.integers(min_value=0, max_value=3)) > 0:
        data["duplicate_window_s"] = draw(duplicate_windows)
    return data


# A signal (as its JSON fields, less ids and time); "repeat", the last signal sent again (a
# strategy's retry: a duplicate if it was issued); what the broker does to the oldest pending
# intent; or a close of the oldest open position.
signal_fields = st.fixed_dictionaries({
    "symbol": st.sampled_from(DECIDED_SYMBOLS),
    "instrument": st.just("option"),
    "side": st.sampled_from(["long", "short"]),
    "quantity": st.sampled_from(["1", "2", "3"]),
    "limit_price": st.sampled_from(["1.00", "2.50", "6.00"]),
    "multiplier": st.just("100"),
})
actions = st.one_of(signal_fields, signal_fields, signal_fields, st.just("repeat"),
                    st.sampled_from(["fill", "close", "IntentRejected", "IntentCancelled",
                                     "IntentExpired"]))
bursts = st.lists(st.tuples(st.sampled_from(DECIDED_STEPS), actions),
                  min_size=BURST_LENGTH_MIN, max_size=BURST_LENGTH_MAX)


class DecidedHistory:
    """A stored history built as the dispatcher, broker and position manager build one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.state = initial_state(ACCOUNT)
        self.allowed = 0
        self.codes: set[str] = set()

    def append(self, event_type: str, data: Mapping[str, Any], at: datetime) -> None:
        event = stored(event_type, data, at, len(self.events) + 1)
        self.events.append(event)
        self.state = apply(self.state, event)

    def decide(self, fields: Mapping[str, Any], index: int, at: datetime) -> None:
        """Evaluate a signal on the state folded so far at `at`, and issue it if allowed."""
        signal = decode_signal(json.dumps({
            "signal_id": f"S-{index}", "account": ACCOUNT,
            "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), **fields}))
        state = self.state
        decision = evaluate(state, signal, at, Freshness(
            head=state.sequence, state_sequence=state.sequence, fold_bound=0))
        self.append("SignalEvaluated",
                    signal_evaluated_data(ACCOUNT, index, at, allowed=decision.allowed), at)
        self.codes.add(decision.code or "allowed")
        if decision.allowed:
            self.allowed += 1
            self.append("IntentIssued", intent_data(state, signal, f"I-{index}", at), at)

    def act(self, action: str, at: datetime) -> None:
        """Fill (at its limit price) or release the oldest pending intent, or close a position."""
        if action == "close":
            if self.state.positions:
                position_id = next(iter(self.state.positions))
                self.append("PositionClosed", {"position_id": position_id, "price": "1.00",
                                               "close_id": f"C-{len(self.events)}"}, at)
            return
        if not self.state.pending:
            return
        intent = min(self.state.pending.values(), key=lambda pending: pending.issued_sequence)
        if action == "fill":
            self.append("OrderFilled", {
                "fill_id": f"X-{intent.intent_id}", "position_id": intent.position_id,
                "symbol": intent.symbol, "instrument": intent.instrument, "side": intent.side,
                "quantity": text(intent.quantity), "price": text(intent.limit_price),
                "multiplier": text(intent.multiplier), "intent_id": intent.intent_id}, at)
        else:
            self.append(action, {"intent_id": intent.intent_id, "reason": "broker"}, at)


def intent_data(state: AccountState, signal: Signal, intent_id: str,
                at: datetime) -> dict[str, Any]:
    """Return the intent's data as the dispatcher issues it for an allowed signal."""
    issued = issued_intent(signal, intent_id, at + INTENT_TTL, reduces(state, signal))
    data: dict[str, Any] = json.loads(issued.model_dump_json(exclude_none=True))
    return data


@PROPERTY_SETTINGS
@given(decided_limits(), bursts)
def test_audit_when_every_intent_allowed_by_the_gates_finds_no_rate_underlying_or_duplicate_breach(
    limits_data: dict[str, Any], burst: list[tuple[timedelta, dict[str, Any] | str]],
) -> None:
    # Arrange: the gates decide each signal on the state folded so far, at the decision's time.
    history = DecidedHistory()
    at = START
    history.append("LimitsSet", limits_data, at)
    last: dict[str, Any] | None = None
    for index, (after, action) in enumerate(burst):
        at += after
        if action == "repeat":
            action = last or {}
        if isinstance(action, str):
            history.act(action, at)
        elif action:
            history.decide(action, index, at)
            last = action
    tally("intents allowed: " + ("5+" if history.allowed >= 5 else str(history.allowed)))
    for code in history.codes:
        tally(f"decided: {code}")

    # Act
    result = audit_events(ACCOUNT, history.events)

    # Assert
    assert [breach for breach in result.breaches if breach.gate in NEW_GATES] == []


def test_audit_when_gates_allow_a_reducing_intent_finds_no_underlying_breach() -> None:
    # Arrange: 900 open on MSFT against 1,000; a signal reducing it by 2 (300) is allowed.
    history = DecidedHistory()
    history.append("LimitsSet", {"max_open_positions": 10, "max_exposure": "100000",
                                 "max_underlying_exposure": "1000"}, START)
    opening = {"symbol": DECIDED_SYMBOLS[0], "instrument": "option", "side": "long",
               "quantity": "6", "limit_price": "1.50", "multiplier": "100"}
    history.decide(opening, 1, START)
    history.act("fill", START + timedelta(seconds=5))
    position_id = next(iter(history.state.positions))
    history.decide({**opening, "side": "short", "quantity": "2", "position_id": position_id}, 2,
                   START + timedelta(seconds=10))
    assert history.allowed == 2

    # Act
    result = audit_events(ACCOUNT, history.events)

    # Assert
    assert [breach for breach in result.breaches if breach.gate in NEW_GATES] == []


# --- Discrepancies: what projections.executions finds, event by event ----------------------------

FATES: dict[type, IntentFate] = {IntentExpiredEvent: "expired", IntentRejectedEvent: "rejected",
                                 IntentCancelledEvent: "cancelled"}
# What the audit lists of a discrepancy, but the execution's ids (checked apart).
Found = tuple[str, int, str, str, str | None, Decimal | None, Decimal | None, str, bool]


def ingested(events: list[Event], data: st.DataObject) -> tuple[list[Event], list[Found]]:
    """Return the history stored as ingest stores it, and the discrepancies it holds, in order.

    Folds with the public `apply`; before each execution asks `discrepancies` (the fates: the
    first end on record of each intent ended before it), and after it stores a DiscrepancyFound
    for some of what it found, drawn.
    """
    state = initial_state(ACCOUNT)
    fates: dict[str, IntentFate] = {}
    stored_events: list[Event] = []
    expected: list[Found] = []

    def store(event: Event) -> int:
        nonlocal state
        sequence = len(stored_events) + 1
        stored_events.append(with_ledger_fields(event, sequence=sequence,
                                                recorded_at=RECORDED_AT,
                                                global_position=sequence))
        state = apply(state, stored_events[-1])
        return sequence

    for event in events:
        found = []
        if isinstance(event, OrderFilledEvent | PositionClosedEvent):
            found = discrepancies(state.positions, state.pending, fates, event)
        elif isinstance(event, IntentExpiredEvent | IntentRejectedEvent | IntentCancelledEvent):
            fates.setdefault(event.data.intent_id, FATES[type(event)])
        sequence = store(event)
        for discrepancy in found:
            tally(discrepancy.kind)
            recorded = data.draw(st.booleans())
            expected.append((discrepancy.kind, sequence, discrepancy.execution,
                             discrepancy.position_id, discrepancy.intent_id,
                             discrepancy.reported, discrepancy.ledger, discrepancy.reason,
                             recorded))
            if recorded:
                store(build_event(ACCOUNT, event.occurred_at, discrepancy))
    return stored_events, expected


def listed(result: AccountAudit, events: list[Event]) -> list[Found]:
    for discrepancy in result.discrepancies:
        execution = events[discrepancy.sequence - 1]
        assert discrepancy.occurred_at == execution.occurred_at
        if isinstance(execution, OrderFilledEvent):
            assert (discrepancy.fill_id, discrepancy.close_id) == (execution.data.fill_id, None)
        else:
            assert isinstance(execution, PositionClosedEvent)
            assert (discrepancy.fill_id, discrepancy.close_id) == (None, execution.data.close_id)
    return [(d.kind, d.sequence, d.execution, d.position_id, d.intent_id, d.reported, d.ledger,
             d.reason, d.recorded) for d in result.discrepancies]


@PROPERTY_SETTINGS
@given(histories(), st.data())
def test_discrepancies_when_any_history_are_those_executions_finds_event_by_event(
    events: list[Event], data: st.DataObject
) -> None:
    # Arrange
    stored_events, expected = ingested(events, data)

    # Act
    result = audit_events(ACCOUNT, stored_events)

    # Assert
    assert listed(result, stored_events) == expected
    assert result.discrepancies_omitted == 0


@PROPERTY_SETTINGS
@given(histories(), st.data())
def test_discrepancies_when_window_starts_mid_history_are_those_of_its_executions(
    events: list[Event], data: st.DataObject
) -> None:
    # Arrange: times never go back, so the window's events are those from its first one on.
    stored_events, expected = ingested(events, data)
    window_from = data.draw(st.sampled_from(stored_events)).occurred_at
    start = next(sequence for sequence, event in enumerate(stored_events, start=1)
                 if event.occurred_at >= window_from)

    # Act
    result = audit_events(ACCOUNT, stored_events, window_from=window_from)

    # Assert
    assert listed(result, stored_events) == [found for found in expected if found[1] >= start]
