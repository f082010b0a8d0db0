"""The one fold of an account's events into its state: positions, pending intents, limits, P&L.

This module owns the account state (`AccountState` and the values it holds), the pure function
`apply(state, event) -> state` and `fold(events)`, which the projector, the dispatcher, rebuild,
time travel and the audit all use, so that every one of them sees the same figures. It also owns
the errors a caller gets when it feeds the fold wrongly (`ForeignEvent`, `UnsequencedEvent`,
`SequenceGap`). It is pure: no clock, no I/O, no logging. It must not import asyncpg, aiokafka,
faststream, `time`, `os`, `logging`, or any project module other than `ledger.events` and
`ledger.errors`.

Money is Decimal only and is never quantized here: rounding belongs to the edges that print or
store figures. All arithmetic runs in `ledger.events.DECIMAL_CONTEXT` (38 digits, half-even),
whatever the calling thread's context is, so that every process folds to the very same digits.
"""

from __future__ import annotations

import decimal
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Literal, TypeAlias, assert_never

from ledger.errors import LedgerError
from ledger.events import (
    DECIMAL_CONTEXT,
    DECIMAL_PRECISION,
    ORDER_RATE_MAX,
    DiscrepancyFoundEvent,
    Event,
    Instrument,
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
    Side,
    SignalEvaluatedEvent,
    TradingHaltedEvent,
    TradingReducedEvent,
    TradingResumedEvent,
    notional,
    underlying,
)

__all__ = [
    "RATE_WINDOW",
    "AccountState",
    "ForeignEvent",
    "Limits",
    "PendingIntent",
    "Position",
    "RecentIntent",
    "SequenceGap",
    "TradingState",
    "UnsequencedEvent",
    "apply",
    "fold",
    "initial_state",
    "trading_day",
]

_ZERO = Decimal("0")
# Daily P&L is kept for this many trading days back from the newest one booked: a late report
# of a recent day still counts on its day, whatever was booked on the days after it.
PNL_DAYS_KEPT = 7
PNL_DAYS_KEPT_SPAN = timedelta(days=PNL_DAYS_KEPT)
# The order-rate gate counts the intents issued in this long before a decision.
RATE_WINDOW = timedelta(seconds=60)
TradingState: TypeAlias = Literal["active", "reducing", "halted"]


def trading_day(moment: datetime) -> date:
    """Return the trading day of an instant: its UTC date.

    The one definition of "today" for the daily loss limit: the fold books each realised P&L on
    the trading day of the event that realised it, the gates ask for the trading day of the
    decision being made, and the audit for that of each event it replays (docs/design.md).
    """
    return moment.astimezone(UTC).date()

# --- Errors -------------------------------------------------------------------------------------


class ForeignEvent(LedgerError):
    """An event of another account was folded into a state: a bug in the caller, fix it."""

    def __init__(self, account: str, event_account: str) -> None:
        self.account = account
        self.event_account = event_account
        super().__init__(
            f"event account {event_account!r} was folded into the state of account {account!r}: "
            "expected events of that account only"
        )


class UnsequencedEvent(LedgerError):
    """An event without a sequence was folded: only stored events are folded; store it first."""

    def __init__(self, account: str, event_id: uuid.UUID) -> None:
        self.account = account
        self.event_id = event_id
        super().__init__(
            f"account {account}: event {event_id} has no sequence: expected a stored event"
        )


class SequenceGap(LedgerError):
    """The event skips sequences of its account: read the missing ones from the store first."""

    def __init__(self, account: str, expected_sequence: int, actual_sequence: int) -> None:
        self.account = account
        self.expected_sequence = expected_sequence
        self.actual_sequence = actual_sequence
        super().__init__(
            f"account {account}: expected sequence {expected_sequence} but was {actual_sequence}"
        )


