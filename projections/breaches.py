"""Limit breaches of one account, found by replaying its stored events through the one fold.

This module owns what the audit finds: `BreachFinder`, which replays one account's stored events
(in sequence order) through `projections.fold` and records every interval in which a limit in
force was exceeded, every reconciliation with the broker and every discrepancy; the records it
returns (`Breach`, `Sample`, `Reconciliation`, `Discrepancy`, `AccountAudit`); and the
`audit --json` document of docs/design.md (`audit_document`), whose one rounding step (money to
cents, half-even) happens here, at the edge. It is pure: no clock, no I/O, no logging. It must
not import asyncpg, aiokafka, faststream, `time`, `os`, `logging`, or any project module other than
`ledger.events`, `ledger.money`, `projections.fold`, `projections.rules` and
`projections.executions`.

What counts as a breach, after each event, with the limits in force after that event:

- `max_open_positions`: open positions + pending intents > max_open_positions.
- `max_exposure`: open exposure + pending exposure > max_exposure.
- `max_order_notional`: the event is an `IntentIssued` (|quantity| x limit_price x multiplier) or
  an `OrderFilled` (|quantity| x price x multiplier) whose notional is > max_order_notional.
  Consecutive such events extend one interval; the next event that is not one closes it.
- `daily_loss_limit`: the loss realised on the audit's current trading day is > daily_loss_limit.
  The current day is the trading day (`projections.fold.trading_day`, the gates' definition of
  "today") of the latest `occurred_at` replayed so far: the day a decision taken at that point
  is judged by. A late report stamped with an earlier day is booked on its own day by the fold,
  and neither rewinds the current day nor closes the interval; the first event of a new day
  does.
- `trading_halted`: an `IntentIssued` or `OrderFilled` applied while the account is halted opens
  the interval; it stays open while the account stays halted and closes at the event that lifts
  the halt (`TradingResumed`), so it spans the whole time the kill switch was being ignored. Its
  limit is 0 and its peak is the number of such orders in the interval.
- `max_order_rate`: the event is an `IntentIssued` and the intents issued in the 60 s up to and
  including it (`RATE_WINDOW`: those of `AccountState.intents_since(occurred_at - RATE_WINDOW)`
  before it, plus itself: the figure the gates judged when they issued it) are >
  max_orders_per_minute. The rate is a property of the intents, not of the events between them:
  other events neither extend nor close the interval; the next `IntentIssued` within the limit
  closes it, and so does a `LimitsSet` whose limit (cleared: no limit) the last intent's figure is
  within. A `LimitsSet` alone never opens one.
- `max_underlying_exposure`: the highest open + pending exposure on any single underlying
  (`ledger.events.underlying`, as `AccountState.exposure_on`) is > max_underlying_exposure,
  after every event, as for `max_exposure`.
- `duplicate_order`: the event is an `IntentIssued` with the same symbol, side, quantity and limit
  price as intents issued within the `duplicate_window_s` before it (occurred_at > its
  occurred_at - the window, as the gates look back); its figure is how many, its limit 0. Like the
  rate, the next `IntentIssued` that duplicates nothing closes the interval, and so does a
  `LimitsSet` that clears the window; other events leave it as it is.

The rate and duplicate figures read the intents the fold keeps (`AccountState.recent_intents`),
the very list the gates read, so the audit judges each intent as the gates did when it was issued.

Until limits are first set nothing is a breach (not even an order while halted): the audit
measures an account against its limits, and an account without any never had gates. An interval
opens at the first event that puts the account over a limit (a `LimitsSet` that lowers a limit
can open one) and closes at the event that brings it back within (a `LimitsSet` that raises it
can close one). Its limit is the one in force when it opened; its peak the highest value in it.
A duplicate event (a sequence already applied) changes nothing and is not counted.

Window: the events before `window_from` are folded, so the state is right, but neither counted
nor reported; the window is the run of sequences from the first event with occurred_at >=
window_from up to, excluding, the first event with occurred_at > window_to, after which nothing
more is read (`done`). An interval open when the window starts is reported as opening at the
window's first event, with the limit in force and the value reached just before it (its peak
starts there), even if that first event already closes it; the account's peaks likewise start
from the figures in force when the window starts. An interval open at the end of the window has
no closing event. A window with no event in it reports no event, no breach and peaks of 0.

Reconciliations and discrepancies, in the window, in sequence order:

- `reconciliations`: every `PositionsReconciled` (matched) and `ReconciliationFailed` (with its
  differences), as stored: the audit does not compare positions again, it lists the outcomes.
- `discrepancies`: what `projections.executions.discrepancies`, the very function ingest records
  `DiscrepancyFound`s with, finds for each `OrderFilled` and `PositionClosed`, judged on the
  positions and pending intents just before it and on the fates of the intents no longer
  pending (`IntentExpired`, `IntentRejected`, `IntentCancelled`: the first one on record for an
  intent, as `ledger.store.intent_fates`). So the audit finds them in any history, including one
  imported without `DiscrepancyFound` events; each is `recorded` when a `DiscrepancyFound` with
  the same execution and kind follows it in the stream (ingest appends it right after). The
  fates are kept for the latest `FATES_KEPT_MAX` intents that ended (a fill comes minutes after
  its intent, not thousands of intents later), before the window as in it.

Memory is bounded whatever the number of events: the finder keeps one fold state (with its
figures per position, intent and underlying, and an index of the fold's recent intents), one open
interval per gate, the breaches found, at most `samples_max` samples (see `Sample`), at most
`FATES_KEPT_MAX` fates, and the first `FINDINGS_MAX` reconciliations and the first
`FINDINGS_MAX` discrepancies of the window, the reconciliations with at most
`DIFFERENCES_KEPT_MAX` differences in all (a failure that repeats the differences of the one
before shares them, and costs nothing). What is found beyond these bounds is counted, not kept
(`AccountAudit.reconciliations_omitted`, `discrepancies_omitted`): once one is left out, so is
every later one, so that what is listed is always the window's first.
"""

from __future__ import annotations

import decimal
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal, Protocol, TypeAlias

from ledger.events import (
    DECIMAL_CONTEXT,
    SNAPSHOT_POSITIONS_MAX,
    Difference,
    DiscrepancyFound,
    DiscrepancyFoundEvent,
    DiscrepancyKind,
    Event,
    IntentCancelledEvent,
    IntentExpiredEvent,
    IntentFate,
    IntentIssuedEvent,
    IntentRejectedEvent,
    OrderFilledEvent,
    PositionClosedEvent,
    PositionsReconciledEvent,
    ReconciliationFailedEvent,
    Side,
    format_decimal,
    format_time,
    notional,
    underlying,
)
from ledger.money import money_json
from projections.executions import discrepancies
from projections.fold import (
    RATE_WINDOW,
    AccountState,
    Folding,
    Limits,
    RecentIntent,
    initial_state,
    trading_day,
)

