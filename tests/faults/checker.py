"""The checker of the fault campaign: judge one `Observation` against the invariants.

The harness drives the real system through crashes, restarts, lost connections and a hostile
producer, then observes what it left behind (`tests.faults.model.Observation`). This module only
judges that observation: it is pure (no I/O, no clock, no services), so a failing seed can be
judged again offline, and every finding names its first concrete counter-example (ids, sequences,
figures) rather than a bare "mismatch". Only the observation's `accounts` are judged; events and
records of other accounts are ignored, since other runs may share the topics.

The checks, each guarding one promise of docs/design.md:

1. sequences - each stream is 1..n with no gap, event ids are unique across accounts, natural
   keys (fill ids, signal decisions...) unique per account: exactly-once in effect (invariant 4)
   starts with a store that never holds a fact twice.
2. history - what the clients were told agrees with the store: an acknowledged append or
   execution is stored exactly once, a refused one never, a cut-off one at most once and an
   append all or nothing; an acknowledged signal is decided exactly once. Nothing is lost
   (invariant 5), nothing is invented or doubled (invariant 4).
3. distribution - `ledger-events` carries exactly the store: every stored event is published, no
   record contradicts the store or runs past its head, and per partition and account the first
   occurrences come in order 1, 2, 3... with no gap, so a consumer deduplicating by
   (account, sequence) sees the store. Forged records of the hostile producer are excluded: their
   fate is check 7's. The relay being the outbox (no dual writes) is what this proves.
4. projection - each account's projection is at the store's head and equals a rebuild from the
   store row for row (invariant 5).
5. limits - replaying the store, right after every IntentIssued the account's open + pending
   positions and exposure are within the limits in force, and so are the exposure on the
   intent's underlying (`ledger.events.underlying`) and the order's notional; the intents issued
   in the 60 s up to it (occurred_at > its own - 60 s, counting itself) are at most
   max_orders_per_minute, and no identical intent (symbol, side, quantity, limit price) was
   issued within duplicate_window_s before it (invariant 2). An intent marked reducing that
   truly reduces an open position (names it, opposite side, same symbol, at most its open
   quantity less the other reductions pending on it) adds no risk and reserves nothing: it is
   exempt from positions, exposure, underlying, order notional and reconciliation age, never
   from the rate or duplicates; one marked reducing that does not is judged as an opening. An
   opening also needs, when max_reconcile_age_s is set, a PositionsReconciled whose broker
   `as_of` is at most that many seconds before it. It uses the fold only, not the gates, so a
   bug in the gates cannot hide here.
6. decisions - every SignalEvaluated was decided on the head (as_of_sequence = sequence - 1),
   recorded the true figures (the gates re-run on the state the store gives at that head agree
   with the recorded decision gate for gate), never allowed anything while halted, nor while
   reducing unless its signal truly reduces an open position (judged as in check 5, not by the
   gates), and intents come exactly from allowed decisions, each the signal's order, marked
   reducing exactly when the signal reduces and then naming that position (invariants 2 and 3:
   the incident of docs/design.md was a decision on false figures).
7. dead letters - every acknowledged hostile message that must be refused is in `dead-letters`
   with its key, its value and a reason, and no dead letter lacks a reason (invariant 6).
8. writers - every stored event was appended by a login role that may write its type to its
   account (the store records the role): a dispatcher only its own account's decisions, intents
   and expiries, ingest what the broker reports and its own conclusions about it
   (PositionsReconciled, ReconciliationFailed, DiscrepancyFound), the operator limits and
   trading states
   (invariant 1: a dispatcher's own credentials never lift a halt or raise a limit).
9. live orders - every intent on `order-intents` was live when the relay proved it live: not
   past its expiry at the check's clock (the record's timestamp, LIVENESS_TOLERANCE between the
   dispatcher's clock and the database's), and, among the store's events up to the head that
   check read (header `checked_head`), neither expired, rejected nor cancelled, nor its account
   halted (the latest of TradingHalted, TradingReduced, TradingResumed being a halt); and every
   IntentCancelled of the store reached `order-intents`, so the router cancels it at the broker
   (docs/consumers.md). Cancels carry no liveness headers: a cancel is never dead.
10. reconciliation - every broker view the campaign's broker published on `broker-positions`
   (`Observation.snapshots`) is judged once: one PositionsReconciled or ReconciliationFailed
   per broker `as_of`, never both nor either twice, none for an `as_of` nobody sent, and one
   for every acknowledged view. Each compares the ledger as of the view's `as_of`: `head` is the
   head it was appended on (its sequence - 1) less the executions recorded last that occurred
   after that `as_of` (the broker had not made them yet, services/reconcile.py), and it records
   exactly the differences between the view and the fold at `head` (the checker's own sum per
   symbol and side, not projections.reconcile). A mismatch the broker planted on purpose is a
   ReconciliationFailed with exactly the planted differences, an honest view a
   PositionsReconciled - when the ledger at `head` held exactly the executions the broker had
   reported before the view. Otherwise the race must be one the design allows: an execution
   reported before the view but missing there was recorded after the judgement, which came at
   least `reconcile_wait_s` after the `as_of` (ingest waited that long for the executions, then
   judged the ledger as it was: fail closed), and one the ledger holds beyond the view's was
   sent after it. Right after every ReconciliationFailed and DiscrepancyFound the fold is
   reducing, or halted (invariant 3: when the ledger and the broker disagree, openings stop
   until an operator resumes).

Checks 4, 5, 6 and 10 replay a stream only as far as it is numbered 1, 2, 3...: beyond a broken
sequence there is nothing trustworthy to replay, and check 1 already fails the run there.
Imports only pure modules: no asyncpg, aiokafka, faststream, time, os or logging.
"""

from __future__ import annotations

import decimal
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dispatcher import gates
from ledger.errors import InvalidEvent
from ledger.events import (
    DECIMAL_CONTEXT,
    EVENT_WRITERS,
    Difference,
    DiscrepancyFoundEvent,
    Event,
    GateResult,
    IntentCancelled,
    IntentCancelledEvent,
    IntentExpired,
    IntentIssuedEvent,
    IntentRejected,
    PositionsReconciledEvent,
    ReconciliationFailedEvent,
    Side,
    Signal,
    SignalEvaluated,
    SignalEvaluatedEvent,
    decode_event,
    format_decimal,
    format_time,
    natural_key,
    notional,
    underlying,
)
from projections import tables
from projections.fold import AccountState, Folding, Limits, Position, initial_state
from tests.faults.model import Observation, Operation, Record, Snapshot