# --- State --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """An open holding: quantity > 0 on one side, at an average entry price."""

    position_id: str
    symbol: str
    instrument: Instrument
    side: Side
    quantity: Decimal
    average_price: Decimal
    multiplier: Decimal
    # Realised while this holding has been open: partial closes and the fees of its fills.
    realized_pnl: Decimal
    opened_at: datetime

    @property
    def notional(self) -> Decimal:
        """Return the open exposure: quantity x average_price x multiplier."""
        return self.quantity * self.average_price * self.multiplier


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingIntent:
    """An issued intent that is neither filled, rejected, expired nor cancelled.

    An opening intent counts against the limits like an open position; a reducing one (it only
    reduces an open position, `IntentIssued.reducing`) reserves nothing, but the quantity it
    will sell or buy back is spoken for: another reduction of that position sees less open.
    """

    intent_id: str
    signal_id: str
    position_id: str
    symbol: str
    instrument: Instrument
    side: Side
    quantity: Decimal
    limit_price: Decimal
    multiplier: Decimal
    expires_at: datetime
    issued_sequence: int
    reducing: bool = False

    @property
    def notional(self) -> Decimal:
        """Return the order's notional: |quantity| x limit_price x multiplier."""
        return notional(self.quantity, self.limit_price, self.multiplier)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The account's limits as last set; None means that limit is not enforced."""

    max_open_positions: int
    max_exposure: Decimal
    max_order_notional: Decimal | None
    daily_loss_limit: Decimal | None
    max_orders_per_minute: int | None = None
    max_underlying_exposure: Decimal | None = None
    duplicate_window_s: int | None = None
    max_reconcile_age_s: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RecentIntent:
    """An intent issued lately: what the order-rate and duplicate-order gates look back on."""

    intent_id: str
    occurred_at: datetime
    symbol: str
    side: Side
    quantity: Decimal
    limit_price: Decimal


# Additions and subtractions of figures that must not round: a change that would is refused
# (Inexact) and the figure is summed afresh, as it always was, from then on.
_EXACT = decimal.Context(prec=DECIMAL_PRECISION, rounding=decimal.ROUND_HALF_EVEN,
                         traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow,
                                decimal.FloatOperation])


class _Sum:
    """A sum of non-negative terms kept up to date as terms come and go.

    `value()` is the very Decimal `sum(terms, Decimal("0"))` gives in the fold's context (value
    and exponent: an exact sum of decimals has the smallest exponent of its terms, and 0's),
    in O(1) instead of O(terms). Non-negative terms make every partial sum of that left-to-right
    sum at most the total, so when the total fits the context exactly, so does each of them,
    whatever their order; a change that could not be made exactly leaves the sum unknown
    (None), and the caller sums the terms.
    """

    __slots__ = ("exact", "exponents", "total")

    def __init__(self) -> None:
        self.total = _ZERO
        # How many current terms have each exponent.
        self.exponents: dict[int, int] = {}
        self.exact = True

    def copy(self) -> _Sum:
        other = _Sum()
        other.total, other.exponents, other.exact = self.total, dict(self.exponents), self.exact
        return other

    def add(self, term: Decimal) -> None:
        self._change(term, 1)

    def remove(self, term: Decimal) -> None:
        self._change(term, -1)

    def _change(self, term: Decimal, sign: int) -> None:
        if not self.exact:
            return
        try:
            self.total = _EXACT.add(self.total, term) if sign > 0 \
                else _EXACT.subtract(self.total, term)
        except (decimal.Inexact, decimal.InvalidOperation):
            self.exact = False
            return
        exponent = term.as_tuple().exponent
        assert isinstance(exponent, int), term
        count = self.exponents.get(exponent, 0) + sign
        if count:
            self.exponents[exponent] = count
        else:
            del self.exponents[exponent]

    def value(self) -> Decimal | None:
        if not self.exact:
            return None
        exponent = min(0, min(self.exponents, default=0))
        try:
            return self.total.quantize(Decimal((0, (1,), exponent)), context=_EXACT)
        except (decimal.Inexact, decimal.InvalidOperation):
            return None