# The finder folds every event through the fold's own step into one long-lived draft: `apply`
# freezes a whole new state per event, which alone caps a replay below the audit's budget of
# 150k events/s. It is the very same fold (one fold, one set of figures); only the copying is
# skipped. tests/properties/test_breach_properties.py checks that the finder's state equals
# `fold` of the same events, so a change to these internals cannot go unnoticed.
from projections.rules import COUNT_GATES, RULES, LimitRule

__all__ = [
    "DIFFERENCES_KEPT_MAX",
    "FATES_KEPT_MAX",
    "FINDINGS_MAX",
    "GATES",
    "SAMPLES_MAX",
    "SAMPLES_MAX_MIN",
    "AccountAudit",
    "Breach",
    "BreachFinder",
    "Discrepancy",
    "Gate",
    "Reconciliation",
    "Sample",
    "audit_document",
    "audit_events",
    "has_breach",
]

Gate: TypeAlias = Literal[
    "max_open_positions",
    "max_exposure",
    "max_order_notional",
    "daily_loss_limit",
    "trading_halted",
    "max_order_rate",
    "max_underlying_exposure",
    "duplicate_order",
]
# In this order breaches that open at the same event are listed.
GATES: Final[tuple[Gate, ...]] = (
    "max_open_positions",
    "max_exposure",
    "max_order_notional",
    "daily_loss_limit",
    "trading_halted",
    "max_order_rate",
    "max_underlying_exposure",
    "duplicate_order",
)
(_POSITIONS, _EXPOSURE, _ORDER, _DAILY_LOSS, _HALTED, _RATE, _UNDERLYING,
 _DUPLICATE) = range(len(GATES))
_GATE_RANK: Final[dict[Gate, int]] = {gate: rank for rank, gate in enumerate(GATES)}
# The limit rules the gates evaluate (projections/rules.py), replayed here after each event. The
# positions limit is an int in `Limits`: compared as is, by the rule's own comparison.
_POSITIONS_BREACHED = RULES["max_open_positions"].breached
_EXPOSURE_RULE = RULES["max_exposure"]
_ORDER_RULE = RULES["max_order_notional"]
_LOSS_RULE = RULES["daily_loss_limit"]
_RATE_RULE = RULES["max_order_rate"]
_UNDERLYING_RULE = RULES["max_underlying_exposure"]
_DUPLICATE_RULE = RULES["duplicate_order"]

# One sample per event up to this many, then thinned (see Sample): a plot needs no more points
# than a screen has pixels across, and the audit must stay bounded at a million events.
SAMPLES_MAX = 5000
# Thinning halves the samples; below this there is nothing sensible left to halve.
SAMPLES_MAX_MIN = 4
# Intents that ended unfilled (expired, rejected, cancelled) whose fate the audit remembers, to
# recognise a fill that comes after: the latest ones (a fill comes minutes after its intent).
FATES_KEPT_MAX = 100_000
# Reconciliations, and discrepancies, listed per account: the window's first ones (one per plot
# sample, as many as SAMPLES_MAX); the rest are counted. A reconciliation per minute is 1,440 a day.
FINDINGS_MAX = SAMPLES_MAX
# Differences of failed reconciliations kept per account, in all: one full broker snapshot's worth.
DIFFERENCES_KEPT_MAX = SNAPSHOT_POSITIONS_MAX
# Symbols whose underlying the audit remembers, rather than work it out for every fill.
_SYMBOLS_KEPT_MAX = 10_000

_ZERO = Decimal("0")
_ORDER_TYPES: Final[frozenset[type]] = frozenset({OrderFilledEvent, IntentIssuedEvent})
# The events the audit notes besides folding them: an intent's fate, a reconciliation's outcome,
# a recorded discrepancy.
_NOTED_TYPES: Final[frozenset[type]] = frozenset({
    IntentExpiredEvent, IntentRejectedEvent, IntentCancelledEvent, PositionsReconciledEvent,
    ReconciliationFailedEvent, DiscrepancyFoundEvent})
_FATE_OF: Final[dict[type, IntentFate]] = {
    IntentExpiredEvent: "expired", IntentRejectedEvent: "rejected",
    IntentCancelledEvent: "cancelled"}
# Counts (positions, orders while halted) stay ints while tracked; money is Decimal.
_Figure: TypeAlias = Decimal | int
# The two kinds of holdings _Underlyings keeps: open positions and pending intents.
_POSITIONS_KIND, _INTENTS_KIND = 0, 1
# What makes two intents duplicates (dispatcher.gates): symbol, side, quantity, limit price.
_IntentKey: TypeAlias = tuple[str, Side, Decimal, Decimal]

# --- Records ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Breach:
    """One interval in which a gate's limit was exceeded; closed_at None means still open."""

    gate: Gate
    limit: Decimal
    peak: Decimal
    opened_at: datetime
    closed_at: datetime | None
    first_sequence: int
    last_sequence: int | None
    opening_event_id: uuid.UUID
    closing_event_id: uuid.UUID | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """A point to plot: the figures up to the event at `sequence`, against the limits in force.

    Up to `samples_max` events in the window there is one sample per event, with that event's
    figures. Beyond that a sample stands for a run of consecutive events ending at its own:
    positions and exposure are their maxima (so no peak disappears from a plot), limits and
    halted are as after its own event. An event that opens or closes a breach keeps a sample of
    its own, unless such events alone would exceed the bound.
    """

    sequence: int
    occurred_at: datetime
    positions: int
    exposure: Decimal
    max_open_positions: int | None
    max_exposure: Decimal | None
    halted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountAudit:
    """What an audit found for one account within the window."""

    account: str
    # Events replayed in the window (duplicates and events before the window not counted).
    events: int
    # The highest open + pending figures in the window, including those in force as it starts.
    peak_open_positions: int
    peak_exposure: Decimal
    # In order of opening; of two opening at one event, in the order of GATES.
    breaches: list[Breach]
    samples: list[Sample]
    # Executions the ledger disagrees with, in sequence order (of one execution, in the order
    # `projections.executions.discrepancies` gives): the window's first FINDINGS_MAX.
    discrepancies: list[Discrepancy] = field(default_factory=list)
    # The reconciliations with the broker, in sequence order: the window's first FINDINGS_MAX,
    # with at most DIFFERENCES_KEPT_MAX differences in all.
    reconciliations: list[Reconciliation] = field(default_factory=list)
    # Found in the window beyond those bounds: counted, not listed.
    discrepancies_omitted: int = 0
    reconciliations_omitted: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Discrepancy:
    """An execution the ledger disagrees with (`projections.executions.discrepancies`).

    The broker's truth, recorded as reported, but it contradicts what the ledger held: a close
    beyond what is open or of a position it does not hold, a fill for an intent that expired,
    was rejected or cancelled, or beyond its intent's quantity or limit price. The room it takes
    was never reserved, so it may have put the account over its limits. `reported` is the
    broker's figure and `ledger` the ledger's (None when the kind has none); `recorded` is True
    when the store holds the `DiscrepancyFound` for it (same execution and kind, after it).
    """

    kind: DiscrepancyKind
    # The execution's sequence and time.
    sequence: int
    occurred_at: datetime
    # Its natural key (`DiscrepancyFound.execution`).
    execution: str
    position_id: str
    intent_id: str | None
    # The broker's execution id: fill_id for an OrderFilled, close_id (if any) for a close.
    fill_id: str | None
    close_id: str | None
    reported: Decimal | None
    ledger: Decimal | None
    reason: str
    recorded: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconciliation:
    """A reconciliation's outcome as stored: a `PositionsReconciled` (matched) or a
    `ReconciliationFailed` with its differences (broker's and ledger's open quantities)."""

    sequence: int
    occurred_at: datetime
    # The broker's positions as of this time were compared with the ledger's at `head`.
    as_of: datetime
    head: int
    matched: bool
    differences: tuple[Difference, ...] = ()


