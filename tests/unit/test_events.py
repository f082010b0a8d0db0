"""Goal: the event contract refuses bad input loudly and names the field and value, keeps money
exact, keeps times in UTC, and derives event ids deterministically from natural keys.

Method: decode JSON shaped like docs/design.md's examples, change one thing at a time, and check the
decoded model, the encoded bytes or the one-line InvalidEvent message. No I/O.
"""

from __future__ import annotations

import decimal
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from ledger.errors import InvalidAccountName, InvalidEvent
from ledger.events import (
    ACCOUNT_PATTERN,
    EVENT_TYPES,
    MISSING,
    DiscrepancyFoundEvent,
    IntentCancelledEvent,
    IntentExpiredEvent,
    IntentIssuedEvent,
    IntentRejectedEvent,
    LimitsSetEvent,
    OrderFilled,
    OrderFilledEvent,
    PositionClosedEvent,
    PositionsReconciledEvent,
    ReconciliationFailedEvent,
    SignalEvaluatedEvent,
    TradingHaltedEvent,
    TradingReducedEvent,
    TradingResumedEvent,
    build_event,
    decode_event,
    decode_signal,
    derive_event_id,
    encode_event,
    encode_signal,
    natural_key,
    notional,
    validate_account_name,
    with_ledger_fields,
)

EVENT_ID = "7b1c2a3e-0000-4000-8000-000000000001"
SIGNAL = {
    "signal_id": "S-1",
    "account": "large",
    "occurred_at": "2026-02-03T17:29:00Z",
    "symbol": "MSFT 260220P00400000",
    "instrument": "option",
    "side": "long",
    "quantity": "12",
    "limit_price": "6.10",
    "multiplier": "100",
}
DATA_BY_TYPE: dict[str, dict[str, Any]] = {
    "LimitsSet": {
        "max_open_positions": 5,
        "max_exposure": "10000",
        "max_order_notional": "2500.00",
        "daily_loss_limit": None,
    },
    "OrderFilled": {
        "fill_id": "X-1001",
        "position_id": "P-1",
        "symbol": "MSFT 260220P00400000",
        "instrument": "option",
        "side": "long",
        "quantity": "12",
        "price": "6.00",
        "multiplier": "100",
    },
    "PositionClosed": {"close_id": "C-1", "position_id": "P-1", "price": "7.25",
                       "reason": "take-profit"},
    "SignalEvaluated": {
        "signal_id": "S-1",
        "signal": SIGNAL,
        "allowed": False,
        "gates": [
            {
                "gate": "max_open_positions",
                "passed": False,
                "value": "6",
                "limit": "5",
                "reason": "5 open + 1 pending would exceed 5",
            },
            {"gate": "not_halted", "passed": True, "value": None, "limit": None, "reason": "ok"},
        ],
        "as_of_sequence": 41,
    },
    "IntentIssued": {
        "intent_id": "I-1",
        "signal_id": "S-1",
        "position_id": "P-1",
        "symbol": "MSFT 260220P00400000",
        "instrument": "option",
        "side": "long",
        "quantity": "12",
        "limit_price": "6.10",
        "multiplier": "100",
        "expires_at": "2026-02-03T17:34:04Z",
    },
    "IntentRejected": {"intent_id": "I-1", "reason": "insufficient buying power"},
    "IntentExpired": {"intent_id": "I-1", "reason": "not filled within 300 s"},
    "TradingHalted": {"reason": "manual kill switch"},
    "TradingResumed": {"reason": None},
    "TradingReduced": {"reason": "reconciliation failed"},
    "IntentCancelled": {"intent_id": "I-1", "reason": "trading halted"},
    "PositionsReconciled": {"as_of": "2026-02-03T17:30:00Z", "head": 41},
    "ReconciliationFailed": {
        "as_of": "2026-02-03T17:30:00Z", "head": 41,
        "differences": [{"symbol": "MSFT 260220P00400000", "side": "long", "broker": "12",
                         "ledger": "0"}],
    },
    "DiscrepancyFound": {
        "kind": "close_beyond_open", "execution": 'PositionClosed:close_id="C-9"',
        "position_id": "P-1", "reported": "50", "ledger": "10",
        "reason": "close C-9 of 50 on position P-1, where 10 are open",
    },
}
CLASS_BY_TYPE = {
    "LimitsSet": LimitsSetEvent,
    "OrderFilled": OrderFilledEvent,
    "PositionClosed": PositionClosedEvent,
    "SignalEvaluated": SignalEvaluatedEvent,
    "IntentIssued": IntentIssuedEvent,
    "IntentRejected": IntentRejectedEvent,
    "IntentExpired": IntentExpiredEvent,
    "TradingHalted": TradingHaltedEvent,
    "TradingReduced": TradingReducedEvent,
    "IntentCancelled": IntentCancelledEvent,
    "TradingResumed": TradingResumedEvent,
    "PositionsReconciled": PositionsReconciledEvent,
    "ReconciliationFailed": ReconciliationFailedEvent,
    "DiscrepancyFound": DiscrepancyFoundEvent,
}