class _Totals:
    """The state's figures the gates read on every decision, kept as the fold changes it.

    Summing thousands of pending intents per decision was the dispatcher's largest cost; these
    change by one term per event instead. Every figure equals the plain sum over the state's
    rows (tests compare them), which remains the fallback.
    """

    __slots__ = ("open", "open_on", "pending", "pending_count", "pending_on", "reducing_on")

    def __init__(self) -> None:
        self.open = _Sum()
        self.pending = _Sum()
        self.pending_count = 0
        # By underlying (`ledger.events.underlying`): positions' and opening intents' notional.
        self.open_on: dict[str, _Sum] = {}
        self.pending_on: dict[str, _Sum] = {}
        # By position: the quantity its pending reducing intents take off.
        self.reducing_on: dict[str, _Sum] = {}

    @classmethod
    def of(cls, positions: Iterable[Position], pending: Iterable[PendingIntent]) -> _Totals:
        totals = cls()
        for position in positions:
            totals.add_position(position)
        for intent in pending:
            totals.add_intent(intent)
        return totals

    def copy(self) -> _Totals:
        other = _Totals()
        other.open, other.pending = self.open.copy(), self.pending.copy()
        other.pending_count = self.pending_count
        other.open_on = {name: s.copy() for name, s in self.open_on.items()}
        other.pending_on = {name: s.copy() for name, s in self.pending_on.items()}
        other.reducing_on = {key: s.copy() for key, s in self.reducing_on.items()}
        return other

    def add_position(self, position: Position) -> None:
        figure = position.notional
        self.open.add(figure)
        self.open_on.setdefault(underlying(position.symbol), _Sum()).add(figure)

    def remove_position(self, position: Position) -> None:
        figure = position.notional
        self.open.remove(figure)
        _shrink(self.open_on, underlying(position.symbol), figure)

    def add_intent(self, intent: PendingIntent) -> None:
        if intent.reducing:
            self.reducing_on.setdefault(intent.position_id, _Sum()).add(intent.quantity)
            return
        figure = intent.notional
        self.pending.add(figure)
        self.pending_count += 1
        self.pending_on.setdefault(underlying(intent.symbol), _Sum()).add(figure)

    def remove_intent(self, intent: PendingIntent) -> None:
        if intent.reducing:
            _shrink(self.reducing_on, intent.position_id, intent.quantity)
            return
        figure = intent.notional
        self.pending.remove(figure)
        self.pending_count -= 1
        _shrink(self.pending_on, underlying(intent.symbol), figure)


def _shrink(sums: dict[str, _Sum], key: str, term: Decimal) -> None:
    """Take a term off a keyed sum; a key whose last term went is dropped (its sum is 0)."""
    found = sums[key]
    found.remove(term)
    if not found.exponents and found.exact:
        del sums[key]