# --- Finder -------------------------------------------------------------------------------------


class _Interval:
    """A breach interval still open: where it opened, its limit, and its values so far."""

    __slots__ = (
        "first_sequence",
        "gate",
        "limit",
        "limit_now",
        "opened_at",
        "opening_event_id",
        "peak",
        "value",
    )

    def __init__(
        self, gate: Gate, value: _Figure, limit: _Figure, event: Event, sequence: int
    ) -> None:
        self.gate = gate
        self.limit = limit
        self.peak = value
        # The latest value and limit: an interval still open when the window starts is
        # reported from there with these.
        self.value = value
        self.limit_now = limit
        self.opened_at = event.occurred_at
        self.first_sequence = sequence
        self.opening_event_id = event.event_id

    def extend(self, value: _Figure, limit: _Figure) -> None:
        self.value = value
        self.limit_now = limit
        if value > self.peak:
            self.peak = value

    def rebase(self, event: Event, sequence: int) -> None:
        """Make the interval open at event, as it was just before it: the window starts there."""
        self.limit = self.limit_now
        self.peak = self.value
        self.opened_at = event.occurred_at
        self.first_sequence = sequence
        self.opening_event_id = event.event_id

    def breach(self, closing: Event | None, sequence: int | None) -> Breach:
        return Breach(
            gate=self.gate,
            limit=Decimal(self.limit),
            peak=Decimal(self.peak),
            opened_at=self.opened_at,
            closed_at=None if closing is None else closing.occurred_at,
            first_sequence=self.first_sequence,
            last_sequence=sequence,
            opening_event_id=self.opening_event_id,
            closing_event_id=None if closing is None else closing.event_id,
        )


