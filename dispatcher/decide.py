"""The decision transaction: one per signal, under the account's stream-head lock.

In one short transaction, logged in as the account's own role (row-level security hides every
other account): lock the head, recognise a signal already decided, read the account's projection,
prove it current by folding the tail it has not applied yet (up to a bound; beyond it, fail
closed), evaluate the gates counting pending intents, and append `SignalEvaluated` with the
figures seen and, when allowed, `IntentIssued`. Because the check and the reservation commit
together under the lock, replicas and bursts serialise and cannot over-trade. Expiry releases
intents nobody filled, in the same kind of transaction. Must not import Kafka clients or the CLI.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from dispatcher import gates
from ledger import store
from ledger.errors import InvalidEvent
from ledger.events import (
    LEDGER_NAMESPACE,
    Event,
    IntentExpired,
    Signal,
    SignalEvaluated,
    build_event,
    decision_key,
    decode_event,
    with_ledger_fields,
)
from projections.current import state_at_head
from projections.fold import AccountState, Position, fold

if TYPE_CHECKING:
    from ledger.db import Conn

FOLD_BOUND_DEFAULT = 1000
INTENT_TTL_DEFAULT = timedelta(seconds=60)
CLOCK_SKEW_DEFAULT = timedelta(seconds=300)


@dataclass(frozen=True, kw_only=True)
class DispatcherConfig:
    """What one account's dispatcher is configured with: the account is required."""

    account: str
    fold_bound: int = FOLD_BOUND_DEFAULT
    intent_ttl: timedelta = INTENT_TTL_DEFAULT
    # How far in the future a signal may say it occurred before it is refused as bad input.
    clock_skew: timedelta = CLOCK_SKEW_DEFAULT
    # How old a signal may be when decided (gate signal_stale); None: not checked.
    max_signal_age: timedelta | None = None


