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
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Literal, TypeAlias, assert_never

from ledger.errors import LedgerError
from ledger.events import (
    DECIMAL_CONTEXT,
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

    @property
    def pending_count(self) -> int:
        """Return the number of pending intents that count as positions (not reducing ones)."""
        return sum(1 for intent in self.pending.values() if not intent.reducing)

    @property
    def open_exposure(self) -> Decimal:
        """Return the sum of the open positions' notional."""
        return sum((position.notional for position in self.positions.values()), _ZERO)

    @property
    def pending_exposure(self) -> Decimal:
        """Return the exposure the pending intents reserve (reducing ones reserve none)."""
        return sum((intent.notional for intent in self.pending.values() if not intent.reducing),
                   _ZERO)

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
        held = sum((p.notional for p in self.positions.values()
                    if underlying(p.symbol) == name), _ZERO)
        return held + sum((i.notional for i in self.pending.values()
                           if not i.reducing and underlying(i.symbol) == name), _ZERO)

    def reducing_pending_on(self, position_id: str) -> Decimal:
        """Return the quantity pending reducing intents will take off one open position."""
        return sum((i.quantity for i in self.pending.values()
                    if i.reducing and i.position_id == position_id), _ZERO)

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
        return AccountState(
            account=self.account, sequence=self.sequence, positions=dict(self.positions),
            pending=dict(self.pending), limits=self.limits, halted=self.halted,
            halt_reason=self.halt_reason, realized_pnl_days=dict(self.realized_pnl_days),
            realized_pnl_total=self.realized_pnl_total,
            last_occurred_at=self.last_occurred_at, reducing=self.reducing,
            recent_intents=tuple(self.recent_intents), reconciled_as_of=self.reconciled_as_of,
        )

    def freeze(self) -> AccountState:
        # The draft is dropped right after, so its dicts can back the proxies without a copy.
        return AccountState(
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
            draft.pending.pop(event.data.intent_id, None)
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
        draft.pending.pop(fill.intent_id, None)
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
        del draft.positions[fill.position_id]
    else:
        assert kept.quantity > 0, kept
        draft.positions[fill.position_id] = kept
    if realized is not None or fill.fees is not None:
        _book_pnl(draft, (_ZERO if realized is None else realized) - fees, event.occurred_at)


def _apply_close(draft: Folding, event: PositionClosedEvent) -> None:
    close = event.data
    if close.intent_id is not None:
        draft.pending.pop(close.intent_id, None)
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
        del draft.positions[close.position_id]
    else:
        assert kept.quantity > 0, kept
        draft.positions[close.position_id] = kept
    _book_pnl(draft, realized, event.occurred_at)


def _apply_intent_issued(draft: Folding, event: IntentIssuedEvent) -> None:
    issued = event.data
    draft.pending[issued.intent_id] = PendingIntent(
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
    )
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
