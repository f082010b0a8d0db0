"""Goal: the projector's book gauges show the newest state they were given, whatever order the
states arrive in, drop a limit that was cleared, and count time since the last decision and
reconciliation from the events folded.

Method: fold factory events into states and hand them to AccountGauges; read the gauges back
from prometheus-client's registry.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime

from prometheus_client import REGISTRY

from ledger.events import Event, decode_event
from projections.account_metrics import AccountGauges
from projections.fold import fold
from tests.factories import event_json, fill, limits


def _gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def _sequenced(events: list[Event], start: int = 1) -> list[Event]:
    return [event.model_copy(update={"sequence": start + index})
            for index, event in enumerate(events)]


def test_an_older_state_after_a_newer_one_changes_nothing() -> None:
    account = f"g_{uuid.uuid4().hex[:8]}"
    events = _sequenced([limits(account, 5, "10000"), fill(account, "X-1", quantity="2"),
                         fill(account, "X-2", position_id="P-2")])
    older = fold(events[:2], account=account)
    newer = fold(events, account=account)
    gauges = AccountGauges()

    gauges.show(newer)
    gauges.show(older)

    assert _gauge("ledger_account_open_positions", account=account) == 2.0
    assert _gauge("ledger_account_exposure_dollars", account=account) == 1800.0
    assert _gauge("ledger_account_limit", account=account, limit="max_exposure") == 10000.0
    assert _gauge("ledger_account_limit", account=account, limit="max_order_notional") is None
    assert _gauge("ledger_account_trading_state", account=account, state="active") == 1.0
    assert _gauge("ledger_account_trading_state", account=account, state="halted") == 0.0


def test_a_cleared_limit_disappears_and_a_set_one_appears() -> None:
    account = f"g_{uuid.uuid4().hex[:8]}"
    with_order = decode_event(event_json(account, "LimitsSet", {
        "max_open_positions": 5, "max_exposure": "10000", "max_order_notional": "2500"}))
    events = _sequenced([with_order, limits(account, 5, "10000")])
    gauges = AccountGauges()

    gauges.show(fold(events[:1], account=account))
    before = _gauge("ledger_account_limit", account=account, limit="max_order_notional")
    gauges.show(fold(events, account=account))

    assert before == 2500.0
    assert _gauge("ledger_account_limit", account=account, limit="max_order_notional") is None


def test_seconds_since_count_from_the_last_decision_and_reconciliation() -> None:
    account = f"g_{uuid.uuid4().hex[:8]}"
    gauges = AccountGauges()
    gauges.show(fold(_sequenced([limits(account)]), account=account))
    never_decided = _gauge("ledger_account_seconds_since_last_decision", account=account)
    never_reconciled = _gauge("ledger_account_seconds_since_reconciliation", account=account)
    an_hour_ago = datetime.now(UTC).timestamp() - 3600

    gauges.note(account, "SignalEvaluated", 5, datetime.fromtimestamp(an_hour_ago, UTC))
    gauges.note(account, "SignalEvaluated", 4, datetime.now(UTC))  # older in the stream
    gauges.note(account, "ReconciliationFailed", 6, datetime.now(UTC))
    failed = _gauge("ledger_account_reconciliation_failed", account=account)
    gauges.note(account, "PositionsReconciled", 7, datetime.now(UTC))

    assert never_decided == math.inf
    assert never_reconciled == math.inf
    since = _gauge("ledger_account_seconds_since_last_decision", account=account)
    assert since is not None
    assert 3600 <= since < 3700
    assert failed == 1.0
    assert _gauge("ledger_account_reconciliation_failed", account=account) == 0.0


def test_behind_names_the_accounts_never_shown_or_shown_before_the_projection() -> None:
    """Another projector of the group moved `moved` on: this one's gauges for it are old."""
    shown, moved, never = (f"g_{uuid.uuid4().hex[:8]}" for _ in range(3))
    gauges = AccountGauges()
    for account in (shown, moved):
        gauges.show(fold(_sequenced([limits(account)]), account=account))

    stale = gauges.behind({shown: 1, moved: 4, never: 0})

    assert stale == [moved, never]