@dataclass(kw_only=True)
class StateCache:
    """The last state this process proved current, kept to avoid re-reading the projection.

    Never trusted on its own: it is used only under the head lock and only after the events
    appended since its sequence have been folded onto it, exactly as the projection's rows are.
    """

    state: AccountState | None = None


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What became of one signal."""

    signal_id: str
    allowed: bool
    code: str | None
    reason: str
    intent_id: str | None
    as_of_sequence: int
    duplicate: bool = False


def intent_id_for(account: str, signal_id: str) -> str:
    """Return the intent id a signal gets: deterministic, so a retried decision is the same."""
    return str(uuid.uuid5(LEDGER_NAMESPACE, f"intent/{account}/{signal_id}"))


async def decide(conn: Conn, config: DispatcherConfig, signal: Signal, now: datetime,
                 cache: StateCache | None = None) -> Outcome:
    """Decide one signal and record the decision (and the intent) atomically.

    Raises:
        InvalidEvent: the signal belongs to another account.
        UnknownAccount: the account has no stream, or this login cannot see it.
    """
    outcomes = await decide_many(conn, config, [signal], now, cache)
    return outcomes[0]


async def decide_many(conn: Conn, config: DispatcherConfig, signals: Sequence[Signal],
                      now: datetime, cache: StateCache | None = None) -> list[Outcome]:
    """Decide signals in order in one transaction under the head lock; return the outcomes of
    a prefix of them (all, unless the state could not be proven current: then the first).

    Each signal is decided on the state every earlier decision left (its own events folded
    on), exactly as if each had its own transaction one after the other; the decisions commit
    together, in one append and one commit (docs/performance.md). A signal decided before (in
    the store, or earlier in `signals`) is answered with that decision and records nothing.

    Raises:
        InvalidEvent: a signal belongs to another account.
        UnknownAccount: the account has no stream, or this login cannot see it.
    """
    for signal in signals:
        if signal.account != config.account:
            raise InvalidEvent("account", signal.account,
                               f"does not match the dispatcher's account {config.account!r}")
    if not signals:
        return []
    cached = cache.state if cache is not None else None
    async with conn.transaction():
        # One round trip: the head locked, earlier decisions of these signals, and the events
        # since the state this process last proved.
        context = await store.decision_context(
            conn, config.account, [decision_key(s.signal_id) for s in signals],
            cached.sequence if cached is not None else None, config.fold_bound)
        head = context.head
        recorded = {event.data.signal_id: _recorded_outcome(config.account,
                                                            event.data.signal_id, event)
                    for event in context.previous if isinstance(event.data, SignalEvaluated)}
        if cached is not None and context.tail is not None:
            state = fold(context.tail, cached)
            assert state.sequence == head, (config.account, state.sequence, head)
            freshness = gates.Freshness(head=head, state_sequence=cached.sequence,
                                        fold_bound=config.fold_bound)
        else:
            state, freshness = await current_state(conn, config, head)
        proven = 0 <= freshness.lag <= config.fold_bound
        if not proven:
            # Nothing to build on: decide (and fail closed on) the first signal alone.
            signals = signals[:1]
        outcomes: list[Outcome] = []
        events: list[Event] = []
        for signal in signals:
            earlier = recorded.get(signal.signal_id)
            if earlier is not None:
                outcomes.append(dataclasses.replace(earlier, duplicate=True))
                continue
            sequence = head + len(events)
            decision = gates.evaluate(state, signal, now, freshness,
                                      max_signal_age=config.max_signal_age)
            own = _decision_events(config, signal, decision, sequence, now,
                                   gates.reduces(state, signal))
            events.extend(own)
            outcome = Outcome(signal_id=signal.signal_id, allowed=decision.allowed,
                              code=decision.code, reason=decision.reason,
                              as_of_sequence=sequence,
                              intent_id=intent_id_for(config.account, signal.signal_id)
                              if decision.allowed else None)
            outcomes.append(outcome)
            recorded[signal.signal_id] = outcome
            if proven:
                # The next signal is decided on this decision's result, proven the same way.
                state = _with_own(state, own, {event.event_id: sequence + index
                                               for index, event in enumerate(own, start=1)})
                freshness = gates.Freshness(head=state.sequence, state_sequence=state.sequence,
                                            fold_bound=config.fold_bound)
        result = await store.append(conn, config.account, events, expected_sequence=head) \
            if events else None
        if result is not None and list(result.appended) != [e.event_id for e in events]:
            # Under the lock, with earlier decisions looked up, every event is new: anything
            # else is a store fault, and nothing of this batch may stand.
            raise AssertionError(f"account {config.account}: decisions appended "
                                 f"{len(result.appended)} of {len(events)} events")
        if cache is not None:
            cache.state = state if proven else None
    return outcomes


async def current_state(
    conn: Conn, config: DispatcherConfig, head: int, cache: StateCache | None = None,
) -> tuple[AccountState, gates.Freshness]:
    """Return the account's state proven current at `head`, and how far behind its source was.

    When the tail is longer than the bound the state is returned as it is, and the freshness
    gate will fail closed. The caller holds the head lock, so nothing moves meanwhile.
    """
    proven = await state_at_head(conn, config.account, head, fold_bound=config.fold_bound,
                                 cached=cache.state if cache is not None else None)
    freshness = gates.Freshness(head=head, state_sequence=proven.source_sequence,
                                fold_bound=config.fold_bound)
    return proven.state, freshness


async def expire_due(conn: Conn, config: DispatcherConfig, now: datetime,
                     cache: StateCache | None = None) -> list[str]:
    """Append IntentExpired for every pending intent past its expiry; return their ids.

    With a cache (the dispatcher's, shared with its decisions) the state is the cached one with
    the tail folded on, as in `decide`, and the cache moves to the state after the expiry.
    """
    async with conn.transaction():
        head = await store.lock_head(conn, config.account)
        state, freshness = await current_state(conn, config, head, cache)
        if not 0 <= freshness.lag <= config.fold_bound:
            return []
        due = sorted(i.intent_id for i in state.pending.values() if i.expires_at <= now)
        reason = f"not filled within {config.intent_ttl.total_seconds():g}s"
        events = [build_event(config.account, now,
                              IntentExpired(intent_id=intent_id, reason=reason))
                  for intent_id in due]
        after: AccountState | None = state
        if events:
            result = await store.append(conn, config.account, events, expected_sequence=head)
            after = _with_own(state, events, result.appended) \
                if len(result.appended) == len(events) else None
        if cache is not None:
            cache.state = after
    return due


def _with_own(state: AccountState, events: list[Event],
              appended: dict[uuid.UUID, int]) -> AccountState:
    """Fold this decision's own events onto the state it was made on."""
    stored = [with_ledger_fields(event, sequence=appended[event.event_id],
                                 recorded_at=event.occurred_at, global_position=0)
              for event in events]
    return fold(stored, state)


def _decision_events(config: DispatcherConfig, signal: Signal, decision: gates.Decision,
                     head: int, now: datetime, reduced: Position | None = None) -> list[Event]:
    evaluated = SignalEvaluated(signal_id=signal.signal_id, signal=signal,
                                allowed=decision.allowed, gates=decision.gates,
                                as_of_sequence=head)
    events = [build_event(config.account, now, evaluated)]
    if decision.allowed:
        intent_id = intent_id_for(config.account, signal.signal_id)
        events.append(build_event(config.account, now, gates.issued_intent(
            signal, intent_id, now + config.intent_ttl, reduced)))
    return events


async def _previous_decision(conn: Conn, account: str, signal_id: str) -> Outcome | None:
    """Return the recorded decision of a redelivered signal, or None if it is new."""
    raw = await conn.fetchval(
        f"SELECT {store.EVENT_JSON_SQL} FROM events WHERE account = $1 AND natural_key = $2",
        account, decision_key(signal_id))
    return None if raw is None else _recorded_outcome(account, signal_id, decode_event(raw))


def _recorded_outcome(account: str, signal_id: str, event: Event) -> Outcome:
    """Return the outcome a recorded SignalEvaluated says: a redelivered signal's."""
    assert isinstance(event.data, SignalEvaluated), event.type
    decision = gates.Decision(allowed=event.data.allowed, gates=event.data.gates)
    return Outcome(signal_id=signal_id, allowed=decision.allowed, code=decision.code,
                   reason=decision.reason, as_of_sequence=event.data.as_of_sequence,
                   intent_id=intent_id_for(account, signal_id) if decision.allowed else None,
                   duplicate=True)
