"""Goal: every event and signal survives its JSON round trip exactly: the same decimals with the
same exponent ("6.00" stays "6.00"), the same instants, always in UTC, and the same derived ids.

Method: hypothesis builds events of every type from decimals of varied scale and aware times in
several offsets; each is encoded, decoded and encoded again, and compared by value and by repr
(Decimal equality ignores the exponent, repr does not).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from ledger.events import (
    EVENT_TYPES,
    Event,
    EventData,
    GateResult,
    IntentExpired,
    IntentIssued,
    IntentRejected,
    LimitsSet,
    OrderFilled,
    PositionClosed,
    Signal,
    SignalEvaluated,
    TradingHalted,
    TradingResumed,
    build_event,
    decode_event,
    decode_signal,
    derive_event_id,
    encode_event,
    encode_signal,
    natural_key,
    with_ledger_fields,
)

ZONES = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=2)),
        timezone(timedelta(hours=-5)),
        timezone(timedelta(hours=5, minutes=30)),
        timezone(timedelta(hours=-9, minutes=-30)),
    ]
)
times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1), timezones=ZONES
)
identifiers = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"),
    min_size=1,
    max_size=40,
).filter(lambda text: text == text.strip() and text != "")
texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"),
    max_size=80,
)
accounts = st.from_regex(r"[a-z][a-z0-9_]{0,47}", fullmatch=True)
instruments = st.sampled_from(["option", "equity"])
sides = st.sampled_from(["long", "short"])


def decimals(minimum: str, maximum: str) -> st.SearchStrategy[Decimal]:
    # Varying `places` varies the exponent, so "6", "6.0" and "6.00" are all tried.
    return st.integers(min_value=0, max_value=6).flatmap(
        lambda places: st.decimals(
            min_value=Decimal(minimum),
            max_value=Decimal(maximum),
            places=places,
            allow_nan=False,
            allow_infinity=False,
        )
    )


# Up to each bound of the contract (docs/events.md), the largest value included.
positive = decimals("0.000001", "999999999.999999").filter(lambda number: number > 0)
multipliers = decimals("0.000001", "999999.999999").filter(lambda number: number > 0)
non_negative = decimals("0", "999999999999999.999999")
signed = decimals("-1000000000", "1000000000")

signals = st.builds(
    Signal,
    signal_id=identifiers,
    account=accounts,
    occurred_at=times,
    symbol=identifiers,
    instrument=instruments,
    side=sides,
    quantity=positive,
    limit_price=positive,
    multiplier=multipliers,
)
gate_results = st.builds(
    GateResult,
    gate=identifiers,
    passed=st.booleans(),
    value=st.none() | signed,
    limit=st.none() | signed,
    reason=texts,
)
payloads: st.SearchStrategy[EventData] = st.one_of(
    st.builds(
        LimitsSet,
        max_open_positions=st.integers(min_value=0, max_value=1_000_000),
        max_exposure=non_negative,
        max_order_notional=st.none() | non_negative,
        daily_loss_limit=st.none() | non_negative,
    ),
    st.builds(
        OrderFilled,
        fill_id=identifiers,
        position_id=identifiers,
        symbol=identifiers,
        instrument=instruments,
        side=sides,
        quantity=positive,
        price=positive,
        multiplier=multipliers,
        intent_id=st.none() | identifiers,
        fees=st.none() | non_negative,
    ),
    st.builds(
        PositionClosed,
        close_id=st.none() | identifiers,
        position_id=identifiers,
        price=positive,
        quantity=st.none() | positive,
        reason=st.none() | texts,
    ),
    st.builds(
        SignalEvaluated,
        signal_id=identifiers,
        signal=signals,
        allowed=st.booleans(),
        gates=st.lists(gate_results, max_size=5).map(tuple),
        as_of_sequence=st.integers(min_value=0, max_value=10**12),
    ),
    st.builds(
        IntentIssued,
        intent_id=identifiers,
        signal_id=identifiers,
        position_id=identifiers,
        symbol=identifiers,
        instrument=instruments,
        side=sides,
        quantity=positive,
        limit_price=positive,
        multiplier=multipliers,
        expires_at=times,
    ),
    st.builds(IntentRejected, intent_id=identifiers, reason=texts),
    st.builds(IntentExpired, intent_id=identifiers, reason=texts),
    st.builds(TradingHalted, reason=texts),
    st.builds(TradingResumed, reason=st.none() | texts),
)


@st.composite
def events(draw: st.DrawFn) -> Event:
    event = build_event(draw(accounts), draw(times), draw(payloads), draw(st.none() | st.uuids()))
    if draw(st.booleans()):
        event = with_ledger_fields(
            event,
            sequence=draw(st.integers(min_value=1, max_value=10**12)),
            recorded_at=draw(times),
            global_position=draw(st.integers(min_value=0, max_value=10**15)),
        )
    return event


def times_of(event: Event) -> list[datetime]:
    found = [event.occurred_at]
    if event.recorded_at is not None:
        found.append(event.recorded_at)
    if isinstance(event.data, IntentIssued):
        found.append(event.data.expires_at)
    if isinstance(event.data, SignalEvaluated):
        found.append(event.data.signal.occurred_at)
    return found


@given(events())
def test_decode_event_when_encoded_returns_the_same_event_exactly(event: Event) -> None:
    # Arrange
    encoded = encode_event(event)

    # Act
    decoded = decode_event(encoded)

    # Assert
    assert decoded == event
    assert repr(decoded) == repr(event)


@given(events())
def test_encode_event_when_decoded_and_encoded_again_is_byte_identical(event: Event) -> None:
    # Arrange
    encoded = encode_event(event)

    # Act
    again = encode_event(decode_event(encoded))

    # Assert
    assert again == encoded


@given(events())
def test_decode_event_when_encoded_gives_times_in_utc(event: Event) -> None:
    # Arrange
    encoded = encode_event(event)

    # Act
    decoded = decode_event(encoded)

    # Assert
    for moment in times_of(decoded):
        assert moment.tzinfo is UTC
    assert json.loads(encoded)["occurred_at"].endswith("Z")


@given(events())
def test_decode_event_when_encoded_keeps_decimals_as_strings(event: Event) -> None:
    # Arrange / Act
    document = json.loads(encode_event(event))

    # Assert
    data = document["data"]
    for name, value in data.items():
        if isinstance(getattr(event.data, name), Decimal):
            assert isinstance(value, str)
            assert Decimal(value).as_tuple() == getattr(event.data, name).as_tuple()


@given(events())
def test_derive_event_id_when_repeated_is_deterministic(event: Event) -> None:
    # Arrange
    copy = decode_event(encode_event(event))

    # Act
    first = derive_event_id(event.account, event.type, event.data, event.occurred_at)
    second = derive_event_id(copy.account, copy.type, copy.data, copy.occurred_at)

    # Assert
    assert first == second
    assert natural_key(event) == natural_key(copy)
    assert event.type in EVENT_TYPES


@given(events())
def test_decode_event_when_event_id_absent_derives_it_from_natural_key(event: Event) -> None:
    # Arrange
    document = json.loads(encode_event(event))
    del document["event_id"]
    raw = json.dumps(document)

    # Act
    first = decode_event(raw)
    second = decode_event(raw)

    # Assert
    expected = derive_event_id(event.account, event.type, event.data, event.occurred_at)
    assert first.event_id == expected
    assert second.event_id == expected
    assert first.model_copy(update={"event_id": event.event_id}) == event


@given(signals)
def test_decode_signal_when_encoded_returns_the_same_signal_exactly(signal: Signal) -> None:
    # Arrange
    encoded = encode_signal(signal)

    # Act
    decoded = decode_signal(encoded)

    # Assert
    assert decoded == signal
    assert repr(decoded) == repr(signal)
    assert encode_signal(decoded) == encoded
    assert decoded.occurred_at.tzinfo is UTC