def _figure(kept: _Sum | None, terms: Iterable[Decimal]) -> Decimal:
    """Return a kept sum's value, or the terms' sum when none is kept or it is unknown."""
    value = kept.value() if kept is not None else _ZERO
    return value if value is not None else sum(terms, _ZERO)


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountState:
    """Everything the fold knows about one account after its events up to `sequence`."""

    account: str
    sequence: int
    positions: Mapping[str, Position]
    pending: Mapping[str, PendingIntent]
    limits: Limits | None
    halted: bool
    halt_reason: str | None
    # Realised P&L per trading day (`trading_day`), the PNL_DAYS_KEPT most recent days booked.
    realized_pnl_days: Mapping[date, Decimal]
    realized_pnl_total: Decimal
    last_occurred_at: datetime | None
    # Openings blocked, risk-reducing orders pass (TradingReduced); `halted` overrides it.
    reducing: bool = False
    # Intents issued within the look-back of the rate and duplicate gates, oldest first
    # (RATE_WINDOW, or the duplicate window if longer; at most ORDER_RATE_MAX of them).
    recent_intents: tuple[RecentIntent, ...] = ()
    # The broker `as_of` of the latest PositionsReconciled (None: never reconciled).
    reconciled_as_of: datetime | None = None
    # Figures derived from positions and pending (`_Totals`): computed on first use, or handed
    # over by the fold that kept them; never compared, never copied by `dataclasses.replace`.
    _totals: _Totals | None = field(default=None, init=False, repr=False, compare=False)

    # Mapping proxies compare by value but cannot be hashed; say so plainly rather than fail
    # inside a generated __hash__.
    __hash__ = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        # A state is a value: whoever built it with a plain dict must not be able to change it
        # afterwards through that dict. The fold hands over proxies of dicts it no longer holds.
        if not isinstance(self.positions, MappingProxyType):
            object.__setattr__(self, "positions", MappingProxyType(dict(self.positions)))
        if not isinstance(self.pending, MappingProxyType):
            object.__setattr__(self, "pending", MappingProxyType(dict(self.pending)))
        if not isinstance(self.realized_pnl_days, MappingProxyType):
            object.__setattr__(self, "realized_pnl_days",
                               MappingProxyType(dict(self.realized_pnl_days)))

    @property
    def open_positions(self) -> int:
        """Return the number of open positions."""
        return len(self.positions)

    def _figures(self) -> _Totals:
        totals = self._totals
        if totals is None:
            totals = _Totals.of(self.positions.values(), self.pending.values())
            object.__setattr__(self, "_totals", totals)
        return totals

    @property
    def pending_count(self) -> int:
        """Return the number of pending intents that count as positions (not reducing ones)."""
        return self._figures().pending_count

    @property
    def open_exposure(self) -> Decimal:
        """Return the sum of the open positions' notional."""
        return _figure(self._figures().open,
                       (position.notional for position in self.positions.values()))

    @property
    def pending_exposure(self) -> Decimal:
        """Return the exposure the pending intents reserve (reducing ones reserve none)."""
        return _figure(self._figures().pending,
                       (intent.notional for intent in self.pending.values()
                        if not intent.reducing))

    @property
    def exposure(self) -> Decimal:
        """Return open exposure plus pending exposure."""
        return self.open_exposure + self.pending_exposure

    def realized_pnl_on(self, day: date) -> Decimal:
        """Return the P&L realised on a trading day, 0 when nothing was realised that day."""
        return self.realized_pnl_days.get(day, _ZERO)

    @property
    def trading_state(self) -> TradingState:
        """Return `halted`, `reducing` or `active`."""
        return "halted" if self.halted else "reducing" if self.reducing else "active"

    def exposure_on(self, name: str) -> Decimal:
        """Return open + pending exposure on one underlying (`ledger.events.underlying`)."""
        figures = self._figures()
        held = _figure(figures.open_on.get(name),
                       (p.notional for p in self.positions.values()
                        if underlying(p.symbol) == name))
        return held + _figure(figures.pending_on.get(name),
                              (i.notional for i in self.pending.values()
                               if not i.reducing and underlying(i.symbol) == name))

    def reducing_pending_on(self, position_id: str) -> Decimal:
        """Return the quantity pending reducing intents will take off one open position."""
        return _figure(self._figures().reducing_on.get(position_id),
                       (i.quantity for i in self.pending.values()
                        if i.reducing and i.position_id == position_id))

    def intents_since(self, moment: datetime) -> list[RecentIntent]:
        """Return the recent intents issued after `moment`, oldest first."""
        return [intent for intent in self.recent_intents if intent.occurred_at > moment]


def initial_state(account: str) -> AccountState:
    """Return the state of an account before its first event."""
    return AccountState(
        account=account,
        sequence=0,
        positions=MappingProxyType({}),
        pending=MappingProxyType({}),
        limits=None,
        halted=False,
        halt_reason=None,
        realized_pnl_days=MappingProxyType({}),
        realized_pnl_total=_ZERO,
        last_occurred_at=None,
    )


