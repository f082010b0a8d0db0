"""Goal: the audit lists, per account and within its window, every reconciliation with the broker
(matched, or failed with its differences) and every discrepancy `projections.executions` finds
for an execution (each kind, with its figures), whether or not the store holds the
`DiscrepancyFound` ingest records for it (`recorded`); its memory stays bounded (the fates of
intents, the lists and the differences kept, what is left out counted); and `audit_document`
shows them as `reconciliations` and `discrepancies`.

Method: hand-built histories (the factories of test_breaches.py, through the JSON contract and
stamped as stored, sequences 1..n) whose findings are worked out by hand, replayed through
`audit_events`, compared with exact values. The bounds are lowered with monkeypatch so that a
few events reach them. Arrange/Act/Assert, no I/O.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from ledger.events import Difference, Event
from projections import breaches
from projections.breaches import Discrepancy, Reconciliation, audit_document
from tests.unit.test_breaches import (
    BIG,
    audit,
    close,
    fill,
    issue,
    limits,
    moment,
    release,
    stamp,
    stream,
    unstored,
)

# --- Factories ------------------------------------------------------------------------------------


def broker_close(close_id: str, position_id: str, *, at: str, quantity: str | None = None,
                 intent_id: str | None = None) -> Event:
    """A close as a broker reports it, with its execution id."""
    data: dict[str, Any] = {"close_id": close_id, "position_id": position_id, "price": "1.00"}
    if quantity is not None:
        data["quantity"] = quantity
    if intent_id is not None:
        data["intent_id"] = intent_id
    return unstored("PositionClosed", data, at)


def reconciled(as_of: str, head: int, *, at: str) -> Event:
    return unstored("PositionsReconciled", {"as_of": as_of, "head": head}, at)


def failed(as_of: str, head: int, differences: list[dict[str, str]], *, at: str) -> Event:
    return unstored("ReconciliationFailed",
                    {"as_of": as_of, "head": head, "differences": differences}, at)


def difference(symbol: str, broker: str, ledger: str, side: str = "long") -> dict[str, str]:
    return {"symbol": symbol, "side": side, "broker": broker, "ledger": ledger}


def recorded(kind: str, execution: str, position_id: str, *, at: str,
             intent_id: str | None = None) -> Event:
    """The DiscrepancyFound ingest appends after an execution (figures left out: not matched)."""
    data: dict[str, Any] = {"kind": kind, "execution": execution, "position_id": position_id,
                            "reason": "recorded by ingest"}
    if intent_id is not None:
        data["intent_id"] = intent_id
    return unstored("DiscrepancyFound", data, at)


def fill_key(position_id: str, at: str) -> str:
    """The natural key of the fill `fill` builds (its fill_id is X-<position>-<time>)."""
    return f'OrderFilled:fill_id="X-{position_id}-{at}"'


def one(events: list[Event]) -> Discrepancy:
    [found] = audit(events).discrepancies
    return found


# --- Each kind of discrepancy -----------------------------------------------------------------


def test_audit_when_a_close_is_larger_than_what_is_open_lists_close_beyond_open() -> None:
    # Arrange: 2 open, the broker closes 5.
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        fill("P-1", at=stamp("17:01:00"), quantity="2"),
        broker_close("C-1", "P-1", at=stamp("17:02:00"), quantity="5"),
    )

    # Act
    found = one(events)

    # Assert
    assert found == Discrepancy(
        kind="close_beyond_open", sequence=3, occurred_at=moment("17:02:00"),
        execution='PositionClosed:close_id="C-1"', position_id="P-1", intent_id=None,
        fill_id=None, close_id="C-1", reported=Decimal("5"), ledger=Decimal("2"),
        reason="close C-1 of 5 on position P-1, where 2 are open", recorded=False)


def test_audit_when_a_close_names_a_position_not_open_lists_close_of_unknown_position() -> None:
    # Arrange: an imported close without the broker's id, of a position never opened.
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        close("P-9", at=stamp("17:02:00")),
    )

    # Act
    found = one(events)

    # Assert
    assert found == Discrepancy(
        kind="close_of_unknown_position", sequence=2, occurred_at=moment("17:02:00"),
        execution='PositionClosed:position_id="P-9",occurred_at="2026-02-03T17:02:00Z",'
                  'quantity="all",price="1.00"',
        position_id="P-9", intent_id=None, fill_id=None, close_id=None, reported=None,
        ledger=Decimal("0"),
        reason="close without id of position P-9, which the ledger does not hold open")


@pytest.mark.parametrize(("released_by", "kind", "fate"), [
    ("IntentExpired", "fill_after_expiry", "expired"),
    ("IntentRejected", "fill_after_rejection", "rejected"),
    ("IntentCancelled", "fill_after_cancel", "cancelled"),
])
def test_audit_when_a_fill_comes_after_its_intent_ended_lists_the_kind_of_its_end(
    released_by: str, kind: str, fate: str,
) -> None:
    # Arrange
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        issue("I-1", at=stamp("17:01:00")),
        release("I-1", at=stamp("17:02:00"), event_type=released_by),
        fill("P-1", at=stamp("17:03:00"), intent_id="I-1"),
    )

    # Act
    found = one(events)

    # Assert
    assert found == Discrepancy(
        kind=kind, sequence=4, occurred_at=moment("17:03:00"),  # type: ignore[arg-type]
        execution=fill_key("P-1", stamp("17:03:00")), position_id="P-1", intent_id="I-1",
        fill_id="X-P-1-2026-02-03T17:03:00Z", close_id=None, reported=None, ledger=None,
        reason=f"fill X-P-1-2026-02-03T17:03:00Z for intent I-1, which was {fate}")


def test_audit_when_a_pending_intent_is_filled_past_its_expiry_lists_fill_after_expiry() -> None:
    # Arrange: no IntentExpired yet; the intent's expiry has passed when the fill comes.
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        issue("I-1", at=stamp("17:01:00"), expires_at=stamp("17:05:00")),
        fill("P-1", at=stamp("17:06:00"), intent_id="I-1"),
    )

    # Act
    found = one(events)

    # Assert
    assert (found.kind, found.sequence, found.intent_id, found.reported, found.ledger) == (
        "fill_after_expiry", 3, "I-1", None, None)
    assert found.reason == ("fill X-P-1-2026-02-03T17:06:00Z at 2026-02-03T17:06:00Z for intent "
                            "I-1, which expired at 2026-02-03T17:05:00Z")


def test_audit_when_a_fill_is_larger_than_its_intent_lists_fill_beyond_quantity() -> None:
    # Arrange
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        issue("I-1", at=stamp("17:01:00"), quantity="2"),
        fill("P-1", at=stamp("17:02:00"), intent_id="I-1", quantity="3"),
    )

    # Act
    found = one(events)

    # Assert
    assert found == Discrepancy(
        kind="fill_beyond_quantity", sequence=3, occurred_at=moment("17:02:00"),
        execution=fill_key("P-1", stamp("17:02:00")), position_id="P-1", intent_id="I-1",
        fill_id="X-P-1-2026-02-03T17:02:00Z", close_id=None, reported=Decimal("3"),
        ledger=Decimal("2"), reason="fill X-P-1-2026-02-03T17:02:00Z of 3 for intent I-1 of 2")


@pytest.mark.parametrize(("side", "price", "relation"), [
    ("long", "1.20", "above"),
    ("short", "0.80", "below"),
])
def test_audit_when_a_fill_is_beyond_its_limit_price_lists_fill_beyond_price(
    side: str, price: str, relation: str,
) -> None:
    # Arrange: the intent's limit is 1.00; a buy may not pay more, a sell not receive less.
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        issue("I-1", at=stamp("17:01:00"), side=side),
        fill("P-1", at=stamp("17:02:00"), intent_id="I-1", price=price),
    )

    # Act
    found = one(events)

    # Assert
    assert found == Discrepancy(
        kind="fill_beyond_price", sequence=3, occurred_at=moment("17:02:00"),
        execution=fill_key("P-1", stamp("17:02:00")), position_id="P-1", intent_id="I-1",
        fill_id="X-P-1-2026-02-03T17:02:00Z", close_id=None, reported=Decimal(price),
        ledger=Decimal("1.00"),
        reason=f"fill X-P-1-2026-02-03T17:02:00Z at {price}, {relation} the {side} limit price "
               "1.00 of intent I-1")


def test_audit_when_one_fill_is_late_too_large_and_too_dear_lists_three_at_its_sequence() -> None:
    # Arrange
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        issue("I-1", at=stamp("17:01:00"), expires_at=stamp("17:02:00")),
        fill("P-1", at=stamp("17:03:00"), intent_id="I-1", quantity="4", price="1.50"),
    )

    # Act
    result = audit(events)

    # Assert
    assert [(d.kind, d.sequence, d.reported, d.ledger) for d in result.discrepancies] == [
        ("fill_after_expiry", 3, None, None),
        ("fill_beyond_quantity", 3, Decimal("4"), Decimal("1")),
        ("fill_beyond_price", 3, Decimal("1.50"), Decimal("1.00")),
    ]


def test_audit_when_executions_agree_with_the_ledger_lists_no_discrepancy() -> None:
    # Arrange: a fill within its intent, a partial then a full close, a fill of no intent,
    # a fill of an intent the ledger never issued.
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        issue("I-1", at=stamp("17:01:00"), quantity="2"),
        fill("P-1", at=stamp("17:02:00"), intent_id="I-1", quantity="2"),
        broker_close("C-1", "P-1", at=stamp("17:03:00"), quantity="1"),
        broker_close("C-2", "P-1", at=stamp("17:04:00"), quantity="1"),
        fill("P-2", at=stamp("17:05:00")),
        fill("P-3", at=stamp("17:06:00"), intent_id="I-other"),
    )

    # Act
    result = audit(events)

    # Assert
    assert result.discrepancies == []
    assert audit_document([result])["accounts"][0]["discrepancies"] == []


def test_audit_when_an_intent_ended_twice_judges_by_its_first_end() -> None:
    # Arrange: expired, then cancelled (as `ledger.store.intent_fates`: the first on record).
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        issue("I-1", at=stamp("17:01:00")),
        release("I-1", at=stamp("17:02:00")),
        release("I-1", at=stamp("17:03:00"), event_type="IntentCancelled"),
        fill("P-1", at=stamp("17:04:00"), intent_id="I-1"),
    )

    # Act
    found = one(events)

    # Assert
    assert (found.kind, found.sequence) == ("fill_after_expiry", 5)


# --- Recorded or not --------------------------------------------------------------------------


def test_audit_when_the_discrepancy_found_follows_the_execution_marks_it_recorded() -> None:
    # Arrange: as ingest records them: the execution, then its DiscrepancyFound. The second
    # fill's DiscrepancyFound names another kind: it is not that fill's.
    at_1, at_2 = stamp("17:03:00"), stamp("17:05:00")
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        issue("I-1", at=stamp("17:01:00")),
        release("I-1", at=stamp("17:02:00")),
        fill("P-1", at=at_1, intent_id="I-1"),
        recorded("fill_after_expiry", fill_key("P-1", at_1), "P-1", at=at_1, intent_id="I-1"),
        issue("I-2", at=stamp("17:04:00"), quantity="1"),
        fill("P-2", at=at_2, intent_id="I-2", quantity="2"),
        recorded("fill_beyond_price", fill_key("P-2", at_2), "P-2", at=at_2, intent_id="I-2"),
    )

    # Act
    result = audit(events)

    # Assert
    assert [(d.kind, d.sequence, d.recorded) for d in result.discrepancies] == [
        ("fill_after_expiry", 4, True), ("fill_beyond_quantity", 7, False)]
    assert [d["recorded"] for d in audit_document([result])["accounts"][0]["discrepancies"]] == [
        True, False]


def test_audit_when_the_discrepancy_found_comes_later_in_the_stream_still_marks_it() -> None:
    # Arrange: other events between the close and its DiscrepancyFound.
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        broker_close("C-1", "P-9", at=stamp("17:01:00")),
        fill("P-1", at=stamp("17:02:00")),
        recorded("close_of_unknown_position", 'PositionClosed:close_id="C-1"', "P-9",
                 at=stamp("17:03:00")),
    )

    # Act
    found = one(events)

    # Assert
    assert (found.kind, found.sequence, found.close_id, found.recorded) == (
        "close_of_unknown_position", 2, "C-1", True)


def test_audit_when_only_a_discrepancy_found_is_stored_lists_nothing_more() -> None:
    # Arrange: a DiscrepancyFound for an execution the audit finds nothing wrong with.
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        fill("P-1", at=stamp("17:01:00")),
        recorded("fill_beyond_price", fill_key("P-1", stamp("17:01:00")), "P-1",
                 at=stamp("17:01:00")),
    )

    # Act
    result = audit(events)

    # Assert
    assert result.discrepancies == []


# --- Reconciliations --------------------------------------------------------------------------


def test_audit_lists_every_reconciliation_in_order_with_its_outcome_and_differences() -> None:
    # Arrange
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        fill("P-1", at=stamp("17:01:00")),
        reconciled("2026-02-03T17:01:30Z", 2, at=stamp("17:02:00")),
        failed("2026-02-03T17:02:30Z", 3,
               [difference("MSFT 260220P00400000", "3", "1"),
                difference("AMD 260220P00110000", "0", "2.5", side="short")],
               at=stamp("17:03:00")),
    )

    # Act
    result = audit(events)

    # Assert
    assert result.reconciliations == [
        Reconciliation(sequence=3, occurred_at=moment("17:02:00"), as_of=moment("17:01:30"),
                       head=2, matched=True, differences=()),
        Reconciliation(
            sequence=4, occurred_at=moment("17:03:00"), as_of=moment("17:02:30"), head=3,
            matched=False, differences=(
                Difference(symbol="MSFT 260220P00400000", side="long", broker=Decimal("3"),
                           ledger=Decimal("1")),
                Difference(symbol="AMD 260220P00110000", side="short", broker=Decimal("0"),
                           ledger=Decimal("2.5")))),
    ]
    assert (result.reconciliations_omitted, result.discrepancies_omitted) == (0, 0)


def test_audit_document_lists_reconciliations_and_discrepancies_with_decimals_as_strings() -> None:
    # Arrange: a reconciliation that matches, one that fails, a fill beyond its intent's
    # quantity recorded by ingest, and a close beyond what is open that is not.
    at = stamp("17:03:00")
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        reconciled("2026-02-03T17:00:30Z", 1, at=stamp("17:01:00")),
        issue("I-1", at=stamp("17:02:00"), quantity="1"),
        fill("P-1", at=at, intent_id="I-1", quantity="1.5"),
        recorded("fill_beyond_quantity", fill_key("P-1", at), "P-1", at=at, intent_id="I-1"),
        failed("2026-02-03T17:03:30Z", 5, [difference("MSFT 260220P00400000", "2", "1.5")],
               at=stamp("17:04:00")),
        broker_close("C-1", "P-1", at=stamp("17:05:00"), quantity="2"),
    )

    # Act
    document = audit_document([audit(events)])

    # Assert
    account = document["accounts"][0]
    assert account["reconciliations"] == [
        {"sequence": 2, "at": "2026-02-03T17:01:00Z", "as_of": "2026-02-03T17:00:30Z",
         "head": 1, "matched": True, "differences": []},
        {"sequence": 6, "at": "2026-02-03T17:04:00Z", "as_of": "2026-02-03T17:03:30Z",
         "head": 5, "matched": False,
         "differences": [{"symbol": "MSFT 260220P00400000", "side": "long", "broker": "2",
                          "ledger": "1.5"}]},
    ]
    assert account["discrepancies"] == [
        {"kind": "fill_beyond_quantity", "sequence": 4, "at": "2026-02-03T17:03:00Z",
         "position_id": "P-1", "intent_id": "I-1", "fill_id": "X-P-1-2026-02-03T17:03:00Z",
         "close_id": None, "reported": "1.5", "ledger": "1",
         "reason": "fill X-P-1-2026-02-03T17:03:00Z of 1.5 for intent I-1 of 1",
         "recorded": True},
        {"kind": "close_beyond_open", "sequence": 7, "at": "2026-02-03T17:05:00Z",
         "position_id": "P-1", "intent_id": None, "fill_id": None, "close_id": "C-1",
         "reported": "2", "ledger": "1.5",
         "reason": "close C-1 of 2 on position P-1, where 1.5 are open", "recorded": False},
    ]
    assert list(account) == ["account", "events", "peak_open_positions", "peak_exposure",
                             "breaches", "reconciliations", "discrepancies"]


# --- The window -------------------------------------------------------------------------------


def test_audit_when_window_starts_later_lists_only_what_is_in_it_but_remembers_fates() -> None:
    # Arrange: before the window a reconciliation, a discrepancy and an intent's expiry; in it
    # a fill of that intent and a reconciliation. After the window, a discrepancy.
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        reconciled("2026-02-03T17:00:30Z", 1, at=stamp("17:01:00")),
        close("P-9", at=stamp("17:02:00")),
        issue("I-1", at=stamp("17:03:00")),
        release("I-1", at=stamp("17:04:00")),
        fill("P-1", at=stamp("17:10:00"), intent_id="I-1"),
        reconciled("2026-02-03T17:10:30Z", 6, at=stamp("17:11:00")),
        close("P-8", at=stamp("17:30:00")),
    )

    # Act
    result = audit(events, window_from=moment("17:10:00"), window_to=moment("17:20:00"))

    # Assert
    assert [(d.kind, d.sequence) for d in result.discrepancies] == [("fill_after_expiry", 6)]
    assert [(r.sequence, r.matched) for r in result.reconciliations] == [(7, True)]


# --- Bounds -----------------------------------------------------------------------------------


def test_audit_when_more_discrepancies_than_kept_lists_the_first_and_counts_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Arrange: four closes of positions never opened, two kept.
    monkeypatch.setattr(breaches, "FINDINGS_MAX", 2)
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        *(broker_close(f"C-{n}", f"P-{n}", at=stamp(f"17:0{n}:00")) for n in range(1, 5)),
        recorded("close_of_unknown_position", 'PositionClosed:close_id="C-4"', "P-4",
                 at=stamp("17:04:00")),
    )

    # Act
    result = audit(events)

    # Assert
    assert [(d.close_id, d.recorded) for d in result.discrepancies] == [
        ("C-1", False), ("C-2", False)]
    assert result.discrepancies_omitted == 2
    assert audit_document([result])["accounts"][0]["discrepancies_omitted"] == 2
    assert "reconciliations_omitted" not in audit_document([result])["accounts"][0]


def test_audit_when_more_reconciliations_than_kept_lists_the_first_and_counts_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Arrange
    monkeypatch.setattr(breaches, "FINDINGS_MAX", 2)
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        *(reconciled(stamp(f"17:0{n}:30"), n, at=stamp(f"17:0{n}:40")) for n in range(1, 6)),
    )

    # Act
    result = audit(events)

    # Assert
    assert [r.sequence for r in result.reconciliations] == [2, 3]
    assert result.reconciliations_omitted == 3
    assert audit_document([result])["accounts"][0]["reconciliations_omitted"] == 3


def test_audit_when_differences_exceed_their_bound_omits_that_failure_and_every_later_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Arrange: room for 3 differences. The same two differences three times share one copy;
    # another two do not fit; after that even a matched reconciliation is left out.
    monkeypatch.setattr(breaches, "DIFFERENCES_KEPT_MAX", 3)
    same = [difference("AAA 1", "1", "0"), difference("BBB 1", "2", "0")]
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        *(failed(stamp(f"17:0{n}:30"), n, same, at=stamp(f"17:0{n}:40")) for n in range(1, 4)),
        failed(stamp("17:04:30"), 4, [difference("CCC 1", "1", "0"), *same],
               at=stamp("17:04:40")),
        reconciled(stamp("17:05:30"), 5, at=stamp("17:05:40")),
    )

    # Act
    result = audit(events)

    # Assert
    assert [(r.sequence, len(r.differences)) for r in result.reconciliations] == [
        (2, 2), (3, 2), (4, 2)]
    first = result.reconciliations[0].differences
    assert all(r.differences is first for r in result.reconciliations)
    assert result.reconciliations_omitted == 2


def test_audit_when_more_intents_ended_than_remembered_forgets_the_oldest_fate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Arrange: room for 2 fates; I-1's is dropped when I-3 expires.
    monkeypatch.setattr(breaches, "FATES_KEPT_MAX", 2)
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        *(issue(f"I-{n}", at=stamp(f"17:0{n}:00")) for n in range(1, 4)),
        *(release(f"I-{n}", at=stamp(f"17:0{n}:30")) for n in range(1, 4)),
        *(fill(f"P-{n}", at=stamp(f"17:1{n}:00"), intent_id=f"I-{n}") for n in range(1, 4)),
    )

    # Act
    result = audit(events)

    # Assert
    assert [(d.intent_id, d.sequence) for d in result.discrepancies] == [
        ("I-2", 9), ("I-3", 10)]