class BreachFinder:
    """Replay one account's stored events, in sequence order, and find its limit breaches.

    Feed events with `feed` or `feed_many` (in as many chunks as suits the reader: the result is
    the same), then call `finish`. Memory stays bounded however many events are fed.
    """

    def __init__(
        self,
        account: str,
        *,
        window_from: datetime | None = None,
        window_to: datetime | None = None,
        samples_max: int = SAMPLES_MAX,
    ) -> None:
        """Start an audit of account over the window [window_from, window_to] (None: unbounded).

        Raises:
            ValueError: a window bound is naive, window_from is after window_to, or samples_max
                is below SAMPLES_MAX_MIN.
        """
        _check_window(window_from, window_to)
        if samples_max < SAMPLES_MAX_MIN:
            raise ValueError(
                f"samples_max={samples_max} is too small: expected at least {SAMPLES_MAX_MIN}"
            )
        self._window_from = window_from
        self._window_to = window_to
        self._draft = Folding(initial_state(account))
        # Each position's and pending intent's notional, in the fold's own key order, so that the
        # sums below are the very digits AccountState.open_exposure / pending_exposure give.
        self._position_notionals: dict[str, Decimal] = {}
        self._intent_notionals: dict[str, Decimal] = {}
        self._open_exposure = _ZERO
        self._pending_exposure = _ZERO
        # The same figures per underlying, and an index of the fold's recent intents: what the
        # underlying-exposure, order-rate and duplicate-order rules are judged on. Kept only
        # while such a limit is in force, built from the fold's state when one is set.
        self._underlyings: _Underlyings | None = None
        self._recent: _RecentIndex | None = None
        self._limits_in_force: _InForce | None = None
        # The trading day of the latest event replayed: the day a decision taken now is judged
        # by (a decision is stamped when it is made, after everything before it).
        self._today: date | None = None
        self._done = False
        self._in_window = False
        self._events = 0
        self._peak_positions = 0
        self._peak_exposure = _ZERO
        self._intervals: list[_Interval | None] = [None] * len(GATES)
        # Intervals opened or closed so far: tells which events open or close one.
        self._changes = 0
        self._breaches: list[Breach] = []
        # How the intents that ended unfilled ended, oldest first (a dict keeps the order).
        self._fates: dict[str, IntentFate] = {}
        self._discrepancies: list[Discrepancy] = []
        self._discrepancies_omitted = 0
        # (execution, kind) -> index in _discrepancies, until its DiscrepancyFound is read.
        self._unrecorded: dict[tuple[str, str], int] = {}
        self._reconciliations: list[Reconciliation] = []
        self._reconciliations_omitted = 0
        self._differences_kept = 0
        # The differences of the last failed reconciliation kept: a repeat shares them.
        self._last_differences: tuple[Difference, ...] = ()
        self._sampler = _Sampler(samples_max)

    @property
    def done(self) -> bool:
        """Return True once an event after window_to arrived: nothing more will be read."""
        return self._done

    @property
    def state(self) -> AccountState:
        """Return the account's state after the events folded so far (a copy)."""
        return self._draft.snapshot()

    def feed(self, event: Event) -> None:
        """Fold one stored event and check every gate after it.

        Raises:
            ForeignEvent, UnsequencedEvent, SequenceGap: as `projections.fold.apply`.
        """
        with decimal.localcontext(DECIMAL_CONTEXT):
            self._feed(event)

    def feed_many(self, events: Iterable[Event]) -> None:
        """Fold stored events in order, checking every gate after each one.

        Raises:
            ForeignEvent, UnsequencedEvent, SequenceGap: as `projections.fold.apply`; the events
                before the bad one stay applied.
        """
        feed = self._feed
        with decimal.localcontext(DECIMAL_CONTEXT):
            for event in events:
                feed(event)

    def finish(self) -> AccountAudit:
        """Return the audit of the events fed so far; feeding may go on afterwards."""
        breaches = list(self._breaches)
        if self._in_window:
            breaches += [
                interval.breach(None, None) for interval in self._intervals if interval is not None
            ]
        breaches.sort(key=lambda breach: (breach.first_sequence, _GATE_RANK[breach.gate]))
        return AccountAudit(
            account=self._draft.account,
            events=self._events,
            peak_open_positions=self._peak_positions,
            peak_exposure=self._peak_exposure,
            breaches=breaches,
            samples=self._sampler.snapshot(),
            discrepancies=list(self._discrepancies),
            reconciliations=list(self._reconciliations),
            discrepancies_omitted=self._discrepancies_omitted,
            reconciliations_omitted=self._reconciliations_omitted,
        )

    # --- One event ------------------------------------------------------------------------------

    def _feed(self, event: Event) -> None:
        if self._done:
            return
        draft = self._draft
        sequence = draft.accepts(event)
        if sequence is None:
            return
        at = event.occurred_at
        if self._window_to is not None and at > self._window_to:
            self._done = True
            return
        if not self._in_window and (self._window_from is None or at >= self._window_from):
            self._enter_window(event, sequence)
        day = trading_day(at)
        if self._today is None or day > self._today:
            self._today = day
        position_id, intent_id = _touched(event)
        event_type = type(event)
        if event_type is OrderFilledEvent or event_type is PositionClosedEvent:
            # Judged on the state just before it, as ingest judged it.
            if self._in_window:
                found = discrepancies(draft.positions, draft.pending, self._fates, event)
                if found:
                    self._found(event, sequence, found)
        elif event_type in _NOTED_TYPES:
            self._note(event, sequence)
        rate: int | None = None
        duplicates: int | None = None
        index = self._recent
        if index is not None and type(event) is IntentIssuedEvent:
            # Judged on the intents issued before it, as the gates judged the decision.
            recent = draft.recent_intents
            before = len(recent)
            key = _intent_key(event)
            # Kept only while limits are in force: the ones of the last LimitsSet.
            in_force = self._limits_in_force
            assert in_force is not None
            assert in_force.limits is draft.limits
            if in_force.rate is not None:
                rate = index.count_since(recent, at - RATE_WINDOW) + 1
            if in_force.duplicate_window is not None:
                duplicates = index.same_since(key, at - in_force.duplicate_window)
            draft.step(event, sequence)
            index.issued(recent, before, key)
        else:
            draft.step(event, sequence)
        underlyings = self._underlyings
        if position_id is not None:
            position = draft.positions.get(position_id)
            figure = None if position is None else position.notional
            self._open_exposure = _synced(self._position_notionals, position_id, figure)
            if underlyings is not None:
                underlyings.change(_POSITIONS_KIND, position_id, position, figure)
        if intent_id is not None:
            intent = draft.pending.get(intent_id)
            if intent is not None and intent.reducing:
                # It reserves nothing (AccountState.pending_exposure): as if not pending.
                intent = None
            figure = None if intent is None else intent.notional
            self._pending_exposure = _synced(self._intent_notionals, intent_id, figure)
            if underlyings is not None:
                underlyings.change(_INTENTS_KIND, intent_id, intent, figure)
        # The intents that reserve capacity are those _intent_notionals holds.
        positions = len(draft.positions) + len(self._intent_notionals)
        exposure = self._open_exposure + self._pending_exposure
        changes = self._changes
        limits = draft.limits
        if limits is not None:
            in_force = self._limits_in_force
            # New limits come with a LimitsSet, and only then is the new Limits read.
            changed = in_force is None or in_force.limits is not limits
            if changed:
                in_force = self._limits_in_force = _InForce(limits)
                self._follow(in_force)
            assert in_force is not None
            self._check_gates(event, sequence, in_force, positions, exposure)
            if changed or rate is not None or duplicates is not None:
                self._check_intent_gates(event, sequence, in_force, rate, duplicates)
        if not self._in_window:
            return
        self._events += 1
        if positions > self._peak_positions:
            self._peak_positions = positions
        if exposure > self._peak_exposure:
            self._peak_exposure = exposure
        # An event that opened or closed an interval keeps a sample of its own.
        pinned = self._changes != changes
        self._sampler.add(sequence, at, positions, exposure, draft.limits, draft.halted, pinned)

    def _follow(self, in_force: _InForce) -> None:
        """Keep what the new limits' rules need, built from the fold's state; drop the rest."""
        draft = self._draft
        if in_force.underlying is None:
            self._underlyings = None
        elif self._underlyings is None:
            self._underlyings = underlyings = _Underlyings()
            # In the fold's own order, so that every sum is the one the fold's state gives.
            for position_id, position in draft.positions.items():
                underlyings.change(_POSITIONS_KIND, position_id, position, position.notional)
            for intent_id, intent in draft.pending.items():
                if not intent.reducing:
                    underlyings.change(_INTENTS_KIND, intent_id, intent, intent.notional)
        if in_force.rate is None and in_force.duplicate is None:
            self._recent = None
        elif self._recent is None:
            self._recent = _RecentIndex(draft.recent_intents)

    def _found(self, event: Event, sequence: int, found: list[DiscrepancyFound]) -> None:
        """Keep the discrepancies found at an execution in the window, while within the bound."""
        kept = self._discrepancies
        fill_id: str | None = None
        close_id: str | None = None
        if type(event) is OrderFilledEvent:
            fill_id = event.data.fill_id
        else:
            assert type(event) is PositionClosedEvent, type(event)
            close_id = event.data.close_id
        for discrepancy in found:
            if len(kept) >= FINDINGS_MAX:
                self._discrepancies_omitted += 1
                continue
            self._unrecorded[(discrepancy.execution, discrepancy.kind)] = len(kept)
            kept.append(Discrepancy(
                kind=discrepancy.kind, sequence=sequence, occurred_at=event.occurred_at,
                execution=discrepancy.execution, position_id=discrepancy.position_id,
                intent_id=discrepancy.intent_id, fill_id=fill_id, close_id=close_id,
                reported=discrepancy.reported, ledger=discrepancy.ledger,
                reason=discrepancy.reason))

    def _note(self, event: Event, sequence: int) -> None:
        """Note an intent's fate, a reconciliation, or that a discrepancy found is recorded."""
        event_type = type(event)
        fate = _FATE_OF.get(event_type)
        if fate is not None:
            assert isinstance(event, IntentExpiredEvent | IntentRejectedEvent
                              | IntentCancelledEvent), event_type
            fates = self._fates
            intent_id = event.data.intent_id
            # The first end on record is how it ended (as ledger.store.intent_fates).
            if intent_id not in fates:
                if len(fates) >= FATES_KEPT_MAX:
                    del fates[next(iter(fates))]
                fates[intent_id] = fate
        elif event_type is DiscrepancyFoundEvent:
            assert isinstance(event, DiscrepancyFoundEvent)
            data = event.data
            index = self._unrecorded.pop((data.execution, data.kind), None)
            if index is not None:
                self._discrepancies[index] = replace(self._discrepancies[index], recorded=True)
        elif self._in_window:
            assert isinstance(event, PositionsReconciledEvent | ReconciliationFailedEvent)
            self._reconciled(event, sequence)

    def _reconciled(self, event: PositionsReconciledEvent | ReconciliationFailedEvent,
                    sequence: int) -> None:
        """Keep a reconciliation in the window, while within the bounds."""
        kept = self._reconciliations
        if self._reconciliations_omitted or len(kept) >= FINDINGS_MAX:
            self._reconciliations_omitted += 1
            return
        differences: tuple[Difference, ...] = ()
        if type(event) is ReconciliationFailedEvent:
            differences = event.data.differences
            if differences == self._last_differences:
                differences = self._last_differences
            elif self._differences_kept + len(differences) > DIFFERENCES_KEPT_MAX:
                self._reconciliations_omitted += 1
                return
            else:
                self._differences_kept += len(differences)
                self._last_differences = differences
        data = event.data
        kept.append(Reconciliation(
            sequence=sequence, occurred_at=event.occurred_at, as_of=data.as_of, head=data.head,
            matched=type(event) is PositionsReconciledEvent, differences=differences))

    def _enter_window(self, event: Event, sequence: int) -> None:
        self._in_window = True
        for interval in self._intervals:
            if interval is not None:
                interval.rebase(event, sequence)
        # The figures in force when the window starts belong to it.
        self._peak_positions = len(self._draft.positions) + len(self._intent_notionals)
        self._peak_exposure = self._open_exposure + self._pending_exposure

    def _check_gates(
        self, event: Event, sequence: int, in_force: _InForce, positions: int, exposure: Decimal
    ) -> None:
        """Open, extend or close each gate's interval after event."""
        # Runs for every event: an interval that stays open is extended in place, and only an
        # opening or a closing costs a call.
        intervals = self._intervals
        interval = intervals[_POSITIONS]
        positions_max = in_force.positions
        if _POSITIONS_BREACHED(positions, positions_max):
            if interval is None:
                self._open(_POSITIONS, positions, positions_max, event, sequence)
            else:
                interval.extend(positions, positions_max)
        elif interval is not None:
            self._close(_POSITIONS, event, sequence)
        interval = intervals[_EXPOSURE]
        exposure_max = in_force.exposure
        if _EXPOSURE_RULE.breached(exposure, exposure_max):
            if interval is None:
                self._open(_EXPOSURE, exposure, exposure_max, event, sequence)
            else:
                interval.extend(exposure, exposure_max)
        elif interval is not None:
            self._close(_EXPOSURE, event, sequence)
        is_order = type(event) in _ORDER_TYPES
        order_max = in_force.order
        interval = intervals[_ORDER]
        if is_order and order_max is not None \
                and _ORDER_RULE.breached(order := _order_notional(event), order_max):
            if interval is None:
                self._open(_ORDER, order, order_max, event, sequence)
            else:
                interval.extend(order, order_max)
        elif interval is not None:
            self._close(_ORDER, event, sequence)
        loss_max = in_force.loss
        interval = intervals[_DAILY_LOSS]
        if loss_max is not None and (loss := self._daily_loss_over(loss_max)) is not None:
            if interval is None:
                self._open(_DAILY_LOSS, loss, loss_max, event, sequence)
            else:
                interval.extend(loss, loss_max)
        elif interval is not None:
            self._close(_DAILY_LOSS, event, sequence)
        halted = self._draft.halted
        interval = intervals[_HALTED]
        if interval is not None:
            if not halted:
                self._close(_HALTED, event, sequence)
            elif is_order:
                interval.extend(interval.value + 1, 0)
        elif is_order and halted:
            self._open(_HALTED, 1, 0, event, sequence)
        underlying_max = in_force.underlying
        interval = intervals[_UNDERLYING]
        if underlying_max is not None and _UNDERLYING_RULE.breached(
                highest := _kept(self._underlyings).highest(), underlying_max):
            if interval is None:
                self._open(_UNDERLYING, highest, underlying_max, event, sequence)
            else:
                interval.extend(highest, underlying_max)
        elif interval is not None:
            self._close(_UNDERLYING, event, sequence)

    def _check_intent_gates(
        self, event: Event, sequence: int, in_force: _InForce, rate: int | None,
        duplicates: int | None,
    ) -> None:
        """Open, extend or close the order-rate and duplicate-order intervals after event.

        Only an intent (judged by its figure: None when no limit is in force) or new limits (the
        last intent's figure judged again by the new limit) change them.
        """
        intervals = self._intervals
        if type(event) is IntentIssuedEvent:
            if rate is not None or intervals[_RATE] is not None:
                self._judge(_RATE, _RATE_RULE, rate, in_force.rate, event, sequence)
            if duplicates is not None or intervals[_DUPLICATE] is not None:
                self._judge(_DUPLICATE, _DUPLICATE_RULE, duplicates, in_force.duplicate, event,
                            sequence)
            return
        if (interval := intervals[_RATE]) is not None:
            self._judge(_RATE, _RATE_RULE, interval.value, in_force.rate, event, sequence)
        if (interval := intervals[_DUPLICATE]) is not None:
            self._judge(_DUPLICATE, _DUPLICATE_RULE, interval.value, in_force.duplicate, event,
                        sequence)

    def _judge(
        self, index: int, rule: LimitRule, value: _Figure | None, limit: Decimal | None,
        event: Event, sequence: int,
    ) -> None:
        """Open or extend index's interval if value is over limit (None: none), else close it."""
        interval = self._intervals[index]
        if value is not None and limit is not None and rule.breached(value, limit):
            if interval is None:
                self._open(index, value, limit, event, sequence)
            else:
                interval.extend(value, limit)
        elif interval is not None:
            self._close(index, event, sequence)

    def _open(
        self, index: int, value: _Figure, limit: _Figure, event: Event, sequence: int
    ) -> None:
        assert self._intervals[index] is None, (GATES[index], sequence)
        self._intervals[index] = _Interval(GATES[index], value, limit, event, sequence)
        self._changes += 1

    def _close(self, index: int, event: Event, sequence: int) -> None:
        interval = self._intervals[index]
        assert interval is not None, (GATES[index], sequence)
        self._intervals[index] = None
        self._changes += 1
        # Intervals that open and close before the window are not the window's business.
        if self._in_window:
            self._breaches.append(interval.breach(event, sequence))

    def _daily_loss_over(self, loss_max: Decimal) -> Decimal | None:
        """Return the loss realised on the audit's current trading day if over loss_max."""
        assert self._today is not None
        # As AccountState.realized_pnl_on(today), read from the draft without freezing it.
        loss = -self._draft.realized_pnl_days.get(self._today, _ZERO)
        return loss if _LOSS_RULE.breached(loss, loss_max) else None


