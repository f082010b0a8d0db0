"""The book per account as Prometheus gauges, kept by the projector from the states it folds.

Every figure is the fold's own (projections/fold.py: the properties the gates count), so a
gauge can never disagree with `ledger positions` once the projection is at the head; how far
it is behind is `ledger_projection_lag_events`. Money goes to the gauge as a float only here, at
the edge: Prometheus stores doubles, and a gauge is for charts and alerts, never for decisions.
The seconds since the last decision and the last reconciliation are computed at scrape time, so
they keep growing while nothing happens, which is when an operator needs them.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import get_args

from ledger import metrics
from ledger.events import Event
from projections.fold import AccountState, Limits, TradingState

_STATES: tuple[TradingState, ...] = get_args(TradingState)
_LIMIT_NAMES = tuple(Limits.__dataclass_fields__)
DECISION_EVENT = "SignalEvaluated"
RECONCILED_EVENT = "PositionsReconciled"
RECONCILIATION_FAILED_EVENT = "ReconciliationFailed"


@dataclass(frozen=True, kw_only=True)
class Mark:
    """A moment or a flag seen at a sequence: a later sequence replaces it, an earlier never."""

    sequence: int
    value: float


class AccountGauges:
    """Sets the per-account gauges; safe against an older state arriving after a newer one."""

    def __init__(self) -> None:
        self._shown: dict[str, int] = {}
        self._decided: dict[str, Mark] = {}
        self._reconciled: dict[str, float] = {}
        self._failed: dict[str, Mark] = {}

    def behind(self, applied: dict[str, int]) -> list[str]:
        """Return the accounts whose gauges were never set, or set at a sequence before the
        projection's `applied` one (another projector of the group applied it since)."""
        return [account for account, sequence in applied.items()
                if self._shown.get(account, -1) < sequence]

    def show(self, state: AccountState, events: Iterable[Event] = ()) -> None:
        """Set the account's gauges from a folded state and the events folded into it."""
        account = state.account
        for event in events:
            self.note(account, event.type, event.sequence or 0, event.occurred_at)
        if state.sequence < self._shown.get(account, -1):
            return
        first = account not in self._shown
        self._shown[account] = state.sequence
        metrics.OPEN_POSITIONS.labels(account).set(state.open_positions)
        metrics.PENDING_INTENTS.labels(account).set(len(state.pending))
        metrics.POSITIONS_COUNTED.labels(account).set(state.open_positions + state.pending_count)
        metrics.OPEN_EXPOSURE.labels(account).set(float(state.open_exposure))
        metrics.PENDING_EXPOSURE.labels(account).set(float(state.pending_exposure))
        metrics.EXPOSURE.labels(account).set(float(state.exposure))
        _show_limits(account, state.limits)
        for name in _STATES:
            metrics.TRADING_STATE.labels(account, name).set(int(state.trading_state == name))
        if state.reconciled_as_of is not None:
            self._reconciled[account] = state.reconciled_as_of.timestamp()
        if first:
            metrics.SINCE_DECISION.labels(account).set_function(
                _since(lambda: _value(self._decided.get(account))))
            metrics.SINCE_RECONCILIATION.labels(account).set_function(
                _since(lambda: self._reconciled.get(account)))
            metrics.RECONCILIATION_FAILED.labels(account).set_function(
                lambda: _value(self._failed.get(account)) or 0.0)

    def note(self, account: str, event_type: str, sequence: int, occurred_at: datetime) -> None:
        """Take a decision or a reconciliation outcome the store holds at `sequence`."""
        if event_type == DECISION_EVENT:
            _keep_later(self._decided, account, Mark(sequence=sequence,
                                                     value=occurred_at.timestamp()))
        elif event_type in (RECONCILED_EVENT, RECONCILIATION_FAILED_EVENT):
            failed = 1.0 if event_type == RECONCILIATION_FAILED_EVENT else 0.0
            _keep_later(self._failed, account, Mark(sequence=sequence, value=failed))


def _show_limits(account: str, limits: Limits | None) -> None:
    for name in _LIMIT_NAMES:
        value = None if limits is None else getattr(limits, name)
        if value is None:
            # A limit cleared since the last scrape must not linger at its old value.
            with contextlib.suppress(KeyError):
                metrics.LIMIT.remove(account, name)
        else:
            metrics.LIMIT.labels(account, name).set(float(value))


def _keep_later(marks: dict[str, Mark], account: str, mark: Mark) -> None:
    known = marks.get(account)
    if known is None or mark.sequence > known.sequence:
        marks[account] = mark


def _value(mark: Mark | None) -> float | None:
    return None if mark is None else mark.value


def _since(moment: Callable[[], float | None]) -> Callable[[], float]:
    def seconds() -> float:
        at = moment()
        return math.inf if at is None else max(0.0, time.time() - at)

    return seconds