def event_json(event_type: str = "OrderFilled", **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "event_id": EVENT_ID,
        "account": "large",
        "type": event_type,
        "occurred_at": "2026-02-03T17:29:04Z",
        "data": json.loads(json.dumps(DATA_BY_TYPE[event_type])),
    }
    document.update(changes)
    return document


def with_data(event_type: str = "OrderFilled", **changes: Any) -> dict[str, Any]:
    document = event_json(event_type)
    document["data"].update(changes)
    return document


def decode_error(document: dict[str, Any] | str, line: int | None = None) -> InvalidEvent:
    raw = document if isinstance(document, str) else json.dumps(document)
    with pytest.raises(InvalidEvent) as caught:
        decode_event(raw, line=line)
    return caught.value


# --- Decoding each type --------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_decode_event_when_shaped_like_design_returns_its_class(event_type: str) -> None:
    # Arrange
    raw = json.dumps(event_json(event_type)).encode()

    # Act
    event = decode_event(raw)

    # Assert
    assert type(event) is CLASS_BY_TYPE[event_type]
    assert event.type == event_type
    assert event.event_id == UUID(EVENT_ID)
    assert event.account == "large"
    assert event.occurred_at == datetime(2026, 2, 3, 17, 29, 4, tzinfo=UTC)


def test_decode_event_when_order_filled_keeps_decimal_digits() -> None:
    # Arrange
    raw = json.dumps(event_json("OrderFilled"))

    # Act
    event = decode_event(raw)

    # Assert
    assert isinstance(event, OrderFilledEvent)
    assert str(event.data.price) == "6.00"
    assert event.data.quantity == Decimal("12")
    assert event.data.multiplier == Decimal("100")
    assert event.data.intent_id is None
    assert event.data.fees is None


def test_decode_event_when_an_equity_has_no_multiplier_defaults_to_one() -> None:
    # Arrange
    document = with_data(instrument="equity")
    del document["data"]["multiplier"]

    # Act
    event = decode_event(json.dumps(document))

    # Assert
    assert isinstance(event, OrderFilledEvent)
    assert event.data.multiplier == Decimal("1")


@pytest.mark.parametrize("event_type", ["OrderFilled", "IntentIssued"])
def test_decode_event_when_an_option_has_no_multiplier_names_the_field(event_type: str) -> None:
    # Arrange: 3 puts at $6.00 are $1,800, not $18.
    document = event_json(event_type)
    document["data"]["instrument"] = "option"
    del document["data"]["multiplier"]

    # Act
    error = decode_error(document, line=3)

    # Assert
    assert str(error) == ("line 3: data.multiplier: nothing was given: required for an option "
                          "(its notional is quantity x price x multiplier)")
    assert (error.field, error.line) == ("data.multiplier", 3)


def test_decode_signal_when_an_option_has_no_multiplier_names_the_field() -> None:
    # Arrange
    raw = json.dumps({"signal_id": "S-1", "account": "large",
                      "occurred_at": "2026-02-03T17:29:04Z", "symbol": "QCOM 260320P00150000",
                      "instrument": "option", "side": "long", "quantity": "3",
                      "limit_price": "6.00"})

    # Act
    with pytest.raises(InvalidEvent) as caught:
        decode_signal(raw)

    # Assert
    assert str(caught.value).startswith("multiplier: nothing was given: required for an option")