__all__ = [
    "CHECKS",
    "EXAMPLES_PER_CHECK_MAX",
    "Violation",
    "check",
    "check_1_sequences",
    "check_2_history",
    "check_3_distribution",
    "check_4_projection",
    "check_5_limits",
    "check_6_decisions",
    "check_7_dead_letters",
    "check_8_writers",
    "check_9_live_orders",
    "check_10_reconciliation",
    "find_violations",
    "holdings_differences",
]

CHECKS: dict[int, str] = {
    1: "sequences",
    2: "history",
    3: "distribution",
    4: "projection",
    5: "limits",
    6: "decisions",
    7: "dead letters",
    8: "writers",
    9: "live orders",
    10: "reconciliation",
}
# Enough to see whether a bug is one slip or a pattern, few enough to read in a failure report.
EXAMPLES_PER_CHECK_MAX = 5
_EXCERPT_LENGTH_MAX = 80
DEAD_LETTER_EXPECTED = "dead-letter"
REASON_HEADER = "dlq.reason"


@dataclass(frozen=True)
class Violation:
    """One counter-example to one check: `message` is one line naming ids, sequences, figures."""

    check: int
    name: str
    account: str | None
    message: str

    def __str__(self) -> str:
        return f"check {self.check} ({self.name}): {self.message}"


def _violation(number: int, account: str | None, message: str) -> Violation:
    prefix = f"account {account}: " if account is not None else ""
    return Violation(number, CHECKS[number], account, prefix + message)


# --- Shared reading of the observation -----------------------------------------------------------


def _accounts(observation: Observation) -> list[str]:
    return list(dict.fromkeys(observation.accounts))


def _stream(observation: Observation, account: str) -> list[Event]:
    return observation.store.get(account, [])


def _replayable(account: str, events: Sequence[Event]) -> list[Event]:
    """Return the leading events numbered 1, 2, 3... of the account: what can be folded."""
    for index, event in enumerate(events):
        if event.account != account or event.sequence != index + 1:
            return list(events[:index])
    return list(events)


def _excerpt(raw: bytes | None) -> str:
    if raw is None:
        return "None"
    text = repr(raw)
    return text if len(text) <= _EXCERPT_LENGTH_MAX else text[:_EXCERPT_LENGTH_MAX] + "..."


def _money(amount: decimal.Decimal | None) -> str:
    return "none" if amount is None else format_decimal(amount)


# --- Check 1: sequences ---------------------------------------------------------------------------


def check_1_sequences(observation: Observation) -> list[Violation]:
    """Return every stream not numbered 1..n and every event id or natural key stored twice."""
    found: list[Violation] = []
    owners: dict[uuid.UUID, tuple[str, int | None]] = {}
    for account in _accounts(observation):
        first_of_key: dict[str, tuple[int | None, uuid.UUID]] = {}
        expected = 1
        for position, event in enumerate(_stream(observation, account), start=1):
            if event.account != account:
                found.append(_violation(1, account, (
                    f"stream position {position} holds event {event.event_id} of account "
                    f"{event.account!r}")))
            if event.sequence != expected:
                found.append(_violation(1, account, (
                    f"expected sequence {expected} but was {event.sequence} "
                    f"(event {event.event_id} {event.type}, stream position {position})")))
            # Resynchronise on what is there, so one gap is one finding, not one per event after.
            expected = (event.sequence if event.sequence is not None else expected) + 1
            owner = owners.setdefault(event.event_id, (account, event.sequence))
            if owner != (account, event.sequence):
                found.append(_violation(1, account, (
                    f"event id {event.event_id} stored twice: at account {owner[0]} sequence "
                    f"{owner[1]} and at sequence {event.sequence}")))
            key = natural_key(event)
            first = first_of_key.setdefault(key, (event.sequence, event.event_id))
            if first[1] != event.event_id:
                found.append(_violation(1, account, (
                    f"natural key {key} stored twice: sequence {first[0]} (event {first[1]}) "
                    f"and sequence {event.sequence} (event {event.event_id})")))
    return found


# --- Check 2: history -----------------------------------------------------------------------------


def check_2_history(observation: Observation) -> list[Violation]:
    """Return every client operation whose outcome the store contradicts."""
    accounts = _accounts(observation)
    stored = {a: Counter(e.event_id for e in _stream(observation, a)) for a in accounts}
    decided = {
        a: Counter(e.data.signal_id for e in _stream(observation, a)
                   if isinstance(e, SignalEvaluatedEvent))
        for a in accounts
    }
    found: list[Violation] = []
    for index, operation in enumerate(observation.history):
        if operation.account not in stored:
            continue
        if operation.kind == "signal":
            problem = _signal_problem(operation, decided[operation.account])
        else:
            problem = _events_problem(operation, stored[operation.account])
        if problem is not None:
            found.append(_violation(2, operation.account, (
                f"history #{index} {operation.kind} {operation.outcome}: {problem}")))
    return found


def _events_problem(operation: Operation, stored: Counter[uuid.UUID]) -> str | None:
    counts = [(event_id, stored[event_id]) for event_id in operation.event_ids]
    twice = next(((i, n) for i, n in counts if n > 1), None)
    if twice is not None:
        return f"event {twice[0]} stored {twice[1]} times: expected at most once"
    missing = [i for i, n in counts if n == 0]
    present = [i for i, n in counts if n == 1]
    if operation.outcome == "ok" and missing:
        return (f"event {missing[0]} not stored ({len(missing)} of {len(counts)} missing): "
                "expected every acknowledged event stored once")
    if operation.outcome == "failed" and present and operation.kind == "append":
        return f"event {present[0]} stored: a refused append must store nothing"
    if operation.kind == "append" and present and missing:
        # An append is one transaction: a cut-off one stored all of it or none of it.
        return (f"{len(present)} of {len(counts)} events stored (event {present[0]} stored, "
                f"event {missing[0]} not): an append is all or nothing")
    return None


def _signal_problem(operation: Operation, decided: Counter[str]) -> str | None:
    if operation.signal_id is None:
        return "names no signal_id"
    count = decided[operation.signal_id]
    if count > 1:
        return f"signal {operation.signal_id} decided {count} times: expected at most once"
    if operation.outcome == "ok" and count == 0:
        return (f"signal {operation.signal_id} never decided: expected one SignalEvaluated for "
                "an acknowledged signal")
    return None


# --- Check 3: distribution ------------------------------------------------------------------------


