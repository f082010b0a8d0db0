"""Goal: `positions_document` renders an account state as exactly the `positions --json` shape of
docs/design.md, with decimals as strings, money rounded to cents (half-even) only at this edge, and
lists in a stable order.

Method: build states by hand (and one through the fold from JSON events), render them, and
compare with literal documents. Arrange/Act/Assert, no I/O.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

from ledger.events import Side, decode_event, with_ledger_fields
from projections.fold import (
    AccountState,
    Limits,
    PendingIntent,
    Position,
    fold,
    initial_state,
)
from projections.view import positions_document

ACCOUNT = "large"
OPENED_AT = datetime(2026, 2, 3, 17, 29, 4, tzinfo=UTC)
EXPIRES_AT = datetime(2026, 2, 3, 17, 34, 4, tzinfo=UTC)


def held(
    position_id: str,
    *,
    quantity: str = "12",
    average_price: str = "6.00",
    multiplier: str = "100",
    symbol: str = "MSFT 260220P00400000",
    side: Side = "long",
) -> Position:
    return Position(
        position_id=position_id,
        symbol=symbol,
        instrument="option",
        side=side,
        quantity=Decimal(quantity),
        average_price=Decimal(average_price),
        multiplier=Decimal(multiplier),
        realized_pnl=Decimal("0"),
        opened_at=OPENED_AT,
    )


def reserved(
    intent_id: str, *, quantity: str = "3", limit_price: str = "6.00", multiplier: str = "100"
) -> PendingIntent:
    return PendingIntent(
        intent_id=intent_id,
        signal_id=f"S-{intent_id}",
        position_id=f"P-{intent_id}",
        symbol="AMD 260220P00110000",
        instrument="option",
        side="long",
        quantity=Decimal(quantity),
        limit_price=Decimal(limit_price),
        multiplier=Decimal(multiplier),
        expires_at=EXPIRES_AT,
        issued_sequence=40,
    )


def state_of(
    positions: list[Position],
    intents: list[PendingIntent] | None = None,
    *,
    limits: Limits | None = None,
    halted: bool = False,
    sequence: int = 42,
) -> AccountState:
    return AccountState(
        account=ACCOUNT,
        sequence=sequence,
        positions={position.position_id: position for position in positions},
        pending={intent.intent_id: intent for intent in intents or []},
        limits=limits,
        halted=halted,
        halt_reason="breach" if halted else None,
        realized_pnl_days={},
        realized_pnl_total=Decimal("0"),
        last_occurred_at=OPENED_AT,
    )


def test_positions_document_when_state_has_positions_and_intents_renders_design_shape() -> None:
    # Arrange
    state = state_of(
        [held("P-2", quantity="8", average_price="6.2", side="short"), held("P-1")],
        [reserved("I-1")],
        limits=Limits(
            max_open_positions=5,
            max_exposure=Decimal("10000"),
            max_order_notional=None,
            daily_loss_limit=Decimal("500.5"),
        ),
    )

    # Act
    document = positions_document(state, projected_sequence=40)

    # Assert
    assert document == {
        "account": "large",
        "as_of_sequence": 42,
        "projected_sequence": 40,
        "halted": False,
        "trading_state": "active",
        "reconciled_as_of": None,
        "limits": {
            "max_open_positions": 5,
            "max_exposure": "10000",
            "max_order_notional": None,
            "daily_loss_limit": "500.5",
            "max_orders_per_minute": None,
            "max_underlying_exposure": None,
            "duplicate_window_s": None,
            "max_reconcile_age_s": None,
        },
        "open_positions": [
            {
                "position_id": "P-1",
                "symbol": "MSFT 260220P00400000",
                "side": "long",
                "quantity": "12",
                "average_price": "6.00",
                "multiplier": "100",
                "notional": "7200.00",
            },
            {
                "position_id": "P-2",
                "symbol": "MSFT 260220P00400000",
                "side": "short",
                "quantity": "8",
                "average_price": "6.20",
                "multiplier": "100",
                "notional": "4960.00",
            },
        ],
        "pending_intents": [
            {
                "intent_id": "I-1",
                "symbol": "AMD 260220P00110000",
                "notional": "1800.00",
                "expires_at": "2026-02-03T17:34:04Z",
                "reducing": False,
            }
        ],
        "open_exposure": "12160.00",
        "pending_exposure": "1800.00",
        "exposure": "13960.00",
    }


def test_positions_document_when_limits_never_set_renders_null_and_zero_exposure() -> None:
    # Act
    document = positions_document(initial_state(ACCOUNT), projected_sequence=0)

    # Assert
    assert document == {
        "account": "large",
        "as_of_sequence": 0,
        "projected_sequence": 0,
        "halted": False,
        "trading_state": "active",
        "reconciled_as_of": None,
        "limits": None,
        "open_positions": [],
        "pending_intents": [],
        "open_exposure": "0.00",
        "pending_exposure": "0.00",
        "exposure": "0.00",
    }


def test_positions_document_when_replayed_as_of_a_time_has_no_projected_sequence() -> None:
    # Act
    document = positions_document(state_of([], halted=True), projected_sequence=None)

    # Assert
    assert document["as_of_sequence"] == 42
    assert document["projected_sequence"] is None
    assert (document["halted"], document["trading_state"]) == (True, "halted")


def test_positions_document_when_figures_have_sub_cent_digits_rounds_only_at_the_edge() -> None:
    # Arrange: each notional is half a cent; their exact sum is a whole cent.
    state = state_of(
        [
            held("P-1", quantity="1", average_price="0.005", multiplier="1"),
            held("P-2", quantity="1", average_price="0.005", multiplier="1"),
        ],
        [reserved("I-1", quantity="1", limit_price="0.015", multiplier="1")],
    )

    # Act
    document = positions_document(state, projected_sequence=None)

    # Assert: half-even per figure, and the exposures are rounded sums, not sums of roundings.
    assert [row["notional"] for row in document["open_positions"]] == ["0.00", "0.00"]
    assert document["pending_intents"][0]["notional"] == "0.02"
    assert document["open_exposure"] == "0.01"
    assert document["pending_exposure"] == "0.02"
    assert document["exposure"] == "0.02"
    assert state.open_exposure == Decimal("0.010")


def test_positions_document_when_average_has_more_than_cents_keeps_its_digits() -> None:
    # Arrange
    state = state_of(
        [
            held("P-1", average_price="6.125"),
            held("P-2", average_price="6.100"),
            held("P-3", average_price="7"),
        ]
    )

    # Act
    document = positions_document(state, projected_sequence=None)

    # Assert
    prices = [row["average_price"] for row in document["open_positions"]]
    assert prices == ["6.125", "6.10", "7.00"]
    assert document["open_positions"][0]["notional"] == "7350.00"


def test_positions_document_when_folded_from_events_is_valid_json() -> None:
    # Arrange
    raw = {
        "account": ACCOUNT,
        "type": "OrderFilled",
        "occurred_at": "2026-02-03T17:29:04Z",
        "data": {
            "fill_id": "X-1001",
            "position_id": "P-1",
            "symbol": "MSFT 260220P00400000",
            "instrument": "option",
            "side": "long",
            "quantity": "12",
            "price": "6.00",
            "multiplier": "100",
        },
    }
    event = with_ledger_fields(
        decode_event(json.dumps(raw)), sequence=1, recorded_at=OPENED_AT, global_position=0
    )
    state = fold([event], account=ACCOUNT)

    # Act
    text = json.dumps(positions_document(state, projected_sequence=None))

    # Assert
    assert json.loads(text)["open_positions"][0]["notional"] == "7200.00"
    assert json.loads(text)["open_exposure"] == "7200.00"