def test_decode_event_when_quantity_is_integer_accepts_it() -> None:
    # Arrange
    document = with_data(quantity=12)

    # Act
    event = decode_event(json.dumps(document))

    # Assert
    assert isinstance(event, OrderFilledEvent)
    assert event.data.quantity == Decimal(12)


def test_decode_event_when_signal_evaluated_keeps_gates_and_signal() -> None:
    # Arrange
    raw = json.dumps(event_json("SignalEvaluated"))

    # Act
    event = decode_event(raw)

    # Assert
    assert isinstance(event, SignalEvaluatedEvent)
    assert event.data.signal.limit_price == Decimal("6.10")
    assert [gate.gate for gate in event.data.gates] == ["max_open_positions", "not_halted"]
    assert event.data.gates[0].value == Decimal("6")
    assert event.data.gates[1].limit is None
    assert event.data.as_of_sequence == 41


def test_decode_event_when_time_has_offset_normalises_to_utc() -> None:
    # Arrange
    document = event_json("OrderFilled", occurred_at="2026-02-03T19:29:04.250+02:00")

    # Act
    event = decode_event(json.dumps(document))

    # Assert
    assert event.occurred_at == datetime(2026, 2, 3, 17, 29, 4, 250000, tzinfo=UTC)
    assert event.occurred_at.tzinfo is UTC


# --- Refusals ------------------------------------------------------------------------------------


def test_decode_event_when_quantity_is_text_names_field_and_value() -> None:
    # Arrange
    document = with_data(quantity="twelve")

    # Act
    error = decode_error(document, line=7)

    # Assert
    assert str(error).startswith("line 7: ")
    assert "data.quantity" in str(error)
    assert "'twelve'" in str(error)
    assert "\n" not in str(error)
    assert error.field == "data.quantity"
    assert error.value == "twelve"
    assert error.line == 7


def test_decode_event_when_no_line_given_has_no_line_prefix() -> None:
    # Arrange
    document = with_data(quantity="twelve")

    # Act
    error = decode_error(document)

    # Assert
    assert str(error) == "data.quantity: 'twelve' is not a decimal"


def test_decode_event_when_price_is_float_refuses_it() -> None:
    # Arrange
    raw = json.dumps(event_json("OrderFilled")).replace('"6.00"', "6.5")

    # Act
    error = decode_error(raw)

    # Assert
    assert str(error) == 'data.price: 6.5 is a float: money is written as a string like "6.50"'


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-inf", "1e3", " 12", "1_000", "12.", ""])
def test_decode_event_when_quantity_is_not_plain_digits_refuses_it(text: str) -> None:
    # Arrange
    document = with_data(quantity=text)

    # Act
    error = decode_error(document)

    # Assert
    assert error.field == "data.quantity"
    assert error.value == text


@pytest.mark.parametrize("quantity", ["0", "-3", "0.000"])
def test_decode_event_when_quantity_is_not_positive_refuses_it(quantity: str) -> None:
    # Arrange
    document = with_data(quantity=quantity)

    # Act
    error = decode_error(document)

    # Assert
    assert str(error) == f"data.quantity: {quantity!r} is not greater than 0"


def test_decode_event_when_fees_are_negative_refuses_them() -> None:
    # Arrange
    document = with_data(fees="-0.65")

    # Act
    error = decode_error(document)

    # Assert
    assert error.field == "data.fees"
    assert "negative" in str(error)


def test_decode_event_when_fees_are_zero_accepts_them() -> None:
    # Arrange
    document = with_data(fees="0.00")

    # Act
    event = decode_event(json.dumps(document))

    # Assert
    assert isinstance(event, OrderFilledEvent)
    assert event.data.fees == Decimal("0")


def test_decode_event_when_decimal_has_too_many_digits_refuses_it() -> None:
    # Arrange
    document = with_data(price="1." + "0" * 40)

    # Act
    error = decode_error(document)

    # Assert
    assert error.field == "data.price"
    assert "digits" in str(error)


def test_decode_event_when_time_is_naive_says_it_has_no_timezone() -> None:
    # Arrange
    document = event_json("OrderFilled", occurred_at="2026-02-03T17:29:04")

    # Act
    error = decode_error(document)

    # Assert
    assert str(error) == "occurred_at: '2026-02-03T17:29:04' has no timezone"