def check_3_distribution(observation: Observation) -> list[Violation]:
    """Return every disagreement between `ledger-events` (deduplicated) and the store."""
    accounts = set(_accounts(observation))
    stored = {(a, e.sequence): e for a in accounts for e in _stream(observation, a)
              if e.account == a and e.sequence is not None}
    heads = {a: len(_stream(observation, a)) for a in accounts}
    forged = {(h.topic, h.key, h.value) for h in observation.hostile
              if h.expect == DEAD_LETTER_EXPECTED}
    published: set[tuple[str, int]] = set()
    next_first: dict[tuple[str, int, str], int] = {}
    found: list[Violation] = []
    for record in sorted(observation.ledger_events,
                         key=lambda r: (r.topic, r.partition, r.offset)):
        if (record.topic, record.key, record.value) in forged:
            continue
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        event = _decoded(record)
        if isinstance(event, str):
            account = record.header("account") or _text(record.key)
            if account is None or account in accounts:
                found.append(_violation(3, account, f"record {where} cannot be used: {event}"))
            continue
        if event.account not in accounts:
            continue
        problem, sequence = _record_problem(record, event, stored, heads[event.account])
        if problem is not None:
            found.append(_violation(3, event.account, f"record {where}: {problem}"))
        if sequence is None or (event.account, sequence) not in stored:
            continue
        published.add((event.account, sequence))
        lane = (record.topic, record.partition, event.account)
        expected = next_first.get(lane, 1)
        if sequence > expected:
            found.append(_violation(3, event.account, (
                f"record {where}: sequence {sequence} first seen before sequence {expected} "
                f"in partition {record.partition}: expected first occurrences 1, 2, 3...")))
        next_first[lane] = max(expected, sequence + 1)
    for (account, sequence), event in stored.items():
        if (account, sequence) not in published:
            found.append(_violation(3, account, (
                f"stored sequence {sequence} (event {event.event_id} {event.type}) never "
                "published to ledger-events")))
    return found


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", errors="replace")


def _decoded(record: Record) -> Event | str:
    """Return the record's event, or why it cannot be decoded."""
    if record.value is None:
        return "value is empty (a tombstone)"
    try:
        return decode_event(record.value)
    except InvalidEvent as error:
        return f"{error} (value {_excerpt(record.value)})"


def _record_problem(record: Record, event: Event, stored: Mapping[tuple[str, int], Event],
                    head: int) -> tuple[str | None, int | None]:
    """Return what is wrong with one decoded record, and the sequence it carries."""
    header = record.header("sequence")
    sequence = event.sequence
    if sequence is None and header is not None and header.isdigit():
        sequence = int(header)
    if sequence is None:
        return f"event {event.event_id} carries no sequence", None
    mine = stored.get((event.account, sequence))
    if mine is None:
        return (f"sequence {sequence} (event {event.event_id}) is beyond the store's head "
                f"{head}"), sequence
    if mine.event_id != event.event_id:
        return (f"sequence {sequence} carries event {event.event_id} {event.type} but the store "
                f"has event {mine.event_id} {mine.type}"), sequence
    if (mine.type, mine.occurred_at, mine.data) != (event.type, event.occurred_at, event.data):
        return (f"sequence {sequence} event {event.event_id} differs from the stored event in "
                "type, occurred_at or data"), sequence
    for name, value in (("account", event.account), ("sequence", str(sequence)),
                        ("event_id", str(event.event_id)), ("type", event.type)):
        said = record.header(name)
        if said is not None and said != value:
            return f"header {name}={said!r} but the event says {value!r}", sequence
    return None, sequence


# --- Check 4: projection --------------------------------------------------------------------------


def check_4_projection(observation: Observation) -> list[Violation]:
    """Return every account whose projection is not at the head or differs from a rebuild."""
    found: list[Violation] = []
    for account in _accounts(observation):
        events = _stream(observation, account)
        replayable = _replayable(account, events)
        live = observation.projection.get(account)
        if live is None:
            if events:
                found.append(_violation(4, account, (
                    f"no projection loaded while the store's head is {len(events)}")))
            continue
        if live.account != account:
            found.append(_violation(4, account, f"projection is of account {live.account!r}"))
            continue
        if live.sequence != len(events):
            found.append(_violation(4, account, (
                f"projection at sequence {live.sequence} but the store's head is "
                f"{len(events)}")))
            continue
        if len(replayable) != len(events):
            continue
        rebuilt = _fold(account, replayable)
        # `differences` walks the union of both sides' keys and fields: one direction suffices.
        for difference in tables.differences(live, rebuilt):
            found.append(_violation(4, account, f"projection differs from a rebuild: {difference}"))
    return found


def _fold(account: str, events: Sequence[Event]) -> AccountState:
    draft = Folding(initial_state(account))
    for sequence, event in enumerate(events, start=1):
        draft.step(event, sequence)
    return draft.freeze()


# --- Check 5: limits ------------------------------------------------------------------------------


def check_5_limits(observation: Observation) -> list[Violation]:
    """Return every IntentIssued after which the account is beyond its limits."""
    found: list[Violation] = []
    for account in _accounts(observation):
        draft = Folding(initial_state(account))
        issued: list[IntentIssuedEvent] = []
        reconciled: datetime | None = None
        for sequence, event in enumerate(_replayable(account, _stream(observation, account)),
                                         start=1):
            draft.step(event, sequence)
            if isinstance(event, PositionsReconciledEvent) and (
                    reconciled is None or event.data.as_of > reconciled):
                reconciled = event.data.as_of
            if isinstance(event, IntentIssuedEvent):
                problem = _limits_problem(draft.snapshot(), event, issued, reconciled)
                if problem is not None:
                    found.append(_violation(5, account, (
                        f"after IntentIssued at sequence {sequence} (intent "
                        f"{event.data.intent_id}, signal {event.data.signal_id}): {problem}")))
                issued.append(event)
    return found


# The order-rate limit counts the intents issued in this long up to each one (its own included).
ORDER_RATE_WINDOW = timedelta(seconds=60)


def _limits_problem(state: AccountState, event: IntentIssuedEvent,
                    earlier: Sequence[IntentIssuedEvent],
                    reconciled: datetime | None = None) -> str | None:
    """Return the limits the account is beyond right after `event`, given the intents before it.

    `state` is the fold right after the intent; `earlier` every IntentIssued before it in the
    stream; `reconciled` the latest broker `as_of` of a PositionsReconciled before it. A
    reducing intent adds no risk only if it truly reduces (`_reduced_position`).
    """
    limits = state.limits
    if limits is None:
        return "no limits were ever set: nothing may be issued"
    issued = event.data
    breaches: list[str] = []
    reduced = (_reduced_position(state, issued.position_id, issued.symbol, issued.side,
                                 issued.quantity, issued.intent_id) if issued.reducing else None)
    if reduced is None:
        # Marked reducing, the fold reserved nothing for it; judged as an opening, it counts.
        breaches += _risk_breaches(state, issued.symbol, issued.quantity, issued.limit_price,
                                   issued.multiplier, limits, unreserved=issued.reducing)
        breaches += _reconcile_breaches(event, reconciled, limits)
    breaches += _pace_breaches(event, earlier, limits)
    return "; ".join(breaches) if breaches else None