# --- Folding ------------------------------------------------------------------------------------


class Folding:
    """A fold in progress: mutable, owned by one caller, frozen into an AccountState at its end.

    Folding into one working copy, rather than building a frozen state per event, keeps a
    rebuild of a million events to a few seconds. `apply` and `fold` use it, and so do readers
    that check figures after every event (the audit): there is one fold. Use `accepts` then
    `step` per event, `snapshot` for a copy; `freeze` hands the working dicts over (last use).
    """

    __slots__ = (
        "account",
        "halt_reason",
        "halted",
        "last_occurred_at",
        "limits",
        "pending",
        "positions",
        "realized_pnl_days",
        "realized_pnl_total",
        "recent_intents",
        "reconciled_as_of",
        "reducing",
        "sequence",
        "totals",
    )

    def __init__(self, state: AccountState) -> None:
        self.account = state.account
        self.sequence = state.sequence
        self.positions = dict(state.positions)
        self.pending = dict(state.pending)
        self.limits = state.limits
        self.halted = state.halted
        self.halt_reason = state.halt_reason
        self.realized_pnl_days = dict(state.realized_pnl_days)
        self.realized_pnl_total = state.realized_pnl_total
        self.last_occurred_at = state.last_occurred_at
        self.reducing = state.reducing
        self.recent_intents = list(state.recent_intents)
        self.reconciled_as_of = state.reconciled_as_of
        # Kept up to date only if the state had them: a fold nobody reads figures of (a
        # rebuild) pays nothing for them.
        kept = state._totals
        self.totals = kept.copy() if kept is not None else None

    def put_position(self, position: Position) -> None:
        """Open or change a position (in place: an existing key keeps its order)."""
        before = self.positions.get(position.position_id)
        self.positions[position.position_id] = position
        if self.totals is not None:
            if before is not None:
                self.totals.remove_position(before)
            self.totals.add_position(position)

    def drop_position(self, position_id: str) -> None:
        """Remove a closed position."""
        before = self.positions.pop(position_id)
        if self.totals is not None:
            self.totals.remove_position(before)

    def put_pending(self, intent: PendingIntent) -> None:
        """Record a pending intent (in place: an existing key keeps its order)."""
        before = self.pending.get(intent.intent_id)
        self.pending[intent.intent_id] = intent
        if self.totals is not None:
            if before is not None:
                self.totals.remove_intent(before)
            self.totals.add_intent(intent)

    def release(self, intent_id: str) -> None:
        """End a pending intent, if it is pending."""
        before = self.pending.pop(intent_id, None)
        if before is not None and self.totals is not None:
            self.totals.remove_intent(before)

    def accepts(self, event: Event) -> int | None:
        """Return the event's sequence if it is the next to apply, None if already applied.

        Raises:
            ForeignEvent, UnsequencedEvent, SequenceGap: see `apply`.
        """
        return _next_sequence(self.account, self.sequence, event)

    def step(self, event: Event, sequence: int) -> None:
        """Apply an event that `accepts` returned `sequence` for."""
        with decimal.localcontext(DECIMAL_CONTEXT):
            _step(self, event, sequence)

    def snapshot(self) -> AccountState:
        """Return the state so far as a value; the fold can go on."""
        state = AccountState(
            account=self.account, sequence=self.sequence, positions=dict(self.positions),
            pending=dict(self.pending), limits=self.limits, halted=self.halted,
            halt_reason=self.halt_reason, realized_pnl_days=dict(self.realized_pnl_days),
            realized_pnl_total=self.realized_pnl_total,
            last_occurred_at=self.last_occurred_at, reducing=self.reducing,
            recent_intents=tuple(self.recent_intents), reconciled_as_of=self.reconciled_as_of,
        )
        if self.totals is not None:
            object.__setattr__(state, "_totals", self.totals.copy())
        return state

    def freeze(self) -> AccountState:
        # The draft is dropped right after, so its dicts can back the proxies without a copy.
        state = AccountState(
            account=self.account,
            sequence=self.sequence,
            positions=MappingProxyType(self.positions),
            pending=MappingProxyType(self.pending),
            limits=self.limits,
            halted=self.halted,
            halt_reason=self.halt_reason,
            realized_pnl_days=MappingProxyType(self.realized_pnl_days),
            realized_pnl_total=self.realized_pnl_total,
            last_occurred_at=self.last_occurred_at,
            reducing=self.reducing,
            recent_intents=tuple(self.recent_intents),
            reconciled_as_of=self.reconciled_as_of,
        )
        if self.totals is not None:
            object.__setattr__(state, "_totals", self.totals)
        return state


