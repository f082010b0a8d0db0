"""Goal: `projections.executions.discrepancies` names exactly what an execution the broker
reported disagrees with, with its figures, and nothing for an execution that agrees; the fold
moves the account to reducing on a DiscrepancyFound or a ReconciliationFailed (a halt stays a
halt), and keeps the latest reconciled `as_of`.

Method: small states folded from events built through the JSON contract; each kind of
discrepancy, its boundary (at the limit is fine, beyond it is not), and the ones that are not
discrepancies (a second partial fill of a filled intent, a fill of an intent the ledger never
issued). Arrange/Act/Assert, no I/O.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from ledger.events import DiscrepancyFound, Event, IntentFate
from projections.executions import discrepancies
from projections.fold import AccountState, fold
from tests.unit.test_fold import ACCOUNT, SYMBOL, stored, unstored

EXPIRES = "2026-02-03T17:34:04Z"


def folded(*events: Event) -> AccountState:
    return fold([stored(event, index) for index, event in enumerate(events, 1)],
                account=ACCOUNT)


def fill(fill_id: str, *, quantity: str = "5", price: str = "6.00", intent_id: str | None = None,
         position_id: str = "P-1", occurred_at: str = "2026-02-03T17:30:00Z") -> Event:
    data: dict[str, Any] = {"fill_id": fill_id, "position_id": position_id, "symbol": SYMBOL,
                            "instrument": "option", "side": "long", "quantity": quantity,
                            "price": price, "multiplier": "100"}
    if intent_id is not None:
        data["intent_id"] = intent_id
    return unstored("OrderFilled", data, occurred_at=occurred_at)


def close(close_id: str, *, position_id: str = "P-1", quantity: str | None = None) -> Event:
    data: dict[str, Any] = {"close_id": close_id, "position_id": position_id, "price": "7.00"}
    if quantity is not None:
        data["quantity"] = quantity
    return unstored("PositionClosed", data, occurred_at="2026-02-03T17:31:00Z")


def issue(intent_id: str = "I-1", *, quantity: str = "5", limit_price: str = "6.00",
          side: str = "long") -> Event:
    return unstored("IntentIssued", {
        "intent_id": intent_id, "signal_id": f"S-{intent_id}", "position_id": "P-1",
        "symbol": SYMBOL, "instrument": "option", "side": side, "quantity": quantity,
        "limit_price": limit_price, "multiplier": "100", "expires_at": EXPIRES})


def found(state: AccountState, event: Event,
          fates: dict[str, IntentFate] | None = None) -> list[DiscrepancyFound]:
    return discrepancies(state.positions, state.pending, fates or {}, event)


def test_discrepancies_when_a_close_is_larger_than_what_is_open_names_both_quantities() -> None:
    # Arrange
    state = folded(fill("X-1", quantity="10"))

    # Act
    [discrepancy] = found(state, close("C-1", quantity="50"))

    # Assert
    assert discrepancy == DiscrepancyFound(
        kind="close_beyond_open", execution='PositionClosed:close_id="C-1"', position_id="P-1",
        reported=Decimal("50"), ledger=Decimal("10"),
        reason="close C-1 of 50 on position P-1, where 10 are open")


def test_discrepancies_when_a_close_takes_exactly_what_is_open_finds_nothing() -> None:
    # Arrange
    state = folded(fill("X-1", quantity="10"))

    # Act / Assert
    assert found(state, close("C-1", quantity="10")) == []
    assert found(state, close("C-2")) == []


def test_discrepancies_when_a_close_names_a_position_the_ledger_does_not_hold() -> None:
    # Arrange
    state = folded(fill("X-1"), close("C-1"))

    # Act
    [discrepancy] = found(state, close("C-2", quantity="3"))

    # Assert
    assert (discrepancy.kind, discrepancy.reported, discrepancy.ledger) == (
        "close_of_unknown_position", Decimal("3"), Decimal("0"))
    assert discrepancy.reason == ("close C-2 of position P-1, which the ledger does not hold "
                                  "open")


@pytest.mark.parametrize(("fate", "kind"), [
    ("expired", "fill_after_expiry"), ("rejected", "fill_after_rejection"),
    ("cancelled", "fill_after_cancel")])
def test_discrepancies_when_a_fill_names_a_dead_intent_names_how_it_ended(
    fate: IntentFate, kind: str,
) -> None:
    # Arrange: I-1 is no longer pending; how it ended comes from the store.
    state = folded(issue(), unstored("IntentRejected", {"intent_id": "I-1", "reason": "x"}))

    # Act
    [discrepancy] = found(state, fill("X-1", intent_id="I-1"), {"I-1": fate})

    # Assert
    assert (discrepancy.kind, discrepancy.intent_id, discrepancy.execution) == (
        kind, "I-1", 'OrderFilled:fill_id="X-1"')
    assert discrepancy.reason == f"fill X-1 for intent I-1, which was {fate}"


def test_discrepancies_when_a_pending_intent_is_filled_after_its_expiry_time() -> None:
    # Arrange
    state = folded(issue())

    # Act
    [discrepancy] = found(state, fill("X-1", intent_id="I-1",
                                      occurred_at="2026-02-03T17:34:05Z"))

    # Assert
    assert discrepancy.kind == "fill_after_expiry"
    assert discrepancy.reason == ("fill X-1 at 2026-02-03T17:34:05Z for intent I-1, which "
                                  "expired at 2026-02-03T17:34:04Z")


def test_discrepancies_when_a_fill_exceeds_its_intents_quantity_and_price() -> None:
    # Arrange
    state = folded(issue(quantity="5", limit_price="6.00"))

    # Act
    kinds = {d.kind: (d.reported, d.ledger) for d in found(
        state, fill("X-1", quantity="6", price="6.01", intent_id="I-1"))}

    # Assert
    assert kinds == {"fill_beyond_quantity": (Decimal("6"), Decimal("5")),
                     "fill_beyond_price": (Decimal("6.01"), Decimal("6.00"))}


def test_discrepancies_when_a_sell_fills_below_its_limit_is_beyond_its_price() -> None:
    # Arrange: a short intent may not receive less than its limit; at the limit is fine.
    state = folded(issue(side="short", limit_price="6.00"))
    below = unstored("OrderFilled", {
        "fill_id": "X-1", "position_id": "P-9", "symbol": SYMBOL, "instrument": "option",
        "side": "short", "quantity": "5", "price": "5.99", "multiplier": "100",
        "intent_id": "I-1"}, occurred_at="2026-02-03T17:30:00Z")
    at_limit = unstored("OrderFilled", {
        "fill_id": "X-2", "position_id": "P-9", "symbol": SYMBOL, "instrument": "option",
        "side": "short", "quantity": "5", "price": "6.00", "multiplier": "100",
        "intent_id": "I-1"}, occurred_at="2026-02-03T17:30:00Z")

    # Act / Assert
    [discrepancy] = found(state, below)
    assert discrepancy.reason == ("fill X-1 at 5.99, below the short limit price 6.00 of "
                                  "intent I-1")
    assert found(state, at_limit) == []


def test_discrepancies_when_the_fill_agrees_or_its_intent_is_unknown_finds_nothing() -> None:
    # Arrange: a fill within its intent; a second fill of an intent already filled (partial
    # fills); a fill of an intent the ledger never issued (a manual order at the broker).
    state = folded(issue(), fill("X-1", quantity="3", intent_id="I-1"))

    # Act / Assert
    assert found(folded(issue()), fill("X-1", intent_id="I-1")) == []
    assert found(state, fill("X-2", quantity="2", intent_id="I-1")) == []
    assert found(state, fill("X-3", intent_id="I-never")) == []


def test_fold_when_a_discrepancy_or_failed_reconciliation_is_recorded_the_account_reduces() -> None:
    # Arrange
    discrepancy = unstored("DiscrepancyFound", {
        "kind": "close_beyond_open", "execution": 'PositionClosed:close_id="C-1"',
        "position_id": "P-1", "reported": "50", "ledger": "10", "reason": "close C-1 of 50"})
    failed = unstored("ReconciliationFailed", {
        "as_of": "2026-02-03T17:45:00Z", "head": 3,
        "differences": [{"symbol": "KO", "side": "long", "broker": "1", "ledger": "0"}]})
    halt = unstored("TradingHalted", {"reason": "stop"})

    # Act
    after_discrepancy = folded(fill("X-1"), discrepancy)
    after_failure = folded(fill("X-1"), failed)
    halted = folded(halt, failed)

    # Assert
    assert (after_discrepancy.trading_state, after_discrepancy.halt_reason) == (
        "reducing", "discrepancy: close C-1 of 50")
    assert (after_failure.trading_state, after_failure.halt_reason) == (
        "reducing", "reconciliation failed: 1 difference with the broker")
    assert (halted.trading_state, halted.halt_reason) == ("halted", "stop")


def test_fold_keeps_the_latest_reconciled_as_of_whatever_the_order_recorded() -> None:
    # Arrange
    def reconciled(as_of: str) -> Event:
        return unstored("PositionsReconciled", {"as_of": as_of, "head": 1})

    # Act
    state = folded(reconciled("2026-02-03T17:45:00Z"), reconciled("2026-02-03T17:40:00Z"))

    # Assert
    assert state.reconciled_as_of is not None
    assert state.reconciled_as_of.isoformat() == "2026-02-03T17:45:00+00:00"
    assert state.trading_state == "active"