def _risk_breaches(state: AccountState, symbol: str, quantity: decimal.Decimal,
                   limit_price: decimal.Decimal, multiplier: decimal.Decimal,
                   limits: Limits, *, unreserved: bool = False) -> list[str]:
    """Return the opening limits (positions, exposure, underlying, order) the state is beyond.

    `unreserved`: the order is pending in `state` but reserves nothing there (it was marked
    reducing), so its position and notional are added here.
    """
    # The dispatcher computes in the ledger's decimal context; so must its judge.
    with decimal.localcontext(DECIMAL_CONTEXT):
        order = notional(quantity, limit_price, multiplier)
        added = order if unreserved else decimal.Decimal(0)
        exposure = state.exposure + added
        name = underlying(symbol)
        on_name = sum((p.notional for p in state.positions.values()
                       if underlying(p.symbol) == name), decimal.Decimal(0))
        # A pending reduction reserves nothing (nor does it in state.exposure).
        on_name += sum((i.notional for i in state.pending.values()
                        if not i.reducing and underlying(i.symbol) == name), decimal.Decimal(0))
        on_name += added
    breaches: list[str] = []
    pending = state.pending_count + (1 if unreserved else 0)
    positions = state.open_positions + pending
    if positions > limits.max_open_positions:
        breaches.append(f"open {state.open_positions} + pending {pending} = "
                        f"{positions} positions > max_open_positions {limits.max_open_positions}")
    if exposure > limits.max_exposure:
        breaches.append(f"exposure {_money(exposure)} > max_exposure "
                        f"{_money(limits.max_exposure)}")
    if limits.max_underlying_exposure is not None and on_name > limits.max_underlying_exposure:
        breaches.append(f"{name} exposure {_money(on_name)} > max_underlying_exposure "
                        f"{_money(limits.max_underlying_exposure)}")
    if limits.max_order_notional is not None and order > limits.max_order_notional:
        breaches.append(f"order notional {_money(order)} > max_order_notional "
                        f"{_money(limits.max_order_notional)}")
    return breaches


def _reconcile_breaches(event: IntentIssuedEvent, reconciled: datetime | None,
                        limits: Limits) -> list[str]:
    """Return the reconciliation age limit an opening went beyond: it needs the broker's
    positions reconciled (PositionsReconciled) as of at most max_reconcile_age_s before it."""
    limit_s = limits.max_reconcile_age_s
    if limit_s is None:
        return []
    if reconciled is None:
        return [f"opened without any PositionsReconciled before it, with max_reconcile_age_s "
                f"{limit_s}"]
    # The gate's figure: milliseconds, rounded.
    age_ms = round((event.occurred_at - reconciled) / timedelta(milliseconds=1))
    if age_ms <= limit_s * 1000:
        return []
    return [f"last PositionsReconciled as of {format_time(reconciled)} is {age_ms / 1000:g} s "
            f"old at {event.occurred_at.isoformat()} > max_reconcile_age_s {limit_s}"]


def _pace_breaches(event: IntentIssuedEvent, earlier: Sequence[IntentIssuedEvent],
                   limits: Limits) -> list[str]:
    """Return the order-rate and duplicate-order limits an intent went beyond."""
    at = event.occurred_at
    breaches: list[str] = []
    rate = limits.max_orders_per_minute
    if rate is not None:
        recent = [e for e in earlier if e.occurred_at > at - ORDER_RATE_WINDOW]
        if len(recent) + 1 > rate:
            first = recent[0] if recent else event
            breaches.append(
                f"{len(recent) + 1} intents issued in the 60 s up to {at.isoformat()} (the "
                f"first {first.data.intent_id} at sequence {first.sequence}) > "
                f"max_orders_per_minute {rate}")
    window = limits.duplicate_window_s
    if window is not None:
        mine = _order_of(event)
        twin = next((e for e in reversed(earlier)
                     if e.occurred_at > at - timedelta(seconds=window)
                     and _order_of(e) == mine), None)
        if twin is not None:
            breaches.append(
                f"identical to intent {twin.data.intent_id} at sequence {twin.sequence} "
                f"({_order(mine)}), issued {(at - twin.occurred_at).total_seconds():g} s "
                f"before it, within duplicate_window_s {window}")
    return breaches


def _order_of(event: IntentIssuedEvent) -> tuple[object, ...]:
    """Return what makes two intents identical orders: symbol, side, quantity, limit price."""
    data = event.data
    return (data.symbol, data.side, data.quantity, data.limit_price)


def _reduced_position(state: AccountState, position_id: str | None, symbol: str, side: str,
                      quantity: decimal.Decimal, intent_id: str | None = None) -> Position | None:
    """Return the open position an order only reduces: it names it, takes the opposite side,
    the same symbol and at most its open quantity less what the other pending reductions of it
    will take (README, "Limits, trading states and gates"); `intent_id`: the order itself when
    it is already pending. None when the order would open or add risk. The checker's own
    reading, not the gates'."""
    position = state.positions.get(position_id) if position_id is not None else None
    if position is None or position.side == side or position.symbol != symbol:
        return None
    spoken_for = sum((i.quantity for i in state.pending.values()
                      if i.reducing and i.position_id == position.position_id
                      and i.intent_id != intent_id), decimal.Decimal(0))
    if quantity > position.quantity - spoken_for:
        return None
    return position


# --- Check 6: decisions ---------------------------------------------------------------------------


def check_6_decisions(observation: Observation) -> list[Violation]:
    """Return every decision not made on the head's true figures, and every orphan intent."""
    found: list[Violation] = []
    for account in _accounts(observation):
        events = _replayable(account, _stream(observation, account))
        draft = Folding(initial_state(account))
        for sequence, event in enumerate(events, start=1):
            problem: str | None = None
            if isinstance(event, SignalEvaluatedEvent):
                before = draft.snapshot()
                problem = _decision_problem(before, event, sequence)
                if problem is None:
                    problem = _missing_intent(before, event, events[sequence:sequence + 1],
                                              sequence)
            elif isinstance(event, IntentIssuedEvent):
                problem = _orphan_intent(event, events[sequence - 2:sequence - 1], sequence)
            if problem is not None:
                found.append(_violation(6, account, problem))
            draft.step(event, sequence)
    return found