def test_decode_event_when_expiry_is_naive_names_nested_field() -> None:
    # Arrange
    document = with_data("IntentIssued", expires_at="2026-02-03T17:34:04")

    # Act
    error = decode_error(document)

    # Assert
    assert error.field == "data.expires_at"
    assert "has no timezone" in str(error)


def test_decode_event_when_type_is_unknown_lists_the_types() -> None:
    # Arrange
    document = event_json("OrderFilled", type="Foo")

    # Act
    error = decode_error(document)

    # Assert
    assert error.field == "type"
    assert error.value == "Foo"
    assert str(error).startswith("type: 'Foo' is not one of LimitsSet, OrderFilled, ")
    assert all(event_type in str(error) for event_type in EVENT_TYPES)


def test_decode_event_when_type_is_absent_names_type() -> None:
    # Arrange
    document = event_json("OrderFilled")
    del document["type"]

    # Act
    error = decode_error(document)

    # Assert
    assert error.field == "type"
    assert error.value is MISSING


def test_decode_event_when_data_has_extra_field_refuses_it() -> None:
    # Arrange
    document = with_data(colour="red")

    # Act
    error = decode_error(document)

    # Assert
    assert error.field == "data.colour"
    assert error.value == "red"


def test_decode_event_when_envelope_has_extra_field_refuses_it() -> None:
    # Arrange
    document = event_json("OrderFilled", source="broker")

    # Act
    error = decode_error(document)

    # Assert
    assert error.field == "source"


def test_decode_event_when_required_field_is_absent_names_it() -> None:
    # Arrange
    document = event_json("OrderFilled")
    del document["data"]["fill_id"]

    # Act
    error = decode_error(document)

    # Assert
    assert str(error) == "data.fill_id: nothing was given: the field is required"


def test_decode_event_when_path_is_in_a_list_names_the_index() -> None:
    # Arrange
    document = event_json("SignalEvaluated")
    document["data"]["gates"][1]["value"] = "lots"

    # Act
    error = decode_error(document)

    # Assert
    assert error.field == "data.gates[1].value"
    assert "SignalEvaluated" not in error.field


@pytest.mark.parametrize("account", ["Large", "1st", "", "a-b", "x" * 49, "large\n"])
def test_decode_event_when_account_name_is_unsafe_refuses_it(account: str) -> None:
    # Arrange
    document = event_json("OrderFilled", account=account)

    # Act
    error = decode_error(document)

    # Assert
    assert error.field == "account"
    assert error.value == account


def test_decode_event_when_count_is_text_refuses_it() -> None:
    # Arrange
    document = with_data("LimitsSet", max_open_positions="5")

    # Act
    error = decode_error(document)

    # Assert
    assert str(error) == "data.max_open_positions: '5' is not an integer"


def test_decode_event_when_identifier_has_surrounding_space_refuses_it() -> None:
    # Arrange
    document = with_data(fill_id="X-1001 ")

    # Act
    error = decode_error(document)

    # Assert
    assert error.field == "data.fill_id"


def test_decode_event_when_several_fields_are_bad_reports_first_and_counts_rest() -> None:
    # Arrange
    document = with_data(quantity="twelve", price="six")

    # Act
    error = decode_error(document)

    # Assert
    assert str(error) == "data.quantity: 'twelve' is not a decimal (and 1 more)"


def test_decode_event_when_json_is_malformed_names_json_and_shows_excerpt() -> None:
    # Arrange
    raw = '{"event_id": "7b1c", "account": "large", "type": "OrderFilled", "occurred_at": '

    # Act
    error = decode_error(raw, line=3)

    # Assert
    assert str(error).startswith('line 3: json: \'{"event_id": ')
    assert "is not valid JSON" in str(error)
    assert error.field == "json"
    assert len(str(error)) < 200


def test_decode_event_when_json_is_not_an_object_refuses_it() -> None:
    # Arrange
    raw = "[1, 2]"

    # Act
    error = decode_error(raw)

    # Assert
    assert error.field == "event"


# --- Event ids -----------------------------------------------------------------------------------


def test_decode_event_when_event_id_absent_derives_same_id_twice() -> None:
    # Arrange
    document = event_json("OrderFilled")
    del document["event_id"]
    raw = json.dumps(document)

    # Act
    first = decode_event(raw)
    second = decode_event(raw)

    # Assert
    assert first.event_id == second.event_id
    assert first.event_id.version == 5
    assert first.event_id == derive_event_id("large", "OrderFilled", first.data, first.occurred_at)


