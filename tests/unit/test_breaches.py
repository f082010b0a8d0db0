"""Goal: the audit's breach finder reports exactly the intervals in which an account was over a
limit in force (open + pending positions, open + pending exposure, order notional, daily loss,
orders while halted, order rate, exposure on one underlying, duplicate orders), with the limit,
peak, times and sequences docs/design.md's `audit --json` shows; clips them to a window; keeps its
plot samples bounded; and renders the document.

Method: hand-built histories whose intervals and peaks are worked out by hand (including one
shaped like the incident of docs/design.md: limits 5 / $10,000, twelve put fills in 13 minutes, six
closed later), built through the public JSON contract (`decode_event`) and stamped as stored
(`with_ledger_fields`, sequences 1..n). Each test replays them through `BreachFinder` or
`audit_events` and compares with exact values. Arrange/Act/Assert, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from ledger.events import Event, decode_event, with_ledger_fields
from projections.breaches import (
    GATES,
    SAMPLES_MAX,
    AccountAudit,
    Breach,
    BreachFinder,
    Sample,
    audit_document,
    audit_events,
    has_breach,
)
from projections.fold import ForeignEvent, SequenceGap, fold

ACCOUNT = "large"
RECORDED_AT = datetime(2026, 2, 5, 9, 0, tzinfo=UTC)
BIG = "1000000"

# --- Factories: every event goes through the JSON contract ----------------------------------------


def stamp(clock: str, day: int = 3) -> str:
    """Return the JSON time of clock ("17:33:10") on 2026-02-<day>."""
    return f"2026-02-{day:02d}T{clock}Z"


def moment(clock: str, day: int = 3) -> datetime:
    return datetime.fromisoformat(stamp(clock, day).replace("Z", "+00:00"))


def unstored(
    event_type: str, data: Mapping[str, Any], occurred_at: str, account: str = ACCOUNT
) -> Event:
    document = {"account": account, "type": event_type, "occurred_at": occurred_at, "data": data}
    return decode_event(json.dumps(document))


def stream(*events: Event) -> list[Event]:
    return [
        with_ledger_fields(
            event, sequence=index + 1, recorded_at=RECORDED_AT, global_position=index
        )
        for index, event in enumerate(events)
    ]


def limits(
    max_open_positions: int,
    max_exposure: str,
    *,
    at: str,
    max_order_notional: str | None = None,
    daily_loss_limit: str | None = None,
    max_orders_per_minute: int | None = None,
    max_underlying_exposure: str | None = None,
    duplicate_window_s: int | None = None,
) -> Event:
    data: dict[str, Any] = {
        "max_open_positions": max_open_positions,
        "max_exposure": max_exposure,
    }
    optional = {
        "max_order_notional": max_order_notional,
        "daily_loss_limit": daily_loss_limit,
        "max_orders_per_minute": max_orders_per_minute,
        "max_underlying_exposure": max_underlying_exposure,
        "duplicate_window_s": duplicate_window_s,
    }
    data.update({name: value for name, value in optional.items() if value is not None})
    return unstored("LimitsSet", data, at)


def fill(
    position_id: str,
    *,
    at: str,
    quantity: str = "1",
    price: str = "1.00",
    multiplier: str = "100",
    symbol: str = "MSFT 260220P00400000",
    intent_id: str | None = None,
    account: str = ACCOUNT,
) -> Event:
    data: dict[str, Any] = {
        "fill_id": f"X-{position_id}-{at}",
        "position_id": position_id,
        "symbol": symbol,
        "instrument": "option",
        "side": "long",
        "quantity": quantity,
        "price": price,
        "multiplier": multiplier,
    }
    if intent_id is not None:
        data["intent_id"] = intent_id
    return unstored("OrderFilled", data, at, account)


def close(
    position_id: str,
    *,
    at: str,
    price: str = "1.00",
    quantity: str | None = None,
    intent_id: str | None = None,
) -> Event:
    data = {"position_id": position_id, "price": price, "reason": "stop_loss"}
    if quantity is not None:
        data["quantity"] = quantity
    if intent_id is not None:
        data["intent_id"] = intent_id
    return unstored("PositionClosed", data, at)


def issue(
    intent_id: str,
    *,
    at: str,
    quantity: str = "1",
    limit_price: str = "1.00",
    position_id: str | None = None,
    expires_at: str = "2026-02-06T00:00:00Z",
    symbol: str = "AMD 260220P00110000",
    side: str = "long",
) -> Event:
    data = {
        "intent_id": intent_id,
        "signal_id": f"S-{intent_id}",
        "position_id": position_id or f"P-{intent_id}",
        "symbol": symbol,
        "instrument": "option",
        "side": side,
        "quantity": quantity,
        "limit_price": limit_price,
        "multiplier": "100",
        "expires_at": expires_at,
    }
    return unstored("IntentIssued", data, at)


def release(intent_id: str, *, at: str, event_type: str = "IntentExpired") -> Event:
    return unstored(event_type, {"intent_id": intent_id, "reason": "not filled in time"}, at)


def halt(*, at: str) -> Event:
    return unstored("TradingHalted", {"reason": "operator"}, at)


def resume(*, at: str) -> Event:
    return unstored("TradingResumed", {}, at)


def signal_evaluated(signal_id: str, *, at: str) -> Event:
    signal = {
        "signal_id": signal_id,
        "account": ACCOUNT,
        "occurred_at": at,
        "symbol": "MSFT 260220P00400000",
        "instrument": "option",
        "side": "long",
        "quantity": "1",
        "limit_price": "1.00",
        "multiplier": "100",
    }
    data = {
        "signal_id": signal_id,
        "signal": signal,
        "allowed": False,
        "gates": [],
        "as_of_sequence": 0,
    }
    return unstored("SignalEvaluated", data, at)


def audit(events: list[Event], **window: datetime) -> AccountAudit:
    return audit_events(ACCOUNT, events, **window)


def only_breach(result: AccountAudit) -> Breach:
    assert len(result.breaches) == 1, result.breaches
    return result.breaches[0]


def positions_history() -> list[Event]:
    """Limit 5; seven fills (the 6th, sequence 7, goes over), then closes back to 5 at seq 10."""
    return stream(
        limits(5, BIG, at=stamp("17:30:00")),
        *(fill(f"P-{n}", at=stamp(f"17:3{n}:00")) for n in range(1, 8)),
        close("P-7", at=stamp("17:40:00")),
        close("P-6", at=stamp("17:41:00")),
    )


# --- max_open_positions ---------------------------------------------------------------------------


def test_audit_when_sixth_fill_exceeds_limit_5_opens_there_and_closes_back_at_5() -> None:
    # Arrange
    events = positions_history()

    # Act
    result = audit(events)

    # Assert
    assert result.breaches == [
        Breach(
            gate="max_open_positions",
            limit=Decimal(5),
            peak=Decimal(7),
            opened_at=moment("17:36:00"),
            closed_at=moment("17:41:00"),
            first_sequence=7,
            last_sequence=10,
            opening_event_id=events[6].event_id,
            closing_event_id=events[9].event_id,
        )
    ]
    assert result.events == 10
    assert result.peak_open_positions == 7
    assert has_breach([result]) is True


def test_audit_when_intent_pushes_positions_over_opens_at_issue_and_closes_at_expiry() -> None:
    # Arrange
    events = stream(
        limits(2, BIG, at=stamp("17:00:00")),
        fill("P-1", at=stamp("17:01:00")),
        fill("P-2", at=stamp("17:02:00")),
        issue("I-1", at=stamp("17:03:00")),
        release("I-1", at=stamp("17:08:00")),
    )

    # Act
    breach = only_breach(audit(events))

    # Assert
    assert breach.gate == "max_open_positions"
    assert (breach.limit, breach.peak) == (Decimal(2), Decimal(3))
    assert (breach.first_sequence, breach.last_sequence) == (4, 5)
    assert (breach.opened_at, breach.closed_at) == (moment("17:03:00"), moment("17:08:00"))


def test_audit_when_fill_of_pending_intent_adds_to_open_position_closes_at_the_fill() -> None:
    # Arrange: the intent adds to P-1, so its fill leaves 2 positions and nothing pending.
    events = stream(
        limits(2, BIG, at=stamp("17:00:00")),
        fill("P-1", at=stamp("17:01:00")),
        fill("P-2", at=stamp("17:02:00")),
        issue("I-1", at=stamp("17:03:00"), position_id="P-1"),
        fill("P-1", at=stamp("17:04:00"), intent_id="I-1"),
    )

    # Act
    breach = only_breach(audit(events))

    # Assert
    assert (breach.first_sequence, breach.last_sequence) == (4, 5)
    assert breach.closing_event_id == events[4].event_id


# --- max_exposure ---------------------------------------------------------------------------------


def test_audit_when_exposure_stays_over_limit_reports_interval_still_open() -> None:
    # Arrange: 7,200 + 3,600 = 10,800 > 10,000 at sequence 3; 11,800 at 4; 10,800 at 5.
    events = stream(
        limits(10, "10000", at=stamp("17:00:00")),
        fill("P-1", at=stamp("17:01:00"), quantity="12", price="6.00"),
        fill("P-2", at=stamp("17:02:00"), quantity="6", price="6.00"),
        fill("P-3", at=stamp("17:03:00"), quantity="2", price="5.00"),
        close("P-3", at=stamp("17:04:00"), price="5.50"),
    )

    # Act
    result = audit(events)

    # Assert
    assert result.breaches == [
        Breach(
            gate="max_exposure",
            limit=Decimal("10000"),
            peak=Decimal("11800"),
            opened_at=moment("17:02:00"),
            closed_at=None,
            first_sequence=3,
            last_sequence=None,
            opening_event_id=events[2].event_id,
            closing_event_id=None,
        )
    ]
    assert result.peak_exposure == Decimal("11800")


def test_audit_document_when_interval_still_open_omits_to() -> None:
    # Arrange
    events = stream(
        limits(10, "10000", at=stamp("17:00:00")),
        fill("P-1", at=stamp("17:01:00"), quantity="12", price="6.00"),
        fill("P-2", at=stamp("17:02:00"), quantity="6", price="6.00"),
    )

    # Act
    document = audit_document([audit(events)])

    # Assert
    assert document["accounts"][0]["breaches"] == [
        {
            "gate": "max_exposure",
            "limit": "10000.00",
            "peak": "10800.00",
            "from": "2026-02-03T17:02:00Z",
            "first_sequence": 3,
        }
    ]


def test_audit_when_rejected_intent_releases_exposure_closes_at_rejection() -> None:
    # Arrange: 7,200 open + 3,600 pending = 10,800 > 10,000 until the intent is rejected.
    events = stream(
        limits(10, "10000", at=stamp("17:00:00")),
        fill("P-1", at=stamp("17:01:00"), quantity="12", price="6.00"),
        issue("I-1", at=stamp("17:02:00"), quantity="6", limit_price="6.00"),
        release("I-1", at=stamp("17:03:00"), event_type="IntentRejected"),
    )

    # Act
    breach = only_breach(audit(events))

    # Assert
    assert breach.gate == "max_exposure"
    assert breach.peak == Decimal("10800")
    assert (breach.first_sequence, breach.last_sequence) == (3, 4)


# --- Limits changed mid-day -----------------------------------------------------------------------


def test_audit_when_limit_raised_mid_interval_closes_at_limits_set() -> None:
    # Arrange
    events = stream(
        limits(2, BIG, at=stamp("10:00:00")),
        fill("P-1", at=stamp("10:01:00")),
        fill("P-2", at=stamp("10:02:00")),
        fill("P-3", at=stamp("10:03:00")),
        limits(5, BIG, at=stamp("12:00:00")),
        fill("P-4", at=stamp("12:01:00")),
    )

    # Act
    breach = only_breach(audit(events))

    # Assert
    assert breach.limit == Decimal(2)
    assert breach.peak == Decimal(3)
    assert (breach.first_sequence, breach.last_sequence) == (4, 5)
    assert breach.closed_at == moment("12:00:00")
    assert breach.closing_event_id == events[4].event_id


def test_audit_when_limit_lowered_below_holdings_opens_at_limits_set_with_new_limit() -> None:
    # Arrange
    events = stream(
        limits(5, BIG, at=stamp("10:00:00")),
        fill("P-1", at=stamp("10:01:00")),
        fill("P-2", at=stamp("10:02:00")),
        fill("P-3", at=stamp("10:03:00")),
        limits(2, BIG, at=stamp("12:00:00")),
    )

    # Act
    breach = only_breach(audit(events))

    # Assert
    assert breach.gate == "max_open_positions"
    assert breach.limit == Decimal(2)
    assert breach.peak == Decimal(3)
    assert breach.first_sequence == 5
    assert breach.opened_at == moment("12:00:00")
    assert breach.closed_at is None


def test_audit_when_limit_lowered_during_interval_keeps_limit_in_force_at_opening() -> None:
    # Arrange
    events = stream(
        limits(2, BIG, at=stamp("10:00:00")),
        fill("P-1", at=stamp("10:01:00")),
        fill("P-2", at=stamp("10:02:00")),
        fill("P-3", at=stamp("10:03:00")),
        limits(1, BIG, at=stamp("11:00:00")),
        close("P-3", at=stamp("11:30:00")),
        close("P-2", at=stamp("11:40:00")),
    )

    # Act
    breach = only_breach(audit(events))

    # Assert
    assert breach.limit == Decimal(2)
    assert (breach.first_sequence, breach.last_sequence) == (4, 7)


def test_audit_when_limits_never_set_reports_nothing_even_orders_while_halted() -> None:
    # Arrange
    events = stream(
        *(fill(f"P-{n}", at=stamp(f"17:0{n}:00"), quantity="100") for n in range(1, 8)),
        halt(at=stamp("17:10:00")),
        fill("P-9", at=stamp("17:11:00")),
    )

    # Act
    result = audit(events)

    # Assert
    assert result.breaches == []
    assert result.peak_open_positions == 8
    assert has_breach([result]) is False


# --- trading_halted -------------------------------------------------------------------------------


def test_audit_when_orders_sent_while_halted_reports_interval_until_resumed() -> None:
    # Arrange
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        halt(at=stamp("17:01:00")),
        signal_evaluated("S-1", at=stamp("17:02:00")),
        fill("P-1", at=stamp("17:03:00")),
        signal_evaluated("S-2", at=stamp("17:04:00")),
        issue("I-1", at=stamp("17:05:00")),
        resume(at=stamp("17:06:00")),
        fill("P-2", at=stamp("17:07:00")),
    )

    # Act
    result = audit(events)

    # Assert
    assert result.breaches == [
        Breach(
            gate="trading_halted",
            limit=Decimal(0),
            peak=Decimal(2),
            opened_at=moment("17:03:00"),
            closed_at=moment("17:06:00"),
            first_sequence=4,
            last_sequence=7,
            opening_event_id=events[3].event_id,
            closing_event_id=events[6].event_id,
        )
    ]
    assert audit_document([result])["accounts"][0]["breaches"] == [
        {
            "gate": "trading_halted",
            "limit": "0",
            "peak": "2",
            "from": "2026-02-03T17:03:00Z",
            "to": "2026-02-03T17:06:00Z",
            "first_sequence": 4,
        }
    ]


def test_audit_when_halted_without_orders_reports_nothing() -> None:
    # Arrange
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        fill("P-1", at=stamp("17:01:00")),
        halt(at=stamp("17:02:00")),
        close("P-1", at=stamp("17:03:00")),
        resume(at=stamp("17:04:00")),
    )

    # Act
    result = audit(events)

    # Assert
    assert result.breaches == []


def test_audit_when_still_halted_at_end_reports_interval_open() -> None:
    # Arrange
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        halt(at=stamp("17:01:00")),
        issue("I-1", at=stamp("17:02:00")),
    )

    # Act
    breach = only_breach(audit(events))

    # Assert
    assert breach.gate == "trading_halted"
    assert breach.first_sequence == 3
    assert breach.closed_at is None


# --- max_order_notional ---------------------------------------------------------------------------


def test_audit_when_consecutive_orders_exceed_order_notional_reports_one_interval() -> None:
    # Arrange: 1,000 (within), 7,200 (over), 6,000 (over), then a decision closes it.
    events = stream(
        limits(10, BIG, at=stamp("17:00:00"), max_order_notional="5000"),
        fill("P-1", at=stamp("17:01:00"), quantity="10", price="1.00"),
        fill("P-2", at=stamp("17:02:00"), quantity="12", price="6.00"),
        issue("I-1", at=stamp("17:03:00"), quantity="10", limit_price="6.00"),
        signal_evaluated("S-1", at=stamp("17:04:00")),
    )

    # Act
    result = audit(events)

    # Assert
    assert result.breaches == [
        Breach(
            gate="max_order_notional",
            limit=Decimal("5000"),
            peak=Decimal("7200"),
            opened_at=moment("17:02:00"),
            closed_at=moment("17:04:00"),
            first_sequence=3,
            last_sequence=5,
            opening_event_id=events[2].event_id,
            closing_event_id=events[4].event_id,
        )
    ]


def test_audit_when_order_within_notional_follows_big_one_closes_at_it() -> None:
    # Arrange
    events = stream(
        limits(10, BIG, at=stamp("17:00:00"), max_order_notional="5000"),
        fill("P-1", at=stamp("17:01:00"), quantity="12", price="6.00"),
        fill("P-2", at=stamp("17:02:00"), quantity="50", price="1.00"),
    )

    # Act
    breach = only_breach(audit(events))

    # Assert
    assert (breach.first_sequence, breach.last_sequence) == (2, 3)
    assert breach.peak == Decimal("7200")


# --- daily_loss_limit -----------------------------------------------------------------------------


def daily_loss_history() -> list[Event]:
    """Bought 10 @ 6.00 x 100 and closed at 5.00: 1,000 lost on Feb 3 against a limit of 500."""
    return [
        limits(10, BIG, at=stamp("15:00:00"), daily_loss_limit="500"),
        fill("P-1", at=stamp("15:01:00"), quantity="10", price="6.00"),
        close("P-1", at=stamp("15:30:00"), price="5.00"),
    ]


def test_audit_when_day_loss_exceeds_limit_opens_at_close_and_closes_on_next_day() -> None:
    # Arrange
    events = stream(*daily_loss_history(), signal_evaluated("S-1", at=stamp("09:30:00", day=4)))

    # Act
    result = audit(events)

    # Assert
    assert result.breaches == [
        Breach(
            gate="daily_loss_limit",
            limit=Decimal("500"),
            peak=Decimal("1000"),
            opened_at=moment("15:30:00"),
            closed_at=moment("09:30:00", day=4),
            first_sequence=3,
            last_sequence=4,
            opening_event_id=events[2].event_id,
            closing_event_id=events[3].event_id,
        )
    ]
    assert audit_document([result])["accounts"][0]["breaches"][0]["peak"] == "1000.00"


def test_audit_when_late_event_is_stamped_with_earlier_day_keeps_loss_interval_open() -> None:
    # Arrange
    events = stream(*daily_loss_history(), signal_evaluated("S-1", at=stamp("23:00:00", day=2)))

    # Act
    breach = only_breach(audit(events))

    # Assert
    assert breach.gate == "daily_loss_limit"
    assert breach.closed_at is None


def test_audit_when_day_loss_exactly_at_limit_reports_nothing() -> None:
    # Arrange
    events = stream(
        limits(10, BIG, at=stamp("15:00:00"), daily_loss_limit="1000"),
        fill("P-1", at=stamp("15:01:00"), quantity="10", price="6.00"),
        close("P-1", at=stamp("15:30:00"), price="5.00"),
    )

    # Act
    result = audit(events)

    # Assert
    assert result.breaches == []


# --- max_order_rate -------------------------------------------------------------------------------


def rate_history() -> list[Event]:
    """Limit 2 a minute: the 3rd intent in 60 s (seq 4) goes over, the 4th reaches 4 (seq 6), and
    the one at 17:01:40 has only I-4 (17:00:50) in its minute: 2, within, closing it (seq 7)."""
    return stream(
        limits(10, BIG, at=stamp("17:00:00"), max_orders_per_minute=2),
        issue("I-1", at=stamp("17:00:10")),
        issue("I-2", at=stamp("17:00:20")),
        issue("I-3", at=stamp("17:00:30")),
        fill("P-I-1", at=stamp("17:00:40"), intent_id="I-1"),
        issue("I-4", at=stamp("17:00:50")),
        issue("I-5", at=stamp("17:01:40")),
    )


def test_audit_when_intents_exceed_rate_opens_at_intent_over_and_closes_at_next_within() -> None:
    # Arrange
    events = rate_history()

    # Act
    result = audit(events)

    # Assert: the fill between two intents over the rate neither closes nor extends it.
    assert result.breaches == [
        Breach(
            gate="max_order_rate",
            limit=Decimal(2),
            peak=Decimal(4),
            opened_at=moment("17:00:30"),
            closed_at=moment("17:01:40"),
            first_sequence=4,
            last_sequence=7,
            opening_event_id=events[3].event_id,
            closing_event_id=events[6].event_id,
        )
    ]
    assert audit_document([result])["accounts"][0]["breaches"] == [
        {
            "gate": "max_order_rate",
            "limit": "2",
            "peak": "4",
            "from": "2026-02-03T17:00:30Z",
            "to": "2026-02-03T17:01:40Z",
            "first_sequence": 4,
        }
    ]


@pytest.mark.parametrize(
    ("second", "breached"),
    [("17:01:00", False), ("17:00:59", True)],
    ids=["exactly-60-s-later-is-a-new-minute", "59-s-later-is-the-same-minute"],
)
def test_audit_when_second_intent_near_minute_boundary_counts_only_after_now_minus_60_s(
    second: str, breached: bool
) -> None:
    # Arrange: the gates count intents with occurred_at > now - 60 s.
    events = stream(
        limits(10, BIG, at=stamp("16:59:00"), max_orders_per_minute=1),
        issue("I-1", at=stamp("17:00:00")),
        issue("I-2", at=stamp(second)),
    )

    # Act
    result = audit(events)

    # Assert
    assert [(b.gate, b.peak, b.first_sequence) for b in result.breaches] == (
        [("max_order_rate", Decimal(2), 3)] if breached else []
    )


@pytest.mark.parametrize(
    ("new_limit", "closed"),
    [(2, True), (None, True), (0, False)],
    ids=["raised-to-the-figure", "cleared", "lowered"],
)
def test_audit_when_limits_set_during_rate_interval_judges_last_figure_by_new_limit(
    new_limit: int | None, closed: bool
) -> None:
    # Arrange: 2 intents in a minute against 1 (open at seq 3), then new limits at seq 4.
    events = stream(
        limits(10, BIG, at=stamp("17:00:00"), max_orders_per_minute=1),
        issue("I-1", at=stamp("17:00:10")),
        issue("I-2", at=stamp("17:00:20")),
        limits(10, BIG, at=stamp("17:00:25"), max_orders_per_minute=new_limit),
    )

    # Act
    breach = only_breach(audit(events))

    # Assert: the limit reported is the one in force when it opened.
    assert (breach.gate, breach.limit, breach.peak) == ("max_order_rate", Decimal(1), Decimal(2))
    assert breach.first_sequence == 3
    assert breach.last_sequence == (4 if closed else None)


def test_audit_when_intent_back_dated_counts_every_intent_after_its_minute_start() -> None:
    # Arrange: I-3 is stamped 17:00:30, before I-2: the gates count every intent after 16:59:30
    # (I-1 and I-2, later or not) plus itself: 3 > 2. The 10-minute duplicate window keeps I-1
    # among the fold's recent intents; the quantities differ, so none is a duplicate.
    events = stream(
        limits(10, BIG, at=stamp("16:59:00"), max_orders_per_minute=2, duplicate_window_s=600),
        issue("I-1", at=stamp("17:00:00"), quantity="1"),
        issue("I-2", at=stamp("17:02:00"), quantity="2"),
        issue("I-3", at=stamp("17:00:30"), quantity="3"),
    )

    # Act
    breach = only_breach(audit(events))

    # Assert
    assert (breach.gate, breach.peak, breach.first_sequence) == (
        "max_order_rate", Decimal(3), 4)


def test_audit_when_rate_limit_lowered_below_past_minute_opens_nothing() -> None:
    # Arrange: 3 intents in a minute within 5; the limit then drops to 1 but no intent follows.
    events = stream(
        limits(10, BIG, at=stamp("17:00:00"), max_orders_per_minute=5),
        issue("I-1", at=stamp("17:00:10")),
        issue("I-2", at=stamp("17:00:20")),
        issue("I-3", at=stamp("17:00:30")),
        limits(10, BIG, at=stamp("17:00:40"), max_orders_per_minute=1),
        signal_evaluated("S-1", at=stamp("17:00:50")),
    )

    # Act
    result = audit(events)

    # Assert: the rate is judged at each intent, as the gates judge each decision.
    assert result.breaches == []


def test_audit_when_intents_spaced_within_rate_finds_no_breach() -> None:
    # Arrange: one intent every 30 s: never more than 2 in a minute.
    events = stream(
        limits(10, BIG, at=stamp("17:00:00"), max_orders_per_minute=2),
        *(issue(f"I-{n}", at=stamp(f"17:0{n // 2}:{30 * (n % 2):02d}")) for n in range(8)),
    )

    # Act
    result = audit(events)

    # Assert
    assert result.breaches == []


def test_audit_when_rate_interval_open_at_window_start_reports_it_from_first_event_inside() -> None:
    # Arrange
    events = rate_history()

    # Act: the window starts at the fill (seq 5), while the rate is 3 against 2.
    breach = only_breach(audit(events, window_from=moment("17:00:35")))

    # Assert
    assert (breach.gate, breach.limit, breach.peak) == ("max_order_rate", Decimal(2), Decimal(4))
    assert (breach.first_sequence, breach.last_sequence) == (5, 7)


# --- max_underlying_exposure ----------------------------------------------------------------------

MSFT_PUT = "MSFT 260220P00400000"
MSFT_CALL = "MSFT 260320C00420000"
AMD_PUT = "AMD 260220P00110000"


def test_audit_when_one_underlying_goes_over_opens_and_closes_when_every_one_is_within() -> None:
    # Arrange: limit 1,000 per underlying. MSFT 600, AMD 900 (1,500 in all, each within); an
    # intent on another MSFT strike takes MSFT to 1,050 (seq 4); its fill keeps it there; AMD
    # reaches 1,020; MSFT drops to 450 with AMD still over; AMD back to 900 closes it (seq 8).
    events = stream(
        limits(10, BIG, at=stamp("17:00:00"), max_underlying_exposure="1000"),
        fill("P-1", at=stamp("17:01:00"), quantity="4", price="1.50", symbol=MSFT_PUT),
        fill("P-2", at=stamp("17:02:00"), quantity="5", price="1.80", symbol=AMD_PUT),
        issue("I-1", at=stamp("17:03:00"), quantity="3", limit_price="1.50", symbol=MSFT_CALL),
        fill("P-I-1", at=stamp("17:04:00"), quantity="3", price="1.50", symbol=MSFT_CALL,
             intent_id="I-1"),
        fill("P-4", at=stamp("17:05:00"), quantity="1", price="1.20", symbol=AMD_PUT),
        close("P-1", at=stamp("17:06:00")),
        close("P-4", at=stamp("17:07:00")),
    )

    # Act
    result = audit(events)

    # Assert
    assert result.breaches == [
        Breach(
            gate="max_underlying_exposure",
            limit=Decimal("1000"),
            peak=Decimal("1050"),
            opened_at=moment("17:03:00"),
            closed_at=moment("17:07:00"),
            first_sequence=4,
            last_sequence=8,
            opening_event_id=events[3].event_id,
            closing_event_id=events[7].event_id,
        )
    ]
    assert audit_document([result])["accounts"][0]["breaches"][0] == {
        "gate": "max_underlying_exposure",
        "limit": "1000.00",
        "peak": "1050.00",
        "from": "2026-02-03T17:03:00Z",
        "to": "2026-02-03T17:07:00Z",
        "first_sequence": 4,
    }


def test_audit_when_limit_set_over_held_underlying_opens_at_limits_set_until_cancel() -> None:
    # Arrange: MSFT 600 open + 450 pending before any underlying limit; then 1,000 is set.
    events = stream(
        limits(10, BIG, at=stamp("17:00:00")),
        fill("P-1", at=stamp("17:01:00"), quantity="4", price="1.50", symbol=MSFT_PUT),
        issue("I-1", at=stamp("17:02:00"), quantity="3", limit_price="1.50", symbol=MSFT_CALL),
        limits(10, BIG, at=stamp("17:05:00"), max_underlying_exposure="1000"),
        release("I-1", at=stamp("17:06:00"), event_type="IntentCancelled"),
    )

    # Act
    breach = only_breach(audit(events))

    # Assert
    assert (breach.gate, breach.limit, breach.peak) == (
        "max_underlying_exposure", Decimal("1000"), Decimal("1050"))
    assert (breach.first_sequence, breach.last_sequence) == (4, 5)


def test_audit_when_limit_lowered_during_underlying_interval_keeps_limit_in_force_at_opening(
) -> None:
    # Arrange
    events = stream(
        limits(10, BIG, at=stamp("17:00:00"), max_underlying_exposure="1000"),
        fill("P-1", at=stamp("17:01:00"), quantity="11", price="1.00", symbol=MSFT_PUT),
        limits(10, BIG, at=stamp("17:02:00"), max_underlying_exposure="500"),
        close("P-1", at=stamp("17:03:00")),
    )

    # Act
    breach = only_breach(audit(events))

    # Assert
    assert (breach.limit, breach.peak) == (Decimal("1000"), Decimal("1100"))
    assert (breach.first_sequence, breach.last_sequence) == (2, 4)


def test_audit_when_reducing_intent_executed_by_close_releases_its_reservation() -> None:
    # Arrange: 900 held; a reducing intent reserves 300 more (1,200 > 1,000); the close that
    # executes it names it, releasing the 300 and leaving 600 open.
    events = stream(
        limits(10, BIG, at=stamp("17:00:00"), max_underlying_exposure="1000"),
        fill("P-1", at=stamp("17:01:00"), quantity="6", price="1.50", symbol=MSFT_PUT),
        issue("I-1", at=stamp("17:02:00"), quantity="2", limit_price="1.50", symbol=MSFT_PUT,
              side="short", position_id="P-1"),
        close("P-1", at=stamp("17:03:00"), price="1.50", quantity="2", intent_id="I-1"),
    )

    # Act
    breach = only_breach(audit(events))

    # Assert
    assert (breach.gate, breach.peak) == ("max_underlying_exposure", Decimal("1200"))
    assert (breach.first_sequence, breach.last_sequence) == (3, 4)


@pytest.mark.parametrize("released_by", ["IntentCancelled", "PositionClosed"])
def test_audit_when_intent_cancelled_or_closed_releases_its_exposure(released_by: str) -> None:
    # Arrange: 900 held + 300 reserved > 1,000 until the intent is released.
    releasing = (
        release("I-1", at=stamp("17:03:00"), event_type="IntentCancelled")
        if released_by == "IntentCancelled"
        else close("P-1", at=stamp("17:03:00"), price="1.50", quantity="2", intent_id="I-1")
    )
    events = stream(
        limits(10, "1000", at=stamp("17:00:00")),
        fill("P-1", at=stamp("17:01:00"), quantity="6", price="1.50", symbol=MSFT_PUT),
        issue("I-1", at=stamp("17:02:00"), quantity="2", limit_price="1.50", symbol=MSFT_PUT,
              side="short", position_id="P-1"),
        releasing,
    )

    # Act
    result = audit(events)

    # Assert
    breach = only_breach(result)
    assert (breach.gate, breach.peak) == ("max_exposure", Decimal("1200"))
    assert (breach.first_sequence, breach.last_sequence) == (3, 4)
    assert result.samples[-1].exposure == fold(events, account=ACCOUNT).exposure


def test_audit_when_exposure_spread_over_underlyings_each_within_finds_no_breach() -> None:
    # Arrange: 1,000 on each of MSFT (two strikes) and AMD, against 1,000 per underlying.
    events = stream(
        limits(10, BIG, at=stamp("17:00:00"), max_underlying_exposure="1000"),
        fill("P-1", at=stamp("17:01:00"), quantity="4", price="1.00", symbol=MSFT_PUT),
        fill("P-2", at=stamp("17:02:00"), quantity="6", price="1.00", symbol=MSFT_CALL),
        fill("P-3", at=stamp("17:03:00"), quantity="5", price="1.00", symbol=AMD_PUT),
        issue("I-1", at=stamp("17:04:00"), quantity="5", limit_price="1.00", symbol=AMD_PUT),
    )

    # Act
    result = audit(events)

    # Assert
    assert result.breaches == []


# --- duplicate_order ------------------------------------------------------------------------------


def test_audit_when_identical_intents_within_window_reports_one_interval_until_a_new_one() -> None:
    # Arrange: window 120 s. I-2 repeats I-1 (1 earlier), I-3 repeats both (2); the decision and
    # the fill between them change nothing; I-4, of another quantity, closes it.
    events = stream(
        limits(10, BIG, at=stamp("16:59:00"), duplicate_window_s=120),
        issue("I-1", at=stamp("17:00:00")),
        signal_evaluated("S-1", at=stamp("17:00:30")),
        issue("I-2", at=stamp("17:01:00")),
        fill("P-I-1", at=stamp("17:01:10"), intent_id="I-1"),
        issue("I-3", at=stamp("17:01:30")),
        issue("I-4", at=stamp("17:01:40"), quantity="2"),
    )

    # Act
    result = audit(events)

    # Assert
    assert result.breaches == [
        Breach(
            gate="duplicate_order",
            limit=Decimal(0),
            peak=Decimal(2),
            opened_at=moment("17:01:00"),
            closed_at=moment("17:01:40"),
            first_sequence=4,
            last_sequence=7,
            opening_event_id=events[3].event_id,
            closing_event_id=events[6].event_id,
        )
    ]
    assert audit_document([result])["accounts"][0]["breaches"][0] == {
        "gate": "duplicate_order",
        "limit": "0",
        "peak": "2",
        "from": "2026-02-03T17:01:00Z",
        "to": "2026-02-03T17:01:40Z",
        "first_sequence": 4,
    }


@pytest.mark.parametrize(
    ("second", "breached"),
    [("17:02:00", False), ("17:01:59", True)],
    ids=["exactly-the-window-later", "within-the-window"],
)
def test_audit_when_repeat_near_window_end_counts_only_after_now_minus_window(
    second: str, breached: bool
) -> None:
    # Arrange
    events = stream(
        limits(10, BIG, at=stamp("16:59:00"), duplicate_window_s=120),
        issue("I-1", at=stamp("17:00:00")),
        issue("I-2", at=stamp(second)),
    )

    # Act
    result = audit(events)

    # Assert
    assert [(b.gate, b.peak, b.first_sequence) for b in result.breaches] == (
        [("duplicate_order", Decimal(1), 3)] if breached else []
    )


@pytest.mark.parametrize(
    "differing",
    [{"symbol": MSFT_PUT}, {"side": "short"}, {"quantity": "2"}, {"limit_price": "1.01"}],
    ids=["symbol", "side", "quantity", "limit-price"],
)
def test_audit_when_intent_differs_in_one_field_is_no_duplicate(differing: dict[str, str]) -> None:
    # Arrange
    events = stream(
        limits(10, BIG, at=stamp("16:59:00"), duplicate_window_s=600),
        issue("I-1", at=stamp("17:00:00")),
        issue("I-2", at=stamp("17:00:01"), **differing),
    )

    # Act
    result = audit(events)

    # Assert
    assert result.breaches == []


@pytest.mark.parametrize(
    ("window", "closed"), [(None, True), (30, False)], ids=["cleared", "shortened"]
)
def test_audit_when_limits_set_during_duplicate_interval_closes_it_only_if_cleared(
    window: int | None, closed: bool
) -> None:
    # Arrange
    events = stream(
        limits(10, BIG, at=stamp("16:59:00"), duplicate_window_s=120),
        issue("I-1", at=stamp("17:00:00")),
        issue("I-2", at=stamp("17:01:00")),
        limits(10, BIG, at=stamp("17:01:10"), duplicate_window_s=window),
    )

    # Act
    breach = only_breach(audit(events))

    # Assert
    assert (breach.gate, breach.limit, breach.peak) == ("duplicate_order", Decimal(0), Decimal(1))
    assert breach.first_sequence == 3
    assert breach.last_sequence == (4 if closed else None)


def test_audit_when_no_duplicate_window_set_repeats_are_no_breach() -> None:
    # Arrange
    events = stream(
        limits(10, BIG, at=stamp("16:59:00")),
        issue("I-1", at=stamp("17:00:00")),
        issue("I-2", at=stamp("17:00:00")),
    )

    # Act
    result = audit(events)

    # Assert
    assert result.breaches == []


def test_audit_when_new_gates_open_at_one_event_lists_them_in_gates_order() -> None:
    # Arrange: one intent is over the rate, over its underlying and a duplicate, all at seq 3.
    events = stream(
        limits(10, BIG, at=stamp("16:59:00"), max_orders_per_minute=1,
               max_underlying_exposure="150", duplicate_window_s=60),
        issue("I-1", at=stamp("17:00:00")),
        issue("I-2", at=stamp("17:00:01")),
    )

    # Act
    result = audit(events)

    # Assert
    assert GATES[-3:] == ("max_order_rate", "max_underlying_exposure", "duplicate_order")
    assert [(b.gate, b.first_sequence) for b in result.breaches] == [
        ("max_order_rate", 3), ("max_underlying_exposure", 3), ("duplicate_order", 3)]


# --- No breach ------------------------------------------------------------------------------------


def test_audit_when_account_stays_within_limits_finds_no_breach() -> None:
    # Arrange: 5 positions and exactly 10,000 of exposure are within limits 5 / 10,000.
    events = stream(
        limits(5, "10000", at=stamp("17:00:00"), max_order_notional="4000"),
        *(fill(f"P-{n}", at=stamp(f"17:0{n}:00"), quantity="8", price="2.50") for n in range(1, 6)),
        close("P-5", at=stamp("17:30:00"), price="2.60"),
    )

    # Act
    result = audit(events)

    # Assert
    assert result.breaches == []
    assert has_breach([result]) is False
    assert (result.peak_open_positions, result.peak_exposure) == (5, Decimal("10000"))
    assert audit_document([result]) == {
        "accounts": [
            {
                "account": ACCOUNT,
                "events": 7,
                "peak_open_positions": 5,
                "peak_exposure": "10000.00",
                "breaches": [],
                "reconciliations": [],
                "discrepancies": [],
            }
        ]
    }


# --- The incident ---------------------------------------------------------------------------------

# ticker, quantity, price, time: notionals 1,640 ... 17,100, 72,140 in all, over 13 minutes.
INCIDENT_FILLS = [
    ("MSFT", "4", "4.10", "17:20:10"),  # 1,640
    ("CRM", "5", "6.20", "17:21:20"),  # 3,100
    ("META", "10", "17.10", "17:22:35"),  # 17,100: exposure 21,840 > 10,000 (seq 4)
    ("AVGO", "6", "9.45", "17:23:50"),  # 5,670
    ("AMD", "8", "3.35", "17:25:05"),  # 2,680
    ("AAPL", "7", "4.60", "17:26:15"),  # 3,220: the 6th position (seq 7)
    ("QCOM", "5", "5.12", "17:27:30"),  # 2,560
    ("QCOM", "6", "5.40", "17:28:40"),  # 3,240, another strike
    ("GOOGL", "9", "11.30", "17:29:55"),  # 10,170
    ("NVDA", "12", "12.05", "17:31:00"),  # 14,460
    ("ORCL", "8", "7.75", "17:32:05"),  # 6,200
    ("INTC", "20", "1.05", "17:33:10"),  # 2,100: 12 open, 72,140
]
# The position manager's six closes: what stays open is 21,000 in 6 positions.
INCIDENT_CLOSES = [
    ("P-3", "14.00", "17:38:00"),
    ("P-10", "13.10", "17:39:30"),
    ("P-9", "10.05", "17:41:45"),
    ("P-4", "10.20", "17:43:00"),
    ("P-1", "3.40", "17:44:20"),
    ("P-12", "1.30", "17:46:02"),
]


def incident_history() -> list[Event]:
    fills = [
        fill(
            f"P-{index}",
            at=stamp(clock),
            quantity=quantity,
            price=price,
            symbol=f"{ticker} 260220P{index:05d}000",
        )
        for index, (ticker, quantity, price, clock) in enumerate(INCIDENT_FILLS, start=1)
    ]
    closes = [
        close(position_id, at=stamp(clock), price=price)
        for position_id, price, clock in INCIDENT_CLOSES
    ]
    return stream(limits(5, "10000", at=stamp("17:20:00")), *fills, *closes)


def test_audit_when_incident_replayed_reports_both_breaches_still_open() -> None:
    # Arrange
    events = incident_history()

    # Act
    result = audit(events)

    # Assert
    assert result.events == 19
    assert result.peak_open_positions == 12
    assert result.peak_exposure == Decimal("72140")
    assert result.breaches == [
        Breach(
            gate="max_exposure",
            limit=Decimal("10000"),
            peak=Decimal("72140"),
            opened_at=moment("17:22:35"),
            closed_at=None,
            first_sequence=4,
            last_sequence=None,
            opening_event_id=events[3].event_id,
            closing_event_id=None,
        ),
        Breach(
            gate="max_open_positions",
            limit=Decimal(5),
            peak=Decimal(12),
            opened_at=moment("17:26:15"),
            closed_at=None,
            first_sequence=7,
            last_sequence=None,
            opening_event_id=events[6].event_id,
            closing_event_id=None,
        ),
    ]
    assert fold(events, account=ACCOUNT).exposure == Decimal("21000")


def test_audit_document_when_incident_replayed_equals_design_shape() -> None:
    # Arrange
    result = audit(incident_history())

    # Act
    document = audit_document([result])

    # Assert
    assert document == {
        "accounts": [
            {
                "account": "large",
                "events": 19,
                "peak_open_positions": 12,
                "peak_exposure": "72140.00",
                "breaches": [
                    {
                        "gate": "max_exposure",
                        "limit": "10000.00",
                        "peak": "72140.00",
                        "from": "2026-02-03T17:22:35Z",
                        "first_sequence": 4,
                    },
                    {
                        "gate": "max_open_positions",
                        "limit": "5",
                        "peak": "12",
                        "from": "2026-02-03T17:26:15Z",
                        "first_sequence": 7,
                    },
                ],
                "reconciliations": [],
                "discrepancies": [],
            }
        ]
    }
    assert json.loads(json.dumps(document)) == document


def test_audit_document_when_intervals_closed_lists_them_with_to_in_order_of_opening() -> None:
    # Arrange: positions over at seq 4 (3 > 2) until seq 7; exposure over at seq 5 until seq 6.
    events = stream(
        limits(2, "10000", at=stamp("17:00:00")),
        fill("P-1", at=stamp("17:01:00"), quantity="10", price="3.00"),
        fill("P-2", at=stamp("17:02:00"), quantity="10", price="3.00"),
        fill("P-3", at=stamp("17:03:00"), quantity="10", price="3.00"),
        issue("I-1", at=stamp("17:04:00"), quantity="3", limit_price="4.005"),
        release("I-1", at=stamp("17:05:00")),
        close("P-3", at=stamp("17:06:00")),
    )

    # Act
    document = audit_document([audit(events)])

    # Assert: 9,000 + 1,201.50 pending = 10,201.50.
    assert document == {
        "accounts": [
            {
                "account": "large",
                "events": 7,
                "peak_open_positions": 4,
                "peak_exposure": "10201.50",
                "breaches": [
                    {
                        "gate": "max_open_positions",
                        "limit": "2",
                        "peak": "4",
                        "from": "2026-02-03T17:03:00Z",
                        "to": "2026-02-03T17:06:00Z",
                        "first_sequence": 4,
                    },
                    {
                        "gate": "max_exposure",
                        "limit": "10000.00",
                        "peak": "10201.50",
                        "from": "2026-02-03T17:04:00Z",
                        "to": "2026-02-03T17:05:00Z",
                        "first_sequence": 5,
                    },
                ],
                "reconciliations": [],
                "discrepancies": [],
            }
        ]
    }


def test_audit_document_when_money_has_half_cent_rounds_half_even() -> None:
    # Arrange: 1 x 100.125 x 100 = 10,012.50; the pending 1 x 0.00025 x 100 adds 0.025.
    events = stream(
        limits(5, "10000.005", at=stamp("17:00:00")),
        fill("P-1", at=stamp("17:01:00"), price="100.125"),
        issue("I-1", at=stamp("17:02:00"), quantity="1", limit_price="0.00025"),
    )

    # Act
    breach_document = audit_document([audit(events)])["accounts"][0]["breaches"][0]

    # Assert: exact halves go to the even cent (half-up would give 10000.01 and 10012.53).
    assert breach_document["limit"] == "10000.00"
    assert breach_document["peak"] == "10012.52"


# --- Window ---------------------------------------------------------------------------------------


def window_history() -> list[Event]:
    """Positions over limit 2 from seq 4 (17:03) to seq 7 (17:20), peak 4 at seq 5."""
    return stream(
        limits(2, BIG, at=stamp("17:00:00")),
        fill("P-1", at=stamp("17:01:00")),
        fill("P-2", at=stamp("17:02:00")),
        fill("P-3", at=stamp("17:03:00")),
        fill("P-4", at=stamp("17:05:00")),
        close("P-4", at=stamp("17:10:00")),
        close("P-3", at=stamp("17:20:00")),
        signal_evaluated("S-1", at=stamp("17:30:00")),
    )


def test_audit_when_interval_open_at_window_start_reports_it_from_first_event_inside() -> None:
    # Arrange
    events = window_history()

    # Act
    result = audit(events, window_from=moment("17:06:00"))

    # Assert: the 4 positions held when the window opened are its peak.
    assert result.events == 3
    assert result.peak_open_positions == 4
    assert result.breaches == [
        Breach(
            gate="max_open_positions",
            limit=Decimal(2),
            peak=Decimal(4),
            opened_at=moment("17:10:00"),
            closed_at=moment("17:20:00"),
            first_sequence=6,
            last_sequence=7,
            opening_event_id=events[5].event_id,
            closing_event_id=events[6].event_id,
        )
    ]
    assert [sample.sequence for sample in result.samples] == [6, 7, 8]


def test_audit_when_window_ends_inside_interval_reports_it_open_and_stops_reading() -> None:
    # Arrange
    events = window_history()
    finder = BreachFinder(ACCOUNT, window_to=moment("17:12:00"))

    # Act
    finder.feed_many(events)
    result = finder.finish()

    # Assert
    assert finder.done is True
    assert result.events == 6
    breach = only_breach(result)
    assert (breach.first_sequence, breach.last_sequence, breach.closed_at) == (4, None, None)
    assert breach.peak == Decimal(4)
    assert finder.state.sequence == 6


def test_audit_when_interval_ends_before_window_reports_nothing_but_counts_window_events() -> None:
    # Arrange
    events = window_history()

    # Act
    result = audit(events, window_from=moment("17:25:00"), window_to=moment("18:00:00"))

    # Assert
    assert result.breaches == []
    assert result.events == 1
    assert result.peak_open_positions == 2


def test_audit_when_window_starts_at_closing_event_reports_interval_of_that_event_only() -> None:
    # Arrange
    events = window_history()

    # Act
    breach = only_breach(audit(events, window_from=moment("17:20:00")))

    # Assert
    assert (breach.first_sequence, breach.last_sequence) == (7, 7)
    assert breach.opened_at == breach.closed_at == moment("17:20:00")
    assert (breach.limit, breach.peak) == (Decimal(2), Decimal(3))


def test_breach_finder_when_window_bound_naive_raises_value_error() -> None:
    # Act / Assert
    with pytest.raises(ValueError, match="window_from=2026-02-03T17:00:00 has no timezone"):
        BreachFinder(ACCOUNT, window_from=datetime(2026, 2, 3, 17, 0))


def test_breach_finder_when_window_from_after_window_to_raises_value_error() -> None:
    # Act / Assert
    with pytest.raises(ValueError, match="is after window_to=2026-02-03T17:00:00Z"):
        BreachFinder(ACCOUNT, window_from=moment("18:00:00"), window_to=moment("17:00:00"))


def test_breach_finder_when_samples_max_below_minimum_raises_value_error() -> None:
    # Act / Assert
    with pytest.raises(ValueError, match="samples_max=3 is too small"):
        BreachFinder(ACCOUNT, samples_max=3)


# --- Feeding --------------------------------------------------------------------------------------


def test_breach_finder_when_fed_one_by_one_or_in_chunks_equals_one_pass() -> None:
    # Arrange
    events = incident_history()
    single = BreachFinder(ACCOUNT)
    chunked = BreachFinder(ACCOUNT)

    # Act
    for event in events:
        single.feed(event)
    chunked.feed_many(events[:5])
    chunked.feed_many(iter(events[5:]))

    # Assert
    assert single.finish() == chunked.finish() == audit(events)


def test_breach_finder_when_finished_twice_and_fed_on_gives_consistent_results() -> None:
    # Arrange
    events = positions_history()
    finder = BreachFinder(ACCOUNT)
    finder.feed_many(events[:8])

    # Act
    first = finder.finish()
    again = finder.finish()
    finder.feed_many(events[8:])
    last = finder.finish()

    # Assert
    assert first == again
    assert first.breaches[0].closed_at is None
    assert last == audit(events)


def test_breach_finder_when_event_redelivered_skips_it_uncounted() -> None:
    # Arrange
    events = positions_history()
    redelivered = [*events[:7], events[6], events[3], *events[7:]]

    # Act
    result = audit(redelivered)

    # Assert
    assert result == audit(events)


def test_breach_finder_when_sequence_skips_ahead_raises_sequence_gap() -> None:
    # Arrange
    events = positions_history()
    finder = BreachFinder(ACCOUNT)

    # Act / Assert
    with pytest.raises(SequenceGap):
        finder.feed_many([events[0], events[2]])
    assert finder.state.sequence == 1


def test_breach_finder_when_event_of_other_account_raises_foreign_event() -> None:
    # Arrange
    foreign = stream(fill("P-1", at=stamp("17:00:00"), account="small"))[0]

    # Act / Assert
    with pytest.raises(ForeignEvent):
        BreachFinder(ACCOUNT).feed(foreign)


def test_breach_finder_state_when_fed_equals_fold_of_same_events() -> None:
    # Arrange
    events = incident_history()
    finder = BreachFinder(ACCOUNT)

    # Act
    finder.feed_many(events)

    # Assert
    assert finder.state == fold(events, account=ACCOUNT)


# --- Samples --------------------------------------------------------------------------------------


def test_audit_samples_when_few_events_has_one_exact_sample_per_event() -> None:
    # Arrange
    events = stream(
        fill("P-0", at=stamp("16:59:00")),
        limits(1, "150", at=stamp("17:00:00")),
        fill("P-1", at=stamp("17:01:00")),
        halt(at=stamp("17:02:00")),
    )

    # Act
    result = audit(events)

    # Assert
    assert result.samples == [
        Sample(
            sequence=1,
            occurred_at=moment("16:59:00"),
            positions=1,
            exposure=Decimal("100"),
            max_open_positions=None,
            max_exposure=None,
            halted=False,
        ),
        Sample(
            sequence=2,
            occurred_at=moment("17:00:00"),
            positions=1,
            exposure=Decimal("100"),
            max_open_positions=1,
            max_exposure=Decimal("150"),
            halted=False,
        ),
        Sample(
            sequence=3,
            occurred_at=moment("17:01:00"),
            positions=2,
            exposure=Decimal("200"),
            max_open_positions=1,
            max_exposure=Decimal("150"),
            halted=False,
        ),
        Sample(
            sequence=4,
            occurred_at=moment("17:02:00"),
            positions=2,
            exposure=Decimal("200"),
            max_open_positions=1,
            max_exposure=Decimal("150"),
            halted=True,
        ),
    ]


def test_audit_samples_when_more_events_than_bound_keeps_bound_peaks_and_breach_events() -> None:
    # Arrange: 21 events under samples_max 8; one breach opens at seq 13 (peak), closes at 14.
    events = stream(
        limits(2, BIG, at=stamp("17:00:00")),
        *(signal_evaluated(f"S-{n}", at=stamp("17:01:00")) for n in range(9)),
        fill("P-1", at=stamp("17:02:00")),
        fill("P-2", at=stamp("17:02:00"), quantity="2"),
        fill("P-3", at=stamp("17:03:00")),
        close("P-3", at=stamp("17:04:00")),
        *(signal_evaluated(f"T-{n}", at=stamp("17:05:00")) for n in range(7)),
    )
    finder = BreachFinder(ACCOUNT, samples_max=8)

    # Act
    finder.feed_many(events)
    result = finder.finish()

    # Assert
    assert len(result.samples) <= 8
    sequences = [sample.sequence for sample in result.samples]
    assert sequences == sorted(set(sequences))
    assert sequences[-1] == 21
    by_sequence = {sample.sequence: sample for sample in result.samples}
    assert by_sequence[13].positions == 3
    assert by_sequence[13].exposure == Decimal("400")
    assert by_sequence[14].positions == 2
    assert max(sample.positions for sample in result.samples) == result.peak_open_positions == 3


def test_audit_samples_when_twelve_thousand_events_stay_within_samples_max() -> None:
    # Arrange: 1,000 rounds of 12 events; each round goes to 4 positions against a limit of 3.
    templates = [
        fill("P-1", at=stamp("10:00:00")),
        fill("P-2", at=stamp("10:00:01")),
        fill("P-3", at=stamp("10:00:02")),
        *(signal_evaluated(f"S-{n}", at=stamp("10:00:03")) for n in range(3)),
        fill("P-4", at=stamp("10:00:04"), quantity="3"),
        close("P-4", at=stamp("10:00:05")),
        close("P-1", at=stamp("10:00:06")),
        close("P-2", at=stamp("10:00:07")),
        close("P-3", at=stamp("10:00:08")),
        signal_evaluated("S-9", at=stamp("10:00:09")),
    ]
    events = stream(limits(3, BIG, at=stamp("09:00:00")), *(templates * 1000))

    # Act
    result = audit(events)

    # Assert
    assert len(result.breaches) == 1000
    assert len(result.samples) <= SAMPLES_MAX
    assert result.samples[-1].sequence == 12001
    assert max(sample.positions for sample in result.samples) == 4
    assert max(sample.exposure for sample in result.samples) == Decimal("600")


# --- Discrepancies --------------------------------------------------------------------------------


def test_audit_when_a_fill_comes_after_its_intent_expired_reports_fill_after_expiry() -> None:
    # Arrange: the intent expires at 17:06 (released by IntentExpired), its fill comes at 17:07;
    # another fill comes for a pending intent past its expiry, before any IntentExpired.
    events = stream(
        limits(5, BIG, at=stamp("17:00:00")),
        issue("I-1", at=stamp("17:01:00")),
        unstored("IntentExpired", {"intent_id": "I-1", "reason": "ttl"}, stamp("17:06:00")),
        fill("P-1", at=stamp("17:07:00"), intent_id="I-1"),
        issue("I-2", at=stamp("17:08:00"), expires_at=stamp("17:10:00")),
        fill("P-2", at=stamp("17:20:00"), intent_id="I-2"),
        issue("I-3", at=stamp("17:21:00")),
        fill("P-3", at=stamp("17:22:00"), intent_id="I-3"),
    )

    # Act
    result = audit(events)

    # Assert
    assert [(d.kind, d.sequence, d.intent_id) for d in result.discrepancies] == [
        ("fill_after_expiry", 4, "I-1"), ("fill_after_expiry", 6, "I-2")]
    document = audit_document([result])["accounts"][0]["discrepancies"]
    assert document[0] == {"kind": "fill_after_expiry", "sequence": 4,
                           "at": "2026-02-03T17:07:00Z", "position_id": "P-1",
                           "intent_id": "I-1", "fill_id": "X-P-1-2026-02-03T17:07:00Z",
                           "close_id": None, "reported": None, "ledger": None,
                           "reason": "fill X-P-1-2026-02-03T17:07:00Z for intent I-1, which "
                                     "was expired",
                           "recorded": False}