def _decision_problem(before: AccountState, event: SignalEvaluatedEvent,
                      sequence: int) -> str | None:
    """Return how a recorded decision departs from the decision the store's truth gives."""
    data = event.data
    what = f"SignalEvaluated at sequence {sequence} (signal {data.signal_id})"
    head = sequence - 1
    if data.as_of_sequence != head:
        return (f"{what} was decided as of sequence {data.as_of_sequence}: expected the head "
                f"{head}")
    if data.signal.signal_id != data.signal_id or data.signal.account != event.account:
        return (f"{what} records signal {data.signal.signal_id} of account "
                f"{data.signal.account!r}")
    if data.allowed and before.halted:
        return (f"{what} was allowed while the account was halted "
                f"({before.halt_reason or 'no reason given'})")
    if data.allowed and before.reducing and _signal_reduces(before, data.signal) is None:
        return (f"{what} was allowed while the account was reducing "
                f"({before.halt_reason or 'no reason given'}) but opens risk: "
                f"{data.signal.side} {format_decimal(data.signal.quantity)} "
                f"{data.signal.symbol} reduces no open position "
                f"(position_id {data.signal.position_id})")
    freshness = _recorded_freshness(data, head)
    if isinstance(freshness, str):
        return f"{what}: {freshness}"
    with decimal.localcontext(DECIMAL_CONTEXT):
        truth = gates.evaluate(before, data.signal, event.occurred_at, freshness,
                               max_signal_age=_recorded_max_age(data))
    mismatch = _gate_mismatch(data.gates, truth.gates)
    if mismatch is not None:
        return f"{what} {mismatch} (state at sequence {head})"
    if data.allowed != truth.allowed:
        return f"{what} recorded allowed={data.allowed} but its gates give {truth.allowed}"
    return None


def _recorded_freshness(data: SignalEvaluated, head: int) -> gates.Freshness | str:
    """Return the freshness the dispatcher saw, from its recorded projection_stale gate.

    How far its projection lagged and its fold bound describe the dispatcher's view, not the
    account, so they are taken as recorded: whatever they were, once the tail is folded the
    figures must be those of the store at the head, and a lag beyond the bound must fail closed.
    """
    first = data.gates[0] if data.gates else None
    if first is None or first.gate != gates.PROJECTION_STALE:
        return f"first recorded gate is {first.gate if first else None}: expected projection_stale"
    lag, bound = first.value, first.limit
    if lag is None or bound is None or not _whole(lag) or not _whole(bound):
        return (f"projection_stale recorded lag {lag} and fold bound {bound}: expected whole "
                "numbers")
    return gates.Freshness(head=head, state_sequence=head - int(lag), fold_bound=int(bound))


def _recorded_max_age(data: SignalEvaluated) -> timedelta | None:
    """Return the signal age limit the dispatcher applied, from its recorded gate.

    A policy of the dispatcher (a live one checks, a file replay need not), not of the account:
    taken as recorded, while the age itself is recomputed from the signal and the decision.
    """
    recorded = next((g for g in data.gates if g.gate == gates.SIGNAL_STALE), None)
    if recorded is None or recorded.limit is None:
        return None
    return timedelta(seconds=float(recorded.limit))


def _whole(number: decimal.Decimal) -> bool:
    return number.is_finite() and number == number.to_integral_value()


def _gate_mismatch(recorded: Sequence[GateResult], truth: Sequence[GateResult]) -> str | None:
    for index in range(max(len(recorded), len(truth))):
        mine = recorded[index] if index < len(recorded) else None
        true = truth[index] if index < len(truth) else None
        if mine != true:
            name = mine.gate if mine is not None else true.gate if true is not None else "?"
            return (f"recorded gate {name} as {_show_gate(mine)} but the truth is "
                    f"{_show_gate(true)}")
    return None


def _show_gate(gate: GateResult | None) -> str:
    if gate is None:
        return "absent"
    return (f"{gate.reason!r} (passed={gate.passed}, value={_money(gate.value)}, "
            f"limit={_money(gate.limit)})")


def _signal_reduces(state: AccountState, signal: Signal) -> Position | None:
    return _reduced_position(state, signal.position_id, signal.symbol, signal.side,
                             signal.quantity)


def _missing_intent(before: AccountState, event: SignalEvaluatedEvent,
                    following: Sequence[Event], sequence: int) -> str | None:
    data = event.data
    if not data.allowed:
        return None
    intent = following[0] if following else None
    if not isinstance(intent, IntentIssuedEvent) or intent.data.signal_id != data.signal_id:
        shown = "nothing" if intent is None else f"{intent.type} {intent.event_id}"
        return (f"allowed SignalEvaluated at sequence {sequence} (signal {data.signal_id}) is "
                f"followed by {shown}: expected IntentIssued for it at sequence {sequence + 1}")
    signal, issued = data.signal, intent.data
    ordered = (signal.symbol, signal.instrument, signal.side, signal.quantity,
               signal.limit_price, signal.multiplier)
    reserved = (issued.symbol, issued.instrument, issued.side, issued.quantity,
                issued.limit_price, issued.multiplier)
    if ordered != reserved:
        # The gates judged the signal's order: an intent for anything else was never judged.
        return (f"IntentIssued at sequence {sequence + 1} reserves {_order(reserved)} but signal "
                f"{data.signal_id} asked for {_order(ordered)}")
    reduced = _signal_reduces(before, signal)
    if issued.reducing != (reduced is not None):
        truth = (f"reduces position {reduced.position_id}" if reduced is not None
                 else f"reduces no open position (position_id {signal.position_id})")
        return (f"IntentIssued at sequence {sequence + 1} is marked reducing={issued.reducing} "
                f"but signal {data.signal_id} {truth}")
    if reduced is not None and issued.position_id != reduced.position_id:
        return (f"reducing IntentIssued at sequence {sequence + 1} names position "
                f"{issued.position_id} but signal {data.signal_id} reduces "
                f"{reduced.position_id}")
    return None


def _order(fields: tuple[object, ...]) -> str:
    return " ".join(str(f) for f in fields)


def _orphan_intent(event: IntentIssuedEvent, preceding: Sequence[Event],
                   sequence: int) -> str | None:
    decision = preceding[0] if preceding else None
    if (isinstance(decision, SignalEvaluatedEvent) and decision.data.allowed
            and decision.data.signal_id == event.data.signal_id):
        return None
    shown = "nothing" if decision is None else f"{decision.type} {decision.event_id}"
    return (f"IntentIssued at sequence {sequence} (intent {event.data.intent_id}, signal "
            f"{event.data.signal_id}) follows {shown}: expected the allowed SignalEvaluated of "
            "its signal right before it")