def test_decode_event_when_fill_id_differs_derives_different_id() -> None:
    # Arrange
    first_document = with_data(fill_id="X-1001")
    second_document = with_data(fill_id="X-1002")
    del first_document["event_id"], second_document["event_id"]

    # Act
    first = decode_event(json.dumps(first_document))
    second = decode_event(json.dumps(second_document))

    # Assert
    assert first.event_id != second.event_id


def test_decode_event_when_fill_repeats_at_another_time_derives_same_id() -> None:
    # Arrange
    first_document = event_json("OrderFilled")
    second_document = event_json("OrderFilled", occurred_at="2026-02-03T17:30:00Z")
    del first_document["event_id"], second_document["event_id"]

    # Act
    first = decode_event(json.dumps(first_document))
    second = decode_event(json.dumps(second_document))

    # Assert
    assert first.event_id == second.event_id


def test_decode_event_when_account_differs_derives_different_id() -> None:
    # Arrange
    first_document = event_json("OrderFilled")
    second_document = event_json("OrderFilled", account="small")
    del first_document["event_id"], second_document["event_id"]

    # Act
    first = decode_event(json.dumps(first_document))
    second = decode_event(json.dumps(second_document))

    # Assert
    assert first.event_id != second.event_id


def test_decode_event_when_close_has_no_id_derives_from_position_time_quantity_and_price(
) -> None:
    # Arrange: two partial closes of one position in one instant are two closes.
    base = with_data("PositionClosed", close_id=None, quantity="2")
    same_instant_in_other_zone = event_json(
        "PositionClosed", occurred_at="2026-02-03T18:29:04+01:00")
    same_instant_in_other_zone["data"].update(close_id=None, quantity="2")
    later = with_data("PositionClosed", close_id=None, quantity="2")
    later["occurred_at"] = "2026-02-03T17:29:05Z"
    other_position = with_data("PositionClosed", close_id=None, quantity="2", position_id="P-2")
    other_price = with_data("PositionClosed", close_id=None, quantity="2", price="9.99")
    other_quantity = with_data("PositionClosed", close_id=None, quantity="3")
    documents = [base, same_instant_in_other_zone, later, other_position, other_price,
                 other_quantity]
    for document in documents:
        del document["event_id"]

    # Act
    ids = [decode_event(json.dumps(document)).event_id for document in documents]

    # Assert
    assert ids[0] == ids[1]
    assert len(set(ids[1:])) == len(ids) - 1


def test_natural_key_when_close_has_an_id_is_the_id_alone() -> None:
    # Arrange
    first = decode_event(json.dumps(with_data("PositionClosed", close_id="C-9", quantity="1")))
    again_later = event_json("PositionClosed", occurred_at="2026-02-03T18:00:00Z")
    again_later["data"].update(close_id="C-9", quantity="1")
    del again_later["event_id"]

    # Act
    key = natural_key(first)

    # Assert
    assert key == 'PositionClosed:close_id="C-9"'
    assert natural_key(decode_event(json.dumps(again_later))) == key


def test_natural_key_when_close_has_no_id_names_position_utc_time_quantity_and_price() -> None:
    # Arrange
    event = decode_event(json.dumps(with_data("PositionClosed", close_id=None)))

    # Act
    key = natural_key(event)

    # Assert
    assert key == ('PositionClosed:position_id="P-1",occurred_at="2026-02-03T17:29:04Z",'
                   'quantity="all",price="7.25"')


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        ("OrderFilled", 'OrderFilled:fill_id="X-1001"'),
        ("SignalEvaluated", 'SignalEvaluated:signal_id="S-1"'),
        ("IntentIssued", 'IntentIssued:intent_id="I-1"'),
        ("IntentRejected", 'IntentRejected:intent_id="I-1"'),
        ("IntentExpired", 'IntentExpired:intent_id="I-1"'),
        ("LimitsSet", 'LimitsSet:occurred_at="2026-02-03T17:29:04Z",data='),
        ("TradingHalted", 'TradingHalted:occurred_at="2026-02-03T17:29:04Z",data='),
        ("TradingResumed", 'TradingResumed:occurred_at="2026-02-03T17:29:04Z",data='),
    ],
)
def test_natural_key_when_type_has_key_returns_it(event_type: str, expected: str) -> None:
    # Arrange
    event = decode_event(json.dumps(event_json(event_type)))

    # Act
    key = natural_key(event)

    # Assert
    if expected.endswith("data="):
        assert key.startswith(expected)
    else:
        assert key == expected