def _next_sequence(account: str, sequence: int, event: Event) -> int | None:
    """Return the event's sequence if it is the next of the stream, None if already applied.

    Raises:
        ForeignEvent, UnsequencedEvent, SequenceGap: see `apply`.
    """
    if event.account != account:
        raise ForeignEvent(account, event.account)
    if event.sequence is None:
        raise UnsequencedEvent(account, event.event_id)
    if event.sequence <= sequence:
        return None
    if event.sequence != sequence + 1:
        raise SequenceGap(account, sequence + 1, event.sequence)
    return event.sequence


def apply(state: AccountState, event: Event) -> AccountState:
    """Return the state after one stored event; a duplicate returns the same state object.

    Raises:
        ForeignEvent: the event belongs to another account.
        UnsequencedEvent: the event has no sequence (it was never stored).
        SequenceGap: the event's sequence is beyond state.sequence + 1.
    """
    sequence = _next_sequence(state.account, state.sequence, event)
    if sequence is None:
        return state
    draft = Folding(state)
    with decimal.localcontext(DECIMAL_CONTEXT):
        _step(draft, event, sequence)
    return draft.freeze()


def fold(
    events: Iterable[Event],
    state: AccountState | None = None,
    account: str | None = None,
) -> AccountState:
    """Return the state after applying events in order to state (or to a new account's state).

    Duplicates are skipped as in `apply`; if every event is a duplicate, state itself is
    returned. All or nothing: on an error no partial result is returned.

    Raises:
        ValueError: neither state nor account is given, or both are and they differ.
        ForeignEvent, UnsequencedEvent, SequenceGap: see `apply`.
    """
    if state is None:
        if account is None:
            raise ValueError("fold needs a state or an account: both were None")
        state = initial_state(account)
    elif account is not None and account != state.account:
        raise ValueError(f"account={account!r} but state is of account {state.account!r}")
    draft: Folding | None = None
    with decimal.localcontext(DECIMAL_CONTEXT):
        for event in events:
            applied = state.sequence if draft is None else draft.sequence
            sequence = _next_sequence(state.account, applied, event)
            if sequence is not None:
                if draft is None:
                    draft = Folding(state)
                _step(draft, event, sequence)
    return state if draft is None else draft.freeze()