# --- Check 7: dead letters ------------------------------------------------------------------------


def check_7_dead_letters(observation: Observation) -> list[Violation]:
    """Return every acknowledged hostile message not dead-lettered, every reasonless letter."""
    found: list[Violation] = []
    explained: Counter[tuple[bytes | None, bytes | None]] = Counter()
    for letter in observation.dead_letters:
        reason = letter.header(REASON_HEADER)
        if reason is None or not reason.strip():
            found.append(_violation(7, None, (
                f"dead letter {letter.topic}[{letter.partition}]@{letter.offset} (key "
                f"{_excerpt(letter.key)}, value {_excerpt(letter.value)}) has no "
                f"{REASON_HEADER} header")))
        else:
            explained[(letter.key, letter.value)] += 1
    # Two identical hostile messages are two messages: each needs its own dead letter.
    for hostile in observation.hostile:
        if hostile.expect != DEAD_LETTER_EXPECTED or not hostile.acknowledged:
            continue
        if explained[(hostile.key, hostile.value)] > 0:
            explained[(hostile.key, hostile.value)] -= 1
            continue
        found.append(_violation(7, None, (
            f"hostile {hostile.kind} message to {hostile.topic} (key {_excerpt(hostile.key)}, "
            f"value {_excerpt(hostile.value)}) was acknowledged but no dead letter with a "
            f"{REASON_HEADER} carries it")))
    return found


# --- Check 8: writers ----------------------------------------------------------------------------


def check_8_writers(observation: Observation) -> list[Violation]:
    """Return every stored event appended by a role that may not write its type to its account."""
    found: list[Violation] = []
    for account in _accounts(observation):
        writers = observation.writers.get(account, {})
        for event in _stream(observation, account):
            assert event.sequence is not None
            role = writers.get(event.sequence)
            kind, own = observation.role_kinds.get(role or "", (None, None))
            rightful = EVENT_WRITERS[event.type]
            if kind == rightful and (kind != "dispatcher" or own == account):
                continue
            what = f"{kind} of account {own}" if kind == "dispatcher" else (kind or "no job")
            found.append(_violation(8, account, (
                f"{event.type} at sequence {event.sequence} was appended by role {role} "
                f"({what}); only the {rightful} of the account may append it")))
    return found


# --- Check 9: live orders ------------------------------------------------------------------------

# Between two clocks of one machine: the dispatcher's, which sets `expires_at`, and the database's,
# which stamps the order when the relay proves it live.
LIVENESS_TOLERANCE = timedelta(seconds=1)


def check_9_live_orders(observation: Observation) -> list[Violation]:
    """Return every order sent to the router that was dead when the relay proved it live, and
    every stored cancel the router never heard of.

    The relay stamps each order with the database clock of its liveness check (the record's
    timestamp) and the stream head that check read (header `checked_head`). Dead: past its expiry
    at that moment, or, among the events up to that head, expired, rejected, cancelled or its
    account halted. An `IntentCancelled` on `order-intents` is a cancel, never dead: it only has
    to be there for every one the store holds.
    """
    found: list[Violation] = []
    routed_cancels: set[uuid.UUID] = set()
    for record in observation.order_intents:
        decoded = _decoded(record)
        if isinstance(decoded, str):
            continue  # forged or foreign: check 3's and 7's business
        if isinstance(decoded, IntentCancelledEvent):
            routed_cancels.add(decoded.event_id)
            continue
        if not isinstance(decoded, IntentIssuedEvent):
            continue
        account = decoded.account
        if account not in observation.accounts:
            continue
        sent = datetime.fromtimestamp(record.timestamp_ms / 1000, tz=UTC)
        problem = _dead_when_sent(_stream(observation, account), decoded, sent,
                                  record.header("checked_head"))
        if problem is not None:
            found.append(_violation(9, account, (
                f"intent {decoded.data.intent_id} was sent to the router at "
                f"{sent.isoformat()} ({record.topic}[{record.partition}]@{record.offset}) "
                f"{problem}")))
    for account in _accounts(observation):
        for event in _stream(observation, account):
            if isinstance(event, IntentCancelledEvent) and event.event_id not in routed_cancels:
                found.append(_violation(9, account, (
                    f"IntentCancelled at sequence {event.sequence} (intent "
                    f"{event.data.intent_id}, event {event.event_id}) never reached "
                    "order-intents: the router cannot cancel it at the broker")))
    return found


def _dead_when_sent(events: Sequence[Event], intent: IntentIssuedEvent, sent: datetime,
                    checked_head: str | None) -> str | None:
    if sent > intent.data.expires_at + LIVENESS_TOLERANCE:
        return f"after it expired at {intent.data.expires_at.isoformat()}"
    if checked_head is None or not checked_head.isdigit():
        return ("without the stream head its liveness was checked at "
                f"(checked_head {checked_head!r})")
    head = int(checked_head)
    assert intent.sequence is not None
    if head < intent.sequence:
        return f"checked at head {head}, before the intent itself (sequence {intent.sequence})"
    halted = False
    for event in events:
        assert event.sequence is not None
        if event.sequence > head:
            break
        if isinstance(event.data, IntentExpired | IntentRejected | IntentCancelled) \
                and event.data.intent_id == intent.data.intent_id:
            return f"after the store recorded its {event.type} (sequence {event.sequence})"
        if event.type in _TRADING_STATE_TYPES:
            halted = event.type == "TradingHalted"
    return f"while its account was halted (checked at head {head})" if halted else None


# The events that set an account's trading state: the latest one up to a head is in force.
_TRADING_STATE_TYPES = frozenset({"TradingHalted", "TradingReduced", "TradingResumed"})


# --- Check 10: reconciliation --------------------------------------------------------------------

# What changes what an account holds: the executions a broker's book is made of.
_EXECUTION_TYPES = frozenset({"OrderFilled", "PositionClosed"})
# Between the campaign's clock, which stamps a broker view's `as_of`, and the database's, which
# stamps the outcome's `recorded_at`: one machine.
RECONCILE_CLOCK_TOLERANCE = timedelta(seconds=1)

Outcome = PositionsReconciledEvent | ReconciliationFailedEvent
# One difference as compared: symbol, side, the broker's quantity, the ledger's.
_Line = tuple[str, str, decimal.Decimal, decimal.Decimal]
# One line of holdings: symbol, side, quantity.
_Held = tuple[str, Side, decimal.Decimal]