def test_decode_event_when_two_settings_differ_at_one_instant_derives_different_ids() -> None:
    # Arrange
    first = with_data("LimitsSet", max_open_positions=5)
    second = with_data("LimitsSet", max_open_positions=6)
    first.pop("event_id", None)
    second.pop("event_id", None)

    # Act
    ids = [decode_event(json.dumps(doc)).event_id for doc in (first, second, first)]

    # Assert
    assert ids[0] != ids[1]
    assert ids[0] == ids[2]


def test_derive_event_id_when_type_does_not_match_data_raises() -> None:
    # Arrange
    event = decode_event(json.dumps(event_json("OrderFilled")))

    # Act / Assert
    with pytest.raises(ValueError, match="does not match"):
        derive_event_id("large", "PositionClosed", event.data, event.occurred_at)


def test_build_event_when_no_id_given_derives_it() -> None:
    # Arrange
    document = event_json("OrderFilled")
    del document["event_id"]
    decoded = decode_event(json.dumps(document))
    assert isinstance(decoded, OrderFilledEvent)

    # Act
    built = build_event(
        "large", datetime(2026, 2, 3, 18, 29, 4, tzinfo=timezone(timedelta(hours=1))), decoded.data
    )

    # Assert
    assert built == decoded


def test_build_event_when_account_is_unsafe_raises_invalid_event() -> None:
    # Arrange
    data = OrderFilled(
        fill_id="X-1",
        position_id="P-1",
        symbol="AAPL",
        instrument="equity",
        side="long",
        quantity=Decimal("1"),
        price=Decimal("1"),
    )

    # Act / Assert
    with pytest.raises(InvalidEvent, match="account: 'Large'"):
        build_event("Large", datetime(2026, 2, 3, tzinfo=UTC), data)


# --- Ledger fields -------------------------------------------------------------------------------


def test_decode_event_when_ledger_fields_present_accepts_them() -> None:
    # Arrange
    document = event_json(
        "OrderFilled", sequence=42, recorded_at="2026-02-03T17:29:05.123456Z", global_position=9001
    )

    # Act
    event = decode_event(json.dumps(document))

    # Assert
    assert event.sequence == 42
    assert event.recorded_at == datetime(2026, 2, 3, 17, 29, 5, 123456, tzinfo=UTC)
    assert event.global_position == 9001


def test_natural_key_when_ledger_fields_differ_stays_the_same() -> None:
    # Arrange
    bare = decode_event(json.dumps(event_json("OrderFilled")))
    stored = decode_event(
        json.dumps(event_json("OrderFilled", sequence=3, recorded_at="2026-02-04T00:00:00Z"))
    )

    # Act
    keys = (natural_key(bare), natural_key(stored))

    # Assert
    assert keys[0] == keys[1]


def test_with_ledger_fields_when_given_returns_copy_with_them() -> None:
    # Arrange
    event = decode_event(json.dumps(event_json("OrderFilled")))
    recorded_at = datetime(2026, 2, 3, 18, 29, 5, tzinfo=timezone(timedelta(hours=1)))

    # Act
    stored = with_ledger_fields(event, sequence=1, recorded_at=recorded_at, global_position=7)

    # Assert
    assert (stored.sequence, stored.global_position) == (1, 7)
    assert stored.recorded_at == recorded_at
    assert stored.recorded_at is not None
    assert stored.recorded_at.tzinfo is UTC
    assert (
        stored.model_copy(update={"sequence": None, "recorded_at": None, "global_position": None})
        == event
    )
    assert event.sequence is None


def test_with_ledger_fields_when_sequence_is_zero_raises_invalid_event() -> None:
    # Arrange
    event = decode_event(json.dumps(event_json("OrderFilled")))

    # Act / Assert
    with pytest.raises(InvalidEvent, match="sequence: 0"):
        with_ledger_fields(event, 0, datetime(2026, 2, 3, tzinfo=UTC), 1)