def _step(draft: Folding, event: Event, sequence: int) -> None:
    """Apply one event, already checked to be the next (sequence) of the stream, to the draft."""
    draft.sequence = sequence
    draft.last_occurred_at = event.occurred_at
    # Ordered by how often each type occurs in a stream.
    match event:
        case OrderFilledEvent():
            _apply_fill(draft, event)
        case PositionClosedEvent():
            _apply_close(draft, event)
        case SignalEvaluatedEvent():
            pass
        case IntentIssuedEvent():
            _apply_intent_issued(draft, event)
        case IntentRejectedEvent() | IntentExpiredEvent() | IntentCancelledEvent():
            draft.release(event.data.intent_id)
        case LimitsSetEvent():
            data = event.data
            draft.limits = Limits(
                max_open_positions=data.max_open_positions,
                max_exposure=data.max_exposure,
                max_order_notional=data.max_order_notional,
                daily_loss_limit=data.daily_loss_limit,
                max_orders_per_minute=data.max_orders_per_minute,
                max_underlying_exposure=data.max_underlying_exposure,
                duplicate_window_s=data.duplicate_window_s,
                max_reconcile_age_s=data.max_reconcile_age_s,
            )
        case TradingHaltedEvent():
            draft.halted, draft.reducing = True, False
            draft.halt_reason = event.data.reason
        case TradingReducedEvent():
            draft.halted, draft.reducing = False, True
            draft.halt_reason = event.data.reason
        case TradingResumedEvent():
            draft.halted, draft.reducing = False, False
            draft.halt_reason = None
        case PositionsReconciledEvent():
            as_of = event.data.as_of
            if draft.reconciled_as_of is None or as_of > draft.reconciled_as_of:
                draft.reconciled_as_of = as_of
        case ReconciliationFailedEvent():
            count = len(event.data.differences)
            _fail_closed(draft, f"reconciliation failed: {count} difference"
                                f"{'' if count == 1 else 's'} with the broker")
        case DiscrepancyFoundEvent():
            _fail_closed(draft, f"discrepancy: {event.data.reason}")
        case _:
            assert_never(event)


def _fail_closed(draft: Folding, reason: str) -> None:
    """The ledger and the broker disagree: openings stop (reducing) until an operator resumes.

    A halted account stays halted: reducing would loosen it.
    """
    if draft.halted:
        return
    draft.reducing = True
    draft.halt_reason = reason


def _apply_fill(draft: Folding, event: OrderFilledEvent) -> None:
    fill = event.data
    if fill.intent_id is not None:
        # The reservation ends with the fill. A fill of an unknown or expired intent still
        # happened at the broker, so it is applied all the same.
        draft.release(fill.intent_id)
    fees = _ZERO if fill.fees is None else fill.fees
    position = draft.positions.get(fill.position_id)
    realized: Decimal | None = None
    if position is None:
        kept: Position | None = _opened(fill, fill.quantity, event.occurred_at, fees)
    elif position.side == fill.side:
        kept = _added(position, fill, fees)
    else:
        kept, realized = _countered(position, fill, event.occurred_at, fees)
    if kept is None:
        draft.drop_position(fill.position_id)
    else:
        assert kept.quantity > 0, kept
        draft.put_position(kept)
    if realized is not None or fill.fees is not None:
        _book_pnl(draft, (_ZERO if realized is None else realized) - fees, event.occurred_at)


def _apply_close(draft: Folding, event: PositionClosedEvent) -> None:
    close = event.data
    if close.intent_id is not None:
        draft.release(close.intent_id)
    position = draft.positions.get(close.position_id)
    if position is None:
        # Nothing open to close (never opened, or already closed): the fact is kept in the
        # store, and there is nothing to change here.
        return
    if close.quantity is None:
        quantity = position.quantity
    else:
        # Closing more than is open cannot close more than is open.
        quantity = min(close.quantity, position.quantity)
    kept, realized = _reduced(position, quantity, close.price, _ZERO)
    if kept is None:
        draft.drop_position(close.position_id)
    else:
        assert kept.quantity > 0, kept
        draft.put_position(kept)
    _book_pnl(draft, realized, event.occurred_at)


def _apply_intent_issued(draft: Folding, event: IntentIssuedEvent) -> None:
    issued = event.data
    draft.put_pending(PendingIntent(
        intent_id=issued.intent_id,
        signal_id=issued.signal_id,
        position_id=issued.position_id,
        symbol=issued.symbol,
        instrument=issued.instrument,
        side=issued.side,
        quantity=issued.quantity,
        limit_price=issued.limit_price,
        multiplier=issued.multiplier,
        expires_at=issued.expires_at,
        issued_sequence=draft.sequence,
        reducing=issued.reducing,
    ))
    recent = draft.recent_intents
    recent.append(RecentIntent(
        intent_id=issued.intent_id, occurred_at=event.occurred_at, symbol=issued.symbol,
        side=issued.side, quantity=issued.quantity, limit_price=issued.limit_price))
    window = RATE_WINDOW
    limits = draft.limits
    if limits is not None and limits.duplicate_window_s is not None:
        window = max(window, timedelta(seconds=limits.duplicate_window_s))
    horizon = event.occurred_at - window
    # Oldest first: what fell out of every window goes, and never more than the gates can use.
    drop = 0
    while drop < len(recent) and (recent[drop].occurred_at <= horizon
                                  or len(recent) - drop > ORDER_RATE_MAX):
        drop += 1
    if drop:
        del recent[:drop]