def _check_window(window_from: datetime | None, window_to: datetime | None) -> None:
    for name, bound in (("window_from", window_from), ("window_to", window_to)):
        if bound is not None and bound.utcoffset() is None:
            raise ValueError(f"{name}={bound.isoformat()} has no timezone: expected an aware time")
    if window_from is not None and window_to is not None and window_from > window_to:
        raise ValueError(
            f"window_from={format_time(window_from)} is after window_to={format_time(window_to)}"
        )


def _touched(event: Event) -> tuple[str | None, str | None]:
    """Return the position id and intent id whose figures the event may change."""
    # `type(...) is`, not a match on classes: this runs for every event and is a third faster.
    if type(event) is OrderFilledEvent:
        fill = event.data
        return fill.position_id, fill.intent_id
    if type(event) is PositionClosedEvent:
        # A close that executes a reducing intent releases its reservation.
        return event.data.position_id, event.data.intent_id
    if (
        type(event) is IntentIssuedEvent
        or type(event) is IntentRejectedEvent
        or type(event) is IntentExpiredEvent
        or type(event) is IntentCancelledEvent
    ):
        return None, event.data.intent_id
    return None, None


class _Held(Protocol):
    """A Position or a PendingIntent: anything the fold keeps on a symbol."""

    @property
    def symbol(self) -> str: ...