# --- Encoding ------------------------------------------------------------------------------------


def test_encode_event_when_fresh_is_compact_with_string_decimals_and_z_times() -> None:
    # Arrange
    event = decode_event(json.dumps(event_json("OrderFilled")))

    # Act
    encoded = encode_event(event)

    # Assert
    assert b" " not in encoded.replace(b"MSFT 260220", b"")
    assert b'"price":"6.00"' in encoded
    assert b'"quantity":"12"' in encoded
    assert b'"occurred_at":"2026-02-03T17:29:04Z"' in encoded
    assert b'"intent_id":null' in encoded
    assert b"sequence" not in encoded
    assert b"recorded_at" not in encoded
    assert b"global_position" not in encoded


def test_encode_event_when_stored_includes_ledger_fields() -> None:
    # Arrange
    event = with_ledger_fields(
        decode_event(json.dumps(event_json("OrderFilled"))),
        sequence=5,
        recorded_at=datetime(2026, 2, 3, 17, 29, 5, 10, tzinfo=UTC),
        global_position=12,
    )

    # Act
    encoded = json.loads(encode_event(event))

    # Assert
    assert encoded["sequence"] == 5
    assert encoded["recorded_at"] == "2026-02-03T17:29:05.000010Z"
    assert encoded["global_position"] == 12


def test_encode_event_when_decoded_again_equals_original() -> None:
    # Arrange
    event = decode_event(json.dumps(event_json("SignalEvaluated")))

    # Act
    again = decode_event(encode_event(event))

    # Assert
    assert again == event
    assert repr(again) == repr(event)


# --- Signals -------------------------------------------------------------------------------------


def test_decode_signal_when_valid_computes_notional() -> None:
    # Arrange
    raw = json.dumps(SIGNAL)

    # Act
    signal = decode_signal(raw)

    # Assert
    assert signal.notional == Decimal("7320.00")
    assert json.loads(encode_signal(signal)) == SIGNAL


def test_decode_signal_when_limit_price_is_float_names_field_and_line() -> None:
    # Arrange
    raw = json.dumps({**SIGNAL, "limit_price": 6.1})

    # Act
    with pytest.raises(InvalidEvent) as caught:
        decode_signal(raw, line=2)

    # Assert
    assert str(caught.value).startswith("line 2: limit_price: 6.1 is a float")


def test_decode_signal_when_account_is_absent_names_it() -> None:
    # Arrange
    raw = json.dumps({key: value for key, value in SIGNAL.items() if key != "account"})

    # Act
    with pytest.raises(InvalidEvent) as caught:
        decode_signal(raw)

    # Assert
    assert caught.value.field == "account"


# --- Helpers -------------------------------------------------------------------------------------


def test_notional_when_quantity_is_negative_uses_its_magnitude() -> None:
    # Arrange
    quantity, price, multiplier = Decimal("-3"), Decimal("6.00"), Decimal("100")

    # Act
    result = notional(quantity, price, multiplier)

    # Assert
    assert result == Decimal("1800")
    assert str(result) == "1800.00"


@pytest.mark.parametrize("name", ["large", "a", "acct_42", "x" * 48])
def test_validate_account_name_when_safe_returns_it(name: str) -> None:
    # Arrange / Act
    result = validate_account_name(name)

    # Assert
    assert result == name


@pytest.mark.parametrize("name", ["Large", "_a", "9a", "a b", "a-b", "x" * 49, "a\n", "ä"])
def test_validate_account_name_when_unsafe_raises(name: str) -> None:
    # Arrange / Act
    with pytest.raises(InvalidAccountName) as caught:
        validate_account_name(name)

    # Assert
    assert caught.value.name == name
    assert caught.value.pattern == ACCOUNT_PATTERN


def test_decimal_context_when_float_is_compared_with_decimal_raises() -> None:
    # Arrange
    price = Decimal("6.00")

    # Act / Assert
    with pytest.raises(decimal.FloatOperation):
        _ = price < 6.5


def test_decimal_context_when_decimal_is_built_from_float_raises() -> None:
    # Arrange
    price = 6.5

    # Act / Assert
    with pytest.raises(decimal.FloatOperation):
        Decimal(price)