def holdings_differences(ledger: Iterable[_Held], broker: Iterable[_Held],
                         ) -> tuple[Difference, ...]:
    """Return every (symbol, side) where the two sides hold different quantities, sorted.

    Each side is (symbol, side, quantity) lines, summed per symbol and side; "0" for the side
    that holds none. The checker's own reading of a reconciliation (the harness plants its
    mismatches with it too), independent of `projections.reconcile`.
    """
    ours, theirs = _summed(ledger), _summed(broker)
    zero = decimal.Decimal(0)
    return tuple(
        Difference(symbol=symbol, side=side, broker=theirs.get((symbol, side), zero),
                   ledger=ours.get((symbol, side), zero))
        for symbol, side in sorted(ours.keys() | theirs.keys())
        if ours.get((symbol, side), zero) != theirs.get((symbol, side), zero))


def _summed(lines: Iterable[_Held]) -> dict[tuple[str, Side], decimal.Decimal]:
    held: dict[tuple[str, Side], decimal.Decimal] = {}
    with decimal.localcontext(DECIMAL_CONTEXT):
        for symbol, side, quantity in lines:
            if quantity:
                held[(symbol, side)] = held.get((symbol, side), decimal.Decimal(0)) + quantity
    return held


def _lines(differences: Iterable[Difference]) -> list[_Line]:
    return sorted((d.symbol, d.side, d.broker, d.ledger) for d in differences)


def _shown(differences: Sequence[Difference]) -> str:
    if not differences:
        return "no difference"
    return "; ".join(f"{d.symbol} {d.side}: broker {format_decimal(d.broker)}, ledger "
                     f"{format_decimal(d.ledger)}" for d in differences)


@dataclass(frozen=True)
class _Judged:
    """One outcome of a reconciliation in the store, and the ledger it compared.

    `compared` is the sequence the comparison had to be at: the head under the lock (the
    outcome's sequence - 1), less the executions recorded last that occurred after the broker's
    `as_of` (the broker had not made them yet: services/reconcile.py). `positions` and
    `executions` are the fold's open positions and the executions stored at the sequence the
    outcome names (`head`), None when that is beyond the stream.
    """

    event: Outcome
    sequence: int
    compared: int
    # The first execution left out of the comparison (after `compared`), if any.
    cut_by: Event | None
    positions: Mapping[str, Position] | None
    executions: frozenset[uuid.UUID]

    @property
    def differences(self) -> tuple[Difference, ...]:
        event = self.event
        return event.data.differences if isinstance(event, ReconciliationFailedEvent) else ()

    @property
    def omitted(self) -> int:
        event = self.event
        return event.data.omitted if isinstance(event, ReconciliationFailedEvent) else 0


def check_10_reconciliation(observation: Observation) -> list[Violation]:
    """Return every broker view not judged exactly once, on the ledger as of its `as_of`, with
    the true differences; every planted mismatch not found as planted, every honest view failed
    without a race the design allows; and every disagreement with the broker that left the
    account trading."""
    found: list[Violation] = []
    wait = timedelta(seconds=observation.reconcile_wait_s)
    for account in _accounts(observation):
        events = _replayable(account, _stream(observation, account))
        judged, problems = _judgements(events)
        found += [_violation(10, account, problem) for problem in problems]
        snapshots = [s for s in observation.snapshots if s.account == account]
        sent = {s.as_of for s in snapshots}
        for as_of, outcomes in judged.items():
            if len(outcomes) > 1:
                found.append(_violation(10, account, (
                    f"broker view as of {format_time(as_of)} judged {len(outcomes)} times: "
                    + ", ".join(f"{j.event.type} at sequence {j.sequence}" for j in outcomes)
                    + ": expected one outcome per as_of")))
            if as_of not in sent:
                found.append(_violation(10, account, (
                    f"{outcomes[0].event.type} at sequence {outcomes[0].sequence} judges a "
                    f"broker view as of {format_time(as_of)} that the broker never sent")))
        executions = {e.event_id: e for e in events if e.type in _EXECUTION_TYPES}
        sent_executions = {event_id: operation for operation in observation.history
                           if operation.kind == "execution" and operation.account == account
                           for event_id in operation.event_ids}
        for snapshot in snapshots:
            outcomes = judged.get(snapshot.as_of, [])
            if not outcomes:
                if snapshot.acknowledged:
                    found.append(_violation(10, account, (
                        f"{_what(snapshot)} was acknowledged by broker-positions but never "
                        "judged: expected one PositionsReconciled or ReconciliationFailed")))
                continue
            problem = _snapshot_problem(snapshot, outcomes[0], executions, sent_executions,
                                        wait)
            if problem is not None:
                found.append(_violation(10, account, problem))
    return found


def _judgements(events: Sequence[Event]) -> tuple[dict[datetime, list[_Judged]], list[str]]:
    """Replay a stream: return its reconciliation outcomes per broker `as_of` with the ledger
    each compared, and every disagreement with the broker that left the account trading."""
    outcomes: list[tuple[int, Outcome]] = []
    problems: list[str] = []
    # The fold's open positions after each sequence (0: before the first event).
    positions: list[Mapping[str, Position]] = [{}]
    draft = Folding(initial_state(events[0].account)) if events else None
    for sequence, event in enumerate(events, start=1):
        assert draft is not None
        draft.step(event, sequence)
        positions.append(dict(draft.positions))
        if isinstance(event, PositionsReconciledEvent | ReconciliationFailedEvent):
            outcomes.append((sequence, event))
        if isinstance(event, ReconciliationFailedEvent | DiscrepancyFoundEvent) \
                and not (draft.reducing or draft.halted):
            what = (f"kind {event.data.kind}, execution {event.data.execution}"
                    if isinstance(event, DiscrepancyFoundEvent)
                    else f"as of {format_time(event.data.as_of)}")
            problems.append(f"{event.type} at sequence {sequence} ({what}) left the account "
                            "active: expected reducing (or halted) right after it")
    judged: dict[datetime, list[_Judged]] = {}
    for sequence, outcome in outcomes:
        head = outcome.data.head
        known = head < sequence
        compared = _compared(events, sequence, outcome.data.as_of)
        judged.setdefault(outcome.data.as_of, []).append(_Judged(
            event=outcome, sequence=sequence, compared=compared,
            cut_by=events[compared] if compared < sequence - 1 else None,
            positions=positions[head] if known else None,
            executions=frozenset(e.event_id for e in events[:head] if known
                                 and e.type in _EXECUTION_TYPES)))
    return judged, problems