def _synced(notionals: dict[str, Decimal], key: str, figure: Decimal | None) -> Decimal:
    """Refresh key's notional (figure: that of what is now under key, or None); return the sum.

    The fold keeps a key where it was when it changes, appends new keys and deletes closed ones,
    and so does this dict: the sum adds the same figures in the same order as the fold's state.
    """
    if figure is None:
        notionals.pop(key, None)
    else:
        notionals[key] = figure
    return sum(notionals.values(), _ZERO)


def _kept(underlyings: _Underlyings | None) -> _Underlyings:
    assert underlyings is not None, "kept while max_underlying_exposure is in force"
    return underlyings


def _intent_key(event: IntentIssuedEvent) -> _IntentKey:
    issued = event.data
    return (issued.symbol, issued.side, issued.quantity, issued.limit_price)


class _InForce:
    """The limits of one `Limits` as the rules read them (`LimitRule.limit_of`): None, not set."""

    __slots__ = ("duplicate", "duplicate_window", "exposure", "limits", "loss", "order",
                 "positions", "rate", "underlying")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        # Compared as the int it is, by the rule's own comparison.
        self.positions = limits.max_open_positions
        exposure = _EXPOSURE_RULE.limit_of(limits)
        assert exposure is not None
        self.exposure = exposure
        self.order = _ORDER_RULE.limit_of(limits)
        self.loss = _LOSS_RULE.limit_of(limits)
        self.underlying = _UNDERLYING_RULE.limit_of(limits)
        self.rate = _RATE_RULE.limit_of(limits)
        self.duplicate = _DUPLICATE_RULE.limit_of(limits)
        window = limits.duplicate_window_s
        self.duplicate_window = (None if self.duplicate is None or window is None
                                 else timedelta(seconds=window))


class _Underlying:
    """What one underlying holds: notionals of positions and of intents, their sums, the total."""

    __slots__ = ("exposure", "notionals", "sums")

    def __init__(self) -> None:
        # Indexed by _POSITIONS_KIND or _INTENTS_KIND: key -> notional, in the fold's key order.
        self.notionals: tuple[dict[str, Decimal], dict[str, Decimal]] = ({}, {})
        self.sums = [_ZERO, _ZERO]
        self.exposure = _ZERO


class _Underlyings:
    """Open and pending exposure per underlying, kept as positions and intents change.

    Per underlying, each position's and intent's notional in the fold's own key order, so that
    its figure is the very digits `AccountState.exposure_on` gives: the positions' sum plus the
    intents' sum. Only what an event touched is summed again, and the highest figure is
    searched for again only when asked (`highest`) after the underlying that held it went down.
    """

    __slots__ = ("by_name", "keys", "names", "stale", "top", "top_name")

    def __init__(self) -> None:
        self.by_name: dict[str, _Underlying] = {}
        # Indexed by kind: key -> (its symbol, its underlying).
        self.keys: tuple[dict[str, tuple[str, str]], dict[str, tuple[str, str]]] = ({}, {})
        # symbol -> underlying, for the symbols seen lately (cleared when it grows large).
        self.names: dict[str, str] = {}
        # The highest exposure on one underlying, and where (unless stale: then `top` is at
        # least the highest, and it is searched for when asked).
        self.top = _ZERO
        self.top_name: str | None = None
        self.stale = False

    def highest(self) -> Decimal:
        """Return the highest open + pending exposure on one underlying (0 when none)."""
        if self.stale:
            self.top, self.top_name = _ZERO, None
            for name, held in self.by_name.items():
                if self.top_name is None or held.exposure > self.top:
                    self.top, self.top_name = held.exposure, name
            self.stale = False
        return self.top

    def change(self, kind: int, key: str, held: _Held | None, figure: Decimal | None) -> None:
        """Follow a position (_POSITIONS_KIND) or an intent (_INTENTS_KIND) now held with
        notional figure, or gone (held None)."""
        keys = self.keys[kind]
        old = keys.get(key)
        if held is None:
            if old is None:
                return
            del keys[key]
            name = old[1]
            entry = self.by_name[name]
            notionals = entry.notionals[kind]
            del notionals[key]
            if not notionals and not entry.notionals[1 - kind]:
                del self.by_name[name]
                if name == self.top_name:
                    self.stale = True
                return
        else:
            symbol = held.symbol
            if old is not None and old[0] is symbol:
                name = old[1]
            else:
                name = self._name(symbol)
                if old is not None and old[1] != name:
                    # A flip into another symbol: it leaves one underlying for another, where it
                    # is added last (the one case where a sum's order can differ from the fold's).
                    self.change(kind, key, None, None)
                keys[key] = (symbol, name)
            found = self.by_name.get(name)
            if found is None:
                found = self.by_name[name] = _Underlying()
            entry = found
            notionals = entry.notionals[kind]
            assert figure is not None, key
            notionals[key] = figure
        sums = entry.sums
        sums[kind] = sum(notionals.values(), _ZERO)
        # As AccountState.exposure_on: the positions' sum plus the intents' sum.
        value = entry.exposure = sums[0] + sums[1]
        # Notionals are never negative: the highest of nothing is 0.
        if value >= self.top:
            self.top, self.top_name, self.stale = value, name, False
        elif name == self.top_name:
            self.stale = True

    def _name(self, symbol: str) -> str:
        names = self.names
        name = names.get(symbol)
        if name is None:
            if len(names) >= _SYMBOLS_KEPT_MAX:
                names.clear()
            name = names[symbol] = underlying(symbol)
        return name