def _book_pnl(draft: Folding, amount: Decimal, occurred_at: datetime) -> None:
    """Add realised P&L to the account's total and to the figure of its trading day."""
    draft.realized_pnl_total += amount
    day = trading_day(occurred_at)
    days = draft.realized_pnl_days
    newest = max(days, default=day)
    if day <= newest - PNL_DAYS_KEPT_SPAN:
        # A report of a day long over (a late import): it counts in the total only.
        return
    days[day] = days.get(day, _ZERO) + amount
    if day > newest:
        for old in [d for d in days if d <= day - PNL_DAYS_KEPT_SPAN]:
            del days[old]


# --- Pure leaf computations ---------------------------------------------------------------------


def _opened(fill: OrderFilled, quantity: Decimal, at: datetime, fees: Decimal) -> Position:
    """Return a position opened by a fill for quantity at the fill's price."""
    return Position(
        position_id=fill.position_id,
        symbol=fill.symbol,
        instrument=fill.instrument,
        side=fill.side,
        quantity=quantity,
        average_price=fill.price,
        multiplier=fill.multiplier,
        realized_pnl=-fees,
        opened_at=at,
    )


def _added(position: Position, fill: OrderFilled, fees: Decimal) -> Position:
    """Return the position grown by a same-side fill, at the quantity-weighted average price."""
    # Symbol, instrument and multiplier belong to the position from the fill that opened it.
    quantity = position.quantity + fill.quantity
    cost = position.quantity * position.average_price + fill.quantity * fill.price
    return Position(
        position_id=position.position_id,
        symbol=position.symbol,
        instrument=position.instrument,
        side=position.side,
        quantity=quantity,
        average_price=cost / quantity,
        multiplier=position.multiplier,
        realized_pnl=position.realized_pnl - fees,
        opened_at=position.opened_at,
    )


def _countered(
    position: Position, fill: OrderFilled, at: datetime, fees: Decimal
) -> tuple[Position | None, Decimal]:
    """Return what an opposite-side fill leaves open, and the P&L it realises.

    The fill closes up to the open quantity at its price; any excess opens a new position on
    the fill's side at the fill's price (a flip), which is charged the fees.
    """
    if fill.quantity <= position.quantity:
        return _reduced(position, fill.quantity, fill.price, fees)
    _, realized = _reduced(position, position.quantity, fill.price, _ZERO)
    flipped = _opened(fill, fill.quantity - position.quantity, at, fees)
    return flipped, realized


def _reduced(
    position: Position, quantity: Decimal, price: Decimal, fees: Decimal
) -> tuple[Position | None, Decimal]:
    """Return the position less quantity (None when nothing is left) and the P&L realised.

    quantity must be at most the open quantity.
    """
    assert quantity <= position.quantity, (quantity, position)
    if position.side == "long":
        realized = (price - position.average_price) * quantity * position.multiplier
    else:
        realized = (position.average_price - price) * quantity * position.multiplier
    remaining = position.quantity - quantity
    if remaining == 0:
        return None, realized
    kept = Position(
        position_id=position.position_id,
        symbol=position.symbol,
        instrument=position.instrument,
        side=position.side,
        quantity=remaining,
        average_price=position.average_price,
        multiplier=position.multiplier,
        realized_pnl=position.realized_pnl + realized - fees,
        opened_at=position.opened_at,
    )
    return kept, realized