def _compared(events: Sequence[Event], sequence: int, as_of: datetime) -> int:
    """Return the sequence an outcome at `sequence` had to compare the broker's view with: the
    head before it, less the executions recorded last that occurred after `as_of`."""
    compared = sequence - 1
    for event in reversed(events[:sequence - 1]):
        if event.type not in _EXECUTION_TYPES:
            continue
        if event.occurred_at <= as_of:
            break
        assert event.sequence is not None
        compared = event.sequence - 1
    return compared


def _what(snapshot: Snapshot) -> str:
    kind = "honest" if snapshot.injected is None else f"planted {snapshot.kind}"
    return f"{kind} broker view as of {format_time(snapshot.as_of)}"


def _snapshot_problem(snapshot: Snapshot, judged: _Judged, executions: Mapping[uuid.UUID, Event],
                      sent: Mapping[uuid.UUID, Operation], wait: timedelta) -> str | None:
    """Return how one broker view's outcome departs from what it must be."""
    event, sequence = judged.event, judged.sequence
    what = f"{_what(snapshot)} ({event.type} at sequence {sequence})"
    head = event.data.head
    if head != judged.compared or judged.positions is None:
        cut = judged.cut_by
        why = ("the head: no execution recorded last occurred after its as_of" if cut is None
               else f"just before {cut.type} {cut.event_id} at sequence {cut.sequence}, the "
                    "first of the executions recorded last that occurred after its as_of")
        return (f"{what} compared the ledger at sequence {head}: expected {judged.compared}, "
                f"{why}")
    truth = holdings_differences(
        ((p.symbol, p.side, p.quantity) for p in judged.positions.values()),
        ((line.symbol, line.side, line.quantity) for line in snapshot.positions))
    recorded = judged.differences
    expected = _lines(truth)
    if (_lines(recorded) != expected[:len(recorded)]
            or len(expected) != len(recorded) + judged.omitted):
        omitted = f" (and {judged.omitted} omitted)" if judged.omitted else ""
        return (f"{what} records {_shown(recorded)}{omitted} but the view against the ledger "
                f"at sequence {head} gives {_shown(truth)}")
    if not snapshot.acknowledged:
        return None  # it may have arrived any time later: only its judgement is judged
    missing = sorted(snapshot.accounted - judged.executions)
    extra = sorted(judged.executions - snapshot.accounted)
    if missing or extra:
        return _race_problem(what, snapshot, judged, missing, extra, executions, sent, wait)
    if snapshot.injected is None:
        if truth:
            return (f"{what} failed with {_shown(truth)} though the ledger at sequence {head} "
                    f"held exactly the {len(snapshot.accounted)} executions the broker had "
                    "reported")
        return None
    if _lines(recorded) != _lines(snapshot.injected):
        return (f"{what} records {_shown(recorded)}: expected exactly the planted "
                f"{_shown(snapshot.injected)}")
    return None


def _race_problem(what: str, snapshot: Snapshot, judged: _Judged, missing: Sequence[uuid.UUID],
                  extra: Sequence[uuid.UUID], executions: Mapping[uuid.UUID, Event],
                  sent: Mapping[uuid.UUID, Operation], wait: timedelta) -> str | None:
    """Return why the ledger compared may not differ from the view's executions as it does, or
    None when it is a race the design allows."""
    head = judged.event.data.head
    recorded_at = judged.event.recorded_at
    for event_id in missing:
        stored = executions.get(event_id)
        if stored is None:
            return (f"{what}: the broker reported execution {event_id} before the view and saw "
                    "it acknowledged, but the store never recorded it")
        assert stored.sequence is not None
        if stored.sequence < judged.sequence:
            return (f"{what} compared the ledger at sequence {head}, without {stored.type} "
                    f"{event_id} (sequence {stored.sequence}), which the broker reported "
                    "before the view and the store recorded before the judgement")
        waited = None if recorded_at is None else recorded_at - snapshot.as_of
        if waited is None or waited < wait - RECONCILE_CLOCK_TOLERANCE:
            shown = "an unknown time" if waited is None else f"{waited.total_seconds():.3f} s"
            return (f"{what} was judged at sequence {judged.sequence}, {shown} after its "
                    f"as_of, before {stored.type} {event_id} (sequence {stored.sequence}) was "
                    f"recorded, which the broker reported before the view: ingest must wait "
                    f"up to {wait.total_seconds():g} s for the executions on the topic")
    for event_id in extra:
        stored = executions[event_id]
        operation = sent.get(event_id)
        if operation is None:
            return (f"{what}: the ledger at sequence {head} holds {stored.type} {event_id} "
                    f"(sequence {stored.sequence}), which the broker never sent")
        if operation.invoked_at < snapshot.sent_at:
            return (f"{what}: the ledger at sequence {head} holds {stored.type} {event_id} "
                    f"(sequence {stored.sequence}), which the broker sent before the view but "
                    "left out of it")
    return None


# --- Entry points ---------------------------------------------------------------------------------

_CHECK_FUNCTIONS: tuple[Callable[[Observation], list[Violation]], ...] = (
    check_1_sequences,
    check_2_history,
    check_3_distribution,
    check_4_projection,
    check_5_limits,
    check_6_decisions,
    check_7_dead_letters,
    check_8_writers,
    check_9_live_orders,
    check_10_reconciliation,
)
assert len(_CHECK_FUNCTIONS) == len(CHECKS)


def _all_violations(observation: Observation) -> list[list[Violation]]:
    return [run(observation) for run in _CHECK_FUNCTIONS]


def find_violations(observation: Observation,
                    examples_max: int = EXAMPLES_PER_CHECK_MAX) -> list[Violation]:
    """Return the first `examples_max` violations of each check, in check order."""
    assert examples_max >= 1, examples_max
    return [v for found in _all_violations(observation) for v in found[:examples_max]]


def check(observation: Observation) -> None:
    """Return None if the observation satisfies every check.

    Raises:
        AssertionError: `seed=S: check N (name): <first counter-example>`, followed by how many
            other violations there are and in which checks.
    """
    found = _all_violations(observation)
    total = sum(len(violations) for violations in found)
    if total == 0:
        return
    first = next(violations[0] for violations in found if violations)
    others = total - 1
    if others == 0:
        tail = " (the only violation)"
    else:
        counts = ", ".join(f"check {v[0].check} x{len(v)}" for v in found if v)
        tail = f" (and {others} other violation{'s' if others > 1 else ''}; in all: {counts})"
    raise AssertionError(f"seed={observation.seed}: {first}{tail}")