class _RecentIndex:
    """An index of the fold's recent intents (`Folding.recent_intents`), kept in step with it.

    The fold appends each issued intent and then drops the oldest ones, so the index follows by
    the list's length; it keeps the identical intents together (the duplicate rule asks only
    for those) and where the list's times go back (a late or back-dated intent). Counting the
    intents after a moment then reads back from the newest only as far as the moment, rather
    than through every intent a long duplicate window keeps.
    """

    __slots__ = ("base", "by_key", "descents", "keys", "rate_moment", "rate_start")

    def __init__(self, recent: Sequence[RecentIntent]) -> None:
        """Index the fold's recent intents as they are now."""
        # The number of intents dropped: the running number of the list's first one.
        self.base = 0
        self.keys: deque[_IntentKey] = deque()
        # The times of each key's intents, in the list's order.
        self.by_key: dict[_IntentKey, deque[datetime]] = {}
        # Running numbers n of the intents that occurred after intent n + 1.
        self.descents: deque[int] = deque()
        # While the times never go back: the running number of the first intent after the
        # moment last asked of count_since (every intent before it is at or before it).
        self.rate_start = 0
        self.rate_moment: datetime | None = None
        previous: datetime | None = None
        for intent in recent:
            self._append(
                (intent.symbol, intent.side, intent.quantity, intent.limit_price),
                intent.occurred_at, previous)
            previous = intent.occurred_at

    def count_since(self, recent: Sequence[RecentIntent], moment: datetime) -> int:
        """Return how many of the fold's recent intents occurred after moment."""
        if self.descents:
            self.rate_moment = None
            return sum(1 for intent in recent if intent.occurred_at > moment)
        # In time order: the intents at or before moment come first. Asked with moments that do
        # not go back, the search goes on from where it stopped last time.
        index = 0
        if self.rate_moment is not None and self.rate_moment <= moment:
            index = max(0, self.rate_start - self.base)
        end = len(recent)
        while index < end and recent[index].occurred_at <= moment:
            index += 1
        self.rate_start, self.rate_moment = self.base + index, moment
        return end - index

    def same_since(self, key: _IntentKey, moment: datetime) -> int:
        """Return how many recent intents identical to key occurred after moment."""
        times = self.by_key.get(key)
        if times is None:
            return 0
        if self.descents:
            return sum(1 for at in times if at > moment)
        count = 0
        for at in reversed(times):
            if at <= moment:
                break
            count += 1
        return count

    def issued(self, recent: Sequence[RecentIntent], before: int, key: _IntentKey) -> None:
        """Follow the fold's step of an intent: recent is its list now, before its length then."""
        dropped = before + 1 - len(recent)
        assert 0 <= dropped <= before, (before, len(recent))
        keys, by_key = self.keys, self.by_key
        for _ in range(dropped):
            gone = keys.popleft()
            kept = by_key[gone]
            kept.popleft()
            if not kept:
                del by_key[gone]
        self.base += dropped
        descents = self.descents
        while descents and descents[0] < self.base:
            descents.popleft()
        self._append(key, recent[-1].occurred_at,
                     recent[-2].occurred_at if len(recent) >= 2 else None)

    def _append(self, key: _IntentKey, at: datetime, previous: datetime | None) -> None:
        """Index the intent now last in the list (previous: the time of the one before it)."""
        self.keys.append(key)
        times = self.by_key.get(key)
        if times is None:
            times = self.by_key[key] = deque()
        times.append(at)
        if previous is not None and previous > at:
            self.descents.append(self.base + len(self.keys) - 2)


def _order_notional(event: Event) -> Decimal:
    if isinstance(event, OrderFilledEvent):
        fill = event.data
        return notional(fill.quantity, fill.price, fill.multiplier)
    assert isinstance(event, IntentIssuedEvent), type(event)
    issued = event.data
    return notional(issued.quantity, issued.limit_price, issued.multiplier)


# --- Samples ------------------------------------------------------------------------------------


# A sample while sampling: sequence, occurred_at, positions, exposure, limits, halted. Plain
# tuples, because thinning a stream full of breaches rebuilds thousands of them; `Sample`s are
# built once, by `snapshot`.
_Point: TypeAlias = tuple[int, datetime, int, Decimal, Limits | None, bool]


class _Sampler:
    """At most samples_max samples: one per event until full, then runs of `stride` events."""

    __slots__ = (
        "count",
        "exposure",
        "last",
        "pinned",
        "points",
        "positions",
        "samples_max",
        "stride",
    )

    def __init__(self, samples_max: int) -> None:
        self.samples_max = samples_max
        self.stride = 1
        self.points: list[_Point] = []
        # pinned[i]: points[i] is an event's own, one that opened or closed a breach.
        self.pinned: list[bool] = []
        # The run of events not yet sampled: how many, their maxima, and its last event.
        self.count = 0
        self.positions = 0
        self.exposure = _ZERO
        self.last: _Point | None = None

    def add(
        self,
        sequence: int,
        at: datetime,
        positions: int,
        exposure: Decimal,
        limits: Limits | None,
        halted: bool,
        pinned: bool,
    ) -> None:
        point = (sequence, at, positions, exposure, limits, halted)
        if pinned:
            self._flush()
            self._append(point, pinned=True)
            return
        if self.count == 0:
            self.positions = positions
            self.exposure = exposure
        else:
            if positions > self.positions:
                self.positions = positions
            if exposure > self.exposure:
                self.exposure = exposure
        self.count += 1
        self.last = point
        if self.count >= self.stride:
            self._flush()

    def snapshot(self) -> list[Sample]:
        """Return the samples so far, with the run not yet sampled, without changing anything."""
        points, pinned = list(self.points), list(self.pinned)
        if self.count > 0:
            points.append(self._run_point())
            pinned.append(False)
            if len(points) > self.samples_max:
                points, pinned = _thinned(points, pinned, self.samples_max)
        assert len(points) <= self.samples_max, (len(points), self.samples_max)
        return [_sample(point) for point in points]

    def _run_point(self) -> _Point:
        assert self.last is not None
        sequence, at, _, _, limits, halted = self.last
        return (sequence, at, self.positions, self.exposure, limits, halted)

    def _flush(self) -> None:
        if self.count > 0:
            self._append(self._run_point(), pinned=False)
            self.count = 0

    def _append(self, point: _Point, *, pinned: bool) -> None:
        if len(self.points) >= self.samples_max:
            self.stride *= 2
            self.points, self.pinned = _thinned(self.points, self.pinned, self.samples_max)
        self.points.append(point)
        self.pinned.append(pinned)
        assert len(self.points) <= self.samples_max, (len(self.points), self.samples_max)


def _thinned(
    points: list[_Point], pinned: list[bool], samples_max: int
) -> tuple[list[_Point], list[bool]]:
    """Return the points with pairs merged: unpinned pairs first, then any pairs if still full."""
    points, pinned = _merged_pairs(points, pinned, keep_pinned=True)
    if len(points) > samples_max * 3 // 4:
        # Mostly pinned points (a flapping breach): the bound wins over exactness.
        points, pinned = _merged_pairs(points, pinned, keep_pinned=False)
    return points, pinned


def _merged_pairs(
    points: list[_Point], pinned: list[bool], *, keep_pinned: bool
) -> tuple[list[_Point], list[bool]]:
    merged: list[_Point] = []
    merged_pinned: list[bool] = []
    index = 0
    while index < len(points):
        pair_end = index + 1
        mergeable = pair_end < len(points) and not (
            keep_pinned and (pinned[index] or pinned[pair_end])
        )
        if mergeable:
            merged.append(_merged(points[index], points[pair_end]))
            merged_pinned.append(pinned[index] or pinned[pair_end])
            index += 2
        else:
            merged.append(points[index])
            merged_pinned.append(pinned[index])
            index += 1
    return merged, merged_pinned


def _merged(earlier: _Point, later: _Point) -> _Point:
    """Return one point standing for both runs: their maxima, as of the later one's event."""
    sequence, at, positions, exposure, limits, halted = later
    return (sequence, at, max(earlier[2], positions), max(earlier[3], exposure), limits, halted)


def _sample(point: _Point) -> Sample:
    sequence, at, positions, exposure, limits, halted = point
    return Sample(
        sequence=sequence,
        occurred_at=at,
        positions=positions,
        exposure=exposure,
        max_open_positions=None if limits is None else limits.max_open_positions,
        max_exposure=None if limits is None else limits.max_exposure,
        halted=halted,
    )


# --- Convenience and the document ---------------------------------------------------------------


def audit_events(
    account: str,
    events: Iterable[Event],
    window_from: datetime | None = None,
    window_to: datetime | None = None,
) -> AccountAudit:
    """Return the audit of one account's stored events, read in one pass.

    Raises:
        ValueError: as `BreachFinder`.
        ForeignEvent, UnsequencedEvent, SequenceGap: as `projections.fold.apply`.
    """
    finder = BreachFinder(account, window_from=window_from, window_to=window_to)
    finder.feed_many(events)
    return finder.finish()


def has_breach(audits: Iterable[AccountAudit]) -> bool:
    """Return True if any audit found a breach (the audit command then exits 3)."""
    return any(audit.breaches for audit in audits)


def audit_document(audits: Sequence[AccountAudit]) -> dict[str, Any]:
    """Return the `audit --json` document of docs/design.md, ready for json.dumps."""
    return {
        "accounts": [
            {
                "account": audit.account,
                "events": audit.events,
                "peak_open_positions": audit.peak_open_positions,
                "peak_exposure": money_json(audit.peak_exposure),
                "breaches": [_breach_document(breach) for breach in audit.breaches],
                "reconciliations": [_reconciliation_document(reconciliation)
                                    for reconciliation in audit.reconciliations],
                "discrepancies": [_discrepancy_document(d) for d in audit.discrepancies],
                **_omitted_document(audit),
            }
            for audit in audits
        ]
    }


def _omitted_document(audit: AccountAudit) -> dict[str, int]:
    # Present only when the bounds left something out (as `to` is only for a closed interval).
    omitted = {"reconciliations_omitted": audit.reconciliations_omitted,
               "discrepancies_omitted": audit.discrepancies_omitted}
    return {name: count for name, count in omitted.items() if count}


def _optional_decimal(number: Decimal | None) -> str | None:
    return None if number is None else format_decimal(number)


def _discrepancy_document(discrepancy: Discrepancy) -> dict[str, Any]:
    return {"kind": discrepancy.kind, "sequence": discrepancy.sequence,
            "at": format_time(discrepancy.occurred_at), "position_id": discrepancy.position_id,
            "intent_id": discrepancy.intent_id, "fill_id": discrepancy.fill_id,
            "close_id": discrepancy.close_id,
            "reported": _optional_decimal(discrepancy.reported),
            "ledger": _optional_decimal(discrepancy.ledger), "reason": discrepancy.reason,
            "recorded": discrepancy.recorded}


def _reconciliation_document(reconciliation: Reconciliation) -> dict[str, Any]:
    return {"sequence": reconciliation.sequence, "at": format_time(reconciliation.occurred_at),
            "as_of": format_time(reconciliation.as_of), "head": reconciliation.head,
            "matched": reconciliation.matched,
            "differences": [{"symbol": difference.symbol, "side": difference.side,
                             "broker": format_decimal(difference.broker),
                             "ledger": format_decimal(difference.ledger)}
                            for difference in reconciliation.differences]}


def _breach_document(breach: Breach) -> dict[str, Any]:
    figure = format_decimal if breach.gate in COUNT_GATES else money_json
    document: dict[str, Any] = {
        "gate": breach.gate,
        "limit": figure(breach.limit),
        "peak": figure(breach.peak),
        "from": format_time(breach.opened_at),
    }
    # docs/design.md: an absent `to` means the interval is still open.
    if breach.closed_at is not None:
        document["to"] = format_time(breach.closed_at)
    document["first_sequence"] = breach.first_sequence
    return document


