"""Goal: the fault campaign's checker passes a clean observation and catches each kind of bug the
campaign hunts, naming the concrete culprit (sequence, id, figures) so a failing seed can be read.

Method: a small stand-in ledger (`Ledger`) appends events the way the store does (sequences 1..n,
global positions, recorded_at) and decides signals the way the dispatcher does: it folds the
account, runs the real `gates.evaluate` and appends `SignalEvaluated` (+ `IntentIssued` when
allowed, marked reducing when the signal reduces an open position), so the recorded gates are
genuine; it halts as the operator does, cancelling every pending intent. It can also be told to
err like a buggy dispatcher (a false view of the state, a stale `as_of_sequence`, a missing
intent, a wrong reducing label). The broker's views (`broker_view`) are the ledger's open
positions unless told otherwise, and `judge` records them as ingest does, with the real
comparison at the head, unless told to err like a buggy judge (a wrong verdict, a stale head).
`observe` then plays a correct rest of the system for a store:
the projection is the fold, `ledger-events` is what the relay publishes (with a redelivery, a
hostile forged record and a record of another account), `order-intents` the live intents and
every cancel, the dead letters hold the hostile messages, the history is what the clients were
told. Each test
plants one bug in a fresh clean observation, or in a store the stand-in built with a bug, and
asserts the checker's finding: its check number and the culprit in its message. Pure: no
database, no Kafka, no clock.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from dispatcher import gates
from ledger.events import (
    EVENT_WRITERS,
    BrokerPosition,
    BrokerPositions,
    Difference,
    DiscrepancyFound,
    Event,
    EventData,
    IntentCancelled,
    IntentCancelledEvent,
    IntentExpired,
    IntentIssued,
    IntentIssuedEvent,
    IntentRejected,
    IntentRejectedEvent,
    LimitsSet,
    OrderFilled,
    PositionClosed,
    PositionsReconciled,
    ReconciliationFailed,
    ReconciliationFailedEvent,
    Side,
    Signal,
    SignalEvaluated,
    SignalEvaluatedEvent,
    TradingHalted,
    TradingHaltedEvent,
    TradingReduced,
    TradingResumed,
    TradingResumedEvent,
    build_event,
    decode_event,
    encode_event,
    natural_key,
    with_ledger_fields,
)
from projections import fold as folding
from projections.fold import AccountState, Limits, fold, initial_state
from projections.reconcile import compare
from tests.faults.checker import (
    CHECKS,
    Violation,
    check,
    check_9_live_orders,
    check_10_reconciliation,
    find_violations,
)
from tests.faults.model import Hostile, Observation, Operation, Outcome, Record, Snapshot

SEED = 7
ALPHA, BETA, GAMMA = "alpha", "beta", "gamma"
# An account of another run sharing the topic: the checker must leave it alone.
DELTA = "delta"
ACCOUNTS = [ALPHA, BETA, GAMMA]
# The relay keys records by account; these are the partitions those keys land on.
PARTITIONS = {ALPHA: 0, BETA: 1, GAMMA: 0, DELTA: 1}
LEDGER_EVENTS, EXECUTIONS, SIGNALS, DEAD_LETTERS = (
    "ledger-events", "executions", "signals", "dead-letters")
OPENED_AT = datetime(2026, 2, 3, 14, 30, tzinfo=UTC)
STEP = timedelta(seconds=1)
RECORDING_DELAY = timedelta(milliseconds=5)
SIGNAL_TRANSIT = timedelta(milliseconds=200)
INTENT_TTL = timedelta(seconds=60)
FOLD_BOUND = 1000
MULTIPLIER = Decimal("100")
# The relay died after publishing alpha's sequence 5 but before marking 4 and 5 published.
REDELIVERED_AFTER = (ALPHA, 5)
REDELIVERED_FROM = 4
FORGED_SEQUENCE = 99

View = Callable[[AccountState], AccountState]


def intent_id(signal_id: str) -> str:
    return f"I-{signal_id}"


def position_id(signal_id: str) -> str:
    return f"P-{signal_id}"


def filled(fill_id: str, position: str, symbol: str, quantity: str, price: str, *,
           intent: str | None = None, fees: str | None = None) -> OrderFilled:
    return OrderFilled(fill_id=fill_id, position_id=position, symbol=symbol, instrument="option",
                       side="long", quantity=Decimal(quantity), price=Decimal(price),
                       multiplier=MULTIPLIER, intent_id=intent,
                       fees=None if fees is None else Decimal(fees))


def ignoring_pending(state: AccountState) -> AccountState:
    """The view of a dispatcher that forgets orders sent but not yet filled (the incident)."""
    return dataclasses.replace(state, pending={})


def ignoring_open_positions(state: AccountState) -> AccountState:
    """The view of a dispatcher whose query missed the account's positions ("Positions 0/5")."""
    return dataclasses.replace(state, positions={})


def not_halted(state: AccountState) -> AccountState:
    return dataclasses.replace(state, halted=False, halt_reason=None)


def not_reducing(state: AccountState) -> AccountState:
    return dataclasses.replace(state, reducing=False, halt_reason=None)


def opening_freely(state: AccountState) -> AccountState:
    """The view of a dispatcher that sees neither the reducing state nor the positions."""
    return ignoring_open_positions(not_reducing(state))


def forgetting_recent(state: AccountState) -> AccountState:
    """The view of a dispatcher that lost the intents it issued lately (rate and duplicates)."""
    return dataclasses.replace(state, recent_intents=())


def with_limits(state: AccountState) -> AccountState:
    limits = Limits(max_open_positions=5, max_exposure=Decimal("10000"), max_order_notional=None,
                    daily_loss_limit=None)
    return dataclasses.replace(state, limits=limits)


class Ledger:
    """The store and a correct dispatcher, unless a decision is told to err like a buggy one."""

    def __init__(self, store: Mapping[str, Sequence[Event]] | None = None) -> None:
        self.streams = {account: list(events) for account, events in (store or {}).items()}
        self.states = {account: fold(events, account=account)
                       for account, events in self.streams.items()}
        stored = [event for events in self.streams.values() for event in events]
        self.global_position = max((e.global_position or 0 for e in stored), default=-1) + 1
        self.now = max((e.occurred_at for e in stored), default=OPENED_AT)

    def state(self, account: str) -> AccountState:
        return self.states.get(account, initial_state(account))

    def wait(self, duration: timedelta) -> None:
        self.now += duration

    def append(self, account: str, data: EventData, event_id: uuid.UUID | None = None) -> Event:
        self.now += STEP
        return self._store(build_event(account, self.now, data, event_id))

    def decide(self, account: str, signal_id: str, symbol: str, quantity: str, limit_price: str,
               *, lag: int = 0, view: View | None = None, as_of: int | None = None,
               issue: bool | None = None, side: Side = "long", reduces: str | None = None,
               reducing: bool | None = None) -> gates.Decision:
        """Decide a signal as the dispatcher does: gates on the head's state, one append.

        `reduces` names the open position the signal means to reduce; `reducing` overrides the
        intent's flag (a buggy dispatcher's label).
        """
        self.now += STEP
        state = self.state(account)
        head = state.sequence
        signal = Signal(signal_id=signal_id, account=account,
                        occurred_at=self.now - SIGNAL_TRANSIT, symbol=symbol,
                        instrument="option", side=side, quantity=Decimal(quantity),
                        limit_price=Decimal(limit_price), multiplier=MULTIPLIER,
                        position_id=reduces)
        # A lag within the bound means the dispatcher folded the tail: it still sees the head.
        freshness = gates.Freshness(head=head, state_sequence=head - lag, fold_bound=FOLD_BOUND)
        seen = state if view is None else view(state)
        decision = gates.evaluate(seen, signal, self.now, freshness)
        reduced = gates.reduces(seen, signal)
        evaluated = SignalEvaluated(signal_id=signal_id, signal=signal, allowed=decision.allowed,
                                    gates=decision.gates,
                                    as_of_sequence=head if as_of is None else as_of)
        events = [build_event(account, self.now, evaluated)]
        if decision.allowed if issue is None else issue:
            events.append(build_event(account, self.now, IntentIssued(
                intent_id=intent_id(signal_id), signal_id=signal_id,
                position_id=position_id(signal_id) if reduced is None else reduced.position_id,
                symbol=symbol, instrument="option", side=side, quantity=signal.quantity,
                limit_price=signal.limit_price, multiplier=MULTIPLIER,
                expires_at=self.now + INTENT_TTL,
                reducing=reduced is not None if reducing is None else reducing)))
        for event in events:
            self._store(event)
        return decision

    def halt(self, account: str, reason: str) -> list[Event]:
        """Halt as the operator does: the halt and a cancel of every pending intent, at once."""
        self.now += STEP
        halt: list[EventData] = [TradingHalted(reason=reason)]
        cancels: list[EventData] = [
            IntentCancelled(intent_id=pending, reason=f"trading halted: {reason}")
            for pending in sorted(self.state(account).pending)]
        return [self._store(build_event(account, self.now, data)) for data in halt + cancels]

    def _store(self, event: Event) -> Event:
        stream = self.streams.setdefault(event.account, [])
        stored = with_ledger_fields(event, sequence=len(stream) + 1,
                                    recorded_at=event.occurred_at + RECORDING_DELAY,
                                    global_position=self.global_position)
        self.global_position += 1
        stream.append(stored)
        self.states[event.account] = fold([stored], self.state(event.account))
        return stored


def clean_store() -> dict[str, list[Event]]:
    """A trading morning of three accounts, every decision made on the head's true figures."""
    ledger = Ledger()
    ledger.append(ALPHA, LimitsSet(max_open_positions=3, max_exposure=Decimal("10000"),
                                   max_order_notional=Decimal("5000"),
                                   daily_loss_limit=Decimal("2000")))
    ledger.append(BETA, LimitsSet(max_open_positions=2, max_exposure=Decimal("5000")))
    ledger.append(GAMMA, filled("F-G1", "P-G1", "SPY 260220P00600000", "10", "1.00"))
    ledger.append(ALPHA, filled("F-A1", "P-A1", "MSFT 260220P00400000", "2", "6.00"))
    ledger.decide(ALPHA, "S-A1", "AAPL 260220P00220000", "1", "5.00")
    ledger.decide(BETA, "S-B1", "NVDA 260220P00120000", "2", "8.00")
    ledger.append(ALPHA, filled("F-A2", position_id("S-A1"), "AAPL 260220P00220000", "1", "4.90",
                                intent=intent_id("S-A1")))
    ledger.append(BETA, filled("F-B1", position_id("S-B1"), "NVDA 260220P00120000", "2", "7.95",
                               intent=intent_id("S-B1"), fees="1.30"))
    ledger.decide(ALPHA, "S-A2", "CRM 260220P00300000", "1", "7.00")
    ledger.decide(ALPHA, "S-A3", "META 260220P00650000", "1", "3.00")  # 2 open + 1 pending: full
    ledger.decide(GAMMA, "S-G1", "QQQ 260220P00500000", "1", "2.00")  # limits never set
    ledger.append(ALPHA, IntentRejected(intent_id=intent_id("S-A2"), reason="price off market"))
    ledger.append(ALPHA, PositionClosed(position_id="P-A1", price=Decimal("7.00"),
                                        reason="take_profit"))
    ledger.decide(ALPHA, "S-A4", "AVGO 260220P00330000", "1", "9.00", lag=2)
    ledger.decide(BETA, "S-B2", "TSLA 260220P00400000", "5", "9.00")  # exposure over the limit
    ledger.wait(INTENT_TTL)
    ledger.append(ALPHA, IntentExpired(intent_id=intent_id("S-A4"), reason="not filled in 60s"))
    ledger.append(BETA, PositionClosed(position_id=position_id("S-B1"), price=Decimal("7.00"),
                                       quantity=Decimal("1"), reason="stop_loss"))
    ledger.append(ALPHA, TradingHalted(reason="risk desk review"))
    ledger.decide(ALPHA, "S-A5", "QCOM 260220P00150000", "1", "2.00")  # halted
    ledger.append(ALPHA, TradingResumed(reason="review done"))
    ledger.decide(ALPHA, "S-A6", "GOOGL 260220P00180000", "1", "6.00")
    return ledger.streams


# --- The rest of a correct system, observed -------------------------------------------------------


def relay_headers(event: Event) -> tuple[tuple[str, bytes], ...]:
    return (("account", event.account.encode()), ("sequence", str(event.sequence).encode()),
            ("event_id", str(event.event_id).encode()), ("type", event.type.encode()))


def forged_event() -> Event:
    data = LimitsSet(max_open_positions=100, max_exposure=Decimal("1000000"))
    return with_ledger_fields(build_event(ALPHA, OPENED_AT, data), sequence=FORGED_SEQUENCE,
                              recorded_at=OPENED_AT, global_position=0)


def hostile_messages(store: Mapping[str, Sequence[Event]]) -> list[Hostile]:
    stranger = build_event("nobody", OPENED_AT, filled("F-X", "P-X", "IBM 260220P00200000", "1",
                                                       "1.00"))
    return [
        Hostile(topic=EXECUTIONS, key=ALPHA.encode(),
                value=b'{"account": "alpha", "type": "OrderFilled", "data": {',
                expect="dead-letter", kind="malformed-json"),
        Hostile(topic=EXECUTIONS, key=b"nobody", value=encode_event(stranger),
                expect="dead-letter", kind="unknown-account"),
        Hostile(topic=LEDGER_EVENTS, key=ALPHA.encode(), value=encode_event(forged_event()),
                expect="dead-letter", kind="future-sequence"),
        # The producer never heard back: it need not be dead-lettered, but this one was.
        Hostile(topic=SIGNALS, key=BETA.encode(), value=b"not json at all",
                expect="dead-letter", kind="malformed-json", acknowledged=False),
        Hostile(topic=LEDGER_EVENTS, key=BETA.encode(), value=encode_event(store[BETA][1]),
                expect="harmless", kind="duplicate"),
    ]


def published(store: Mapping[str, Sequence[Event]], hostile: Sequence[Hostile]) -> list[Record]:
    """What the relay (at least once) and the hostile producer left in `ledger-events`."""
    partitions: dict[int, list[Record]] = {0: [], 1: []}

    def send(key: bytes | None, value: bytes | None, partition: int,
             headers: tuple[tuple[str, bytes], ...] = ()) -> None:
        lane = partitions[partition]
        lane.append(Record(topic=LEDGER_EVENTS, partition=partition, offset=len(lane), key=key,
                           value=value, headers=headers))

    def relay(event: Event) -> None:
        send(event.account.encode(), encode_event(event), PARTITIONS[event.account],
             relay_headers(event))

    ordered = sorted((e for events in store.values() for e in events),
                     key=lambda e: e.global_position or 0)
    stranger = with_ledger_fields(build_event(DELTA, OPENED_AT, TradingHalted(reason="other run")),
                                  sequence=1, recorded_at=OPENED_AT, global_position=0)
    relay(stranger)
    for index, event in enumerate(ordered):
        relay(event)
        if (event.account, event.sequence) == REDELIVERED_AFTER:
            for again in store[ALPHA][REDELIVERED_FROM - 1:REDELIVERED_AFTER[1]]:
                relay(again)
        if index == len(ordered) // 2:
            for message in hostile:
                if message.topic == LEDGER_EVENTS and message.key is not None:
                    send(message.key, message.value, PARTITIONS[message.key.decode()])
    return partitions[0] + partitions[1]


def dead_lettered(hostile: Sequence[Hostile]) -> list[Record]:
    letters: list[Record] = []
    for message in hostile:
        if message.expect != "dead-letter":
            continue
        headers = (("dlq.reason", f"{message.kind}: refused".encode()),
                   ("dlq.topic", message.topic.encode()), ("dlq.partition", b"0"),
                   ("dlq.offset", str(len(letters)).encode()), ("dlq.consumer", b"ingest"))
        letters.append(Record(topic=DEAD_LETTERS, partition=0, offset=len(letters),
                              key=message.key, value=message.value, headers=headers))
    return letters


def told(store: Mapping[str, Sequence[Event]]) -> list[Operation]:
    """What the clients were told: ok for what the store holds, plus refusals and cut-offs."""
    operations: list[Operation] = []
    for account, events in store.items():
        for event in events:
            if event.type in ("LimitsSet", "TradingResumed", "TradingReduced"):
                operations.append(Operation(kind="append", account=account,
                                            event_ids=(event.event_id,), outcome="ok"))
            elif event.type == "TradingHalted":
                # Cut off after the commit: stored all the same.
                operations.append(Operation(kind="append", account=account,
                                            event_ids=(event.event_id,), outcome="unknown"))
            elif event.type == "IntentCancelled":
                # Appended in the halt's transaction: one operation, all or nothing.
                halt = operations[-1]
                assert halt.account == account, halt
                assert halt.event_ids, halt
                halt.event_ids += (event.event_id,)
            elif event.type in ("OrderFilled", "PositionClosed", "IntentRejected"):
                outcome: Outcome = "unknown" if account == GAMMA else "ok"
                operations.append(Operation(kind="execution", account=account,
                                            event_ids=(event.event_id,), outcome=outcome))
            elif isinstance(event, SignalEvaluatedEvent):
                operations.append(Operation(kind="signal", account=account,
                                            signal_id=event.data.signal_id, outcome="ok"))
    refused = build_event(ALPHA, OPENED_AT, LimitsSet(max_open_positions=0,
                                                      max_exposure=Decimal("0")))
    lost = [build_event(BETA, OPENED_AT, TradingHalted(reason=f"lost {n}")) for n in (1, 2)]
    unsent = build_event(BETA, OPENED_AT, filled("F-B9", "P-B9", "AMD 260220P00100000", "1",
                                                 "1.00"))
    operations += [
        Operation(kind="append", account=ALPHA, event_ids=(refused.event_id,), outcome="failed"),
        Operation(kind="append", account=BETA, event_ids=tuple(e.event_id for e in lost),
                  outcome="unknown"),
        Operation(kind="execution", account=BETA, event_ids=(unsent.event_id,),
                  outcome="failed"),
        Operation(kind="signal", account=BETA, signal_id="S-lost", outcome="unknown"),
        Operation(kind="signal", account=ALPHA, signal_id="S-refused", outcome="failed"),
        Operation(kind="signal", account=DELTA, signal_id="S-other-run", outcome="ok"),
    ]
    for index, operation in enumerate(operations):
        operation.invoked_at = float(index)
        operation.completed_at = None if operation.outcome == "unknown" else index + 0.5
    return operations


BROKER_ROLE, OPERATOR_ROLE = "ns__ingest", "ns__operator"


def account_role(account: str) -> str:
    return f"ns_{account}"


ROLE_KINDS: dict[str, tuple[str, str | None]] = {
    BROKER_ROLE: ("broker", None), OPERATOR_ROLE: ("operator", None),
    **{account_role(a): ("dispatcher", a) for a in [*ACCOUNTS, DELTA]},
}


def rightful_writers(store: Mapping[str, Sequence[Event]]) -> dict[str, dict[int, str]]:
    """Each event appended by the role whose job it is, as the database allows."""
    def role(account: str, event: Event) -> str:
        writer = EVENT_WRITERS[event.type]
        if writer == "dispatcher":
            return account_role(account)
        return BROKER_ROLE if writer == "broker" else OPERATOR_ROLE

    return {account: {e.sequence or 0: role(account, e) for e in events}
            for account, events in store.items()}


ROUTING_DELAY = timedelta(milliseconds=10)


def routed(store: Mapping[str, Sequence[Event]]) -> list[Record]:
    """What a correct relay sent the router: each intent just after it was recorded, unless its
    account was halted then (in this store nothing expires an intent before it is sent), and
    every cancel."""
    records: list[Record] = []
    for events in store.values():
        halted = False
        for event in events:
            if event.type in ("TradingHalted", "TradingResumed", "TradingReduced"):
                halted = event.type == "TradingHalted"
            if isinstance(event, IntentIssuedEvent) and not halted:
                assert event.recorded_at is not None
                sent = event.recorded_at + ROUTING_DELAY
                records.append(order_record(event, sent, len(records), head_at(events, sent)))
            elif isinstance(event, IntentCancelledEvent):
                records.append(cancel_record(event, len(records)))
    return records


def head_at(events: Sequence[Event], moment: datetime) -> int:
    """The stream head a check at that moment read: the last event recorded by then."""
    return max((e.sequence or 0 for e in events
                if e.recorded_at is not None and e.recorded_at <= moment), default=0)


def order_record(event: Event, sent: datetime, offset: int, head: int | None) -> Record:
    checked = () if head is None else (("checked_head", str(head).encode()),)
    return Record(topic="order-intents", partition=PARTITIONS[event.account], offset=offset,
                  key=event.account.encode(), value=encode_event(event),
                  headers=relay_headers(event) + checked, timestamp_ms=int(sent.timestamp() * 1000))


def cancel_record(event: Event, offset: int) -> Record:
    """A cancel as the relay routes it: the ledger's headers only, no liveness stamp."""
    assert event.recorded_at is not None
    sent = event.recorded_at + ROUTING_DELAY
    return Record(topic="order-intents", partition=PARTITIONS[event.account], offset=offset,
                  key=event.account.encode(), value=encode_event(event),
                  headers=relay_headers(event), timestamp_ms=int(sent.timestamp() * 1000))


def observe(store: Mapping[str, Sequence[Event]]) -> Observation:
    """What a correct system around this store would have left behind."""
    hostile = hostile_messages(store)
    return Observation(
        seed=SEED,
        accounts=list(ACCOUNTS),
        store={account: list(events) for account, events in store.items()},
        projection={account: fold(events, account=account) for account, events in store.items()},
        ledger_events=published(store, hostile),
        dead_letters=dead_lettered(hostile),
        history=told(store),
        hostile=hostile,
        writers=rightful_writers(store),
        role_kinds=dict(ROLE_KINDS),
        order_intents=routed(store),
    )


@pytest.fixture
def clean() -> Observation:
    return observe(clean_store())


def caught(observation: Observation, number: int, *culprits: str,
           alone: bool = False) -> Violation:
    """Return the first violation of check `number`, asserting it names every culprit."""
    violations = find_violations(observation)
    mine = [v for v in violations if v.check == number]
    assert mine, f"check {number} found nothing; all found: {violations}"
    first = mine[0]
    assert first.name == CHECKS[number]
    for culprit in culprits:
        assert culprit in first.message, f"{culprit!r} not in {first.message!r}"
    assert "\n" not in first.message
    if alone:
        assert violations == mine, violations
    return first


def records_of(observation: Observation, account: str, sequence: int) -> list[Record]:
    return [r for r in observation.ledger_events
            if r.header("account") == account and r.header("sequence") == str(sequence)]


# --- The clean observation ------------------------------------------------------------------------


def test_clean_observation_covers_what_the_checks_judge(clean: Observation) -> None:
    decisions = {e.data.signal_id: e.data for events in clean.store.values() for e in events
                 if isinstance(e, SignalEvaluatedEvent)}
    codes = {signal_id: gates.Decision(allowed=d.allowed, gates=d.gates).code
             for signal_id, d in decisions.items()}
    stored = sum(len(events) for events in clean.store.values())

    assert codes == {"S-A1": None, "S-B1": None, "S-A2": None, "S-A3": "max_open_positions",
                     "S-G1": "limits_not_set", "S-A4": None, "S-B2": "max_exposure",
                     "S-A5": "trading_halted", "S-A6": None}
    assert decisions["S-A4"].gates[0].value == 2  # decided on a lagging projection, tail folded
    assert clean.projection[ALPHA].pending  # S-A6 is still pending
    assert len(clean.ledger_events) > stored  # redeliveries, hostile and foreign records
    assert {o.outcome for o in clean.history} == {"ok", "failed", "unknown"}


def test_find_violations_when_observation_clean_returns_none(clean: Observation) -> None:
    assert find_violations(clean) == []
    check(clean)  # raises on any violation


# --- Check 1: sequences ---------------------------------------------------------------------------


def test_check_1_when_sequence_skips_names_expected_and_actual(clean: Observation) -> None:
    last = clean.store[ALPHA][-1]
    head = len(clean.store[ALPHA])
    clean.store[ALPHA][-1] = last.model_copy(update={"sequence": head + 1})

    caught(clean, 1, f"expected sequence {head} but was {head + 1}", str(last.event_id))


def test_check_1_when_fill_stored_twice_under_two_ids_names_fill_id() -> None:
    store = clean_store()
    first = next(e for e in store[BETA] if e.type == "OrderFilled")
    ledger = Ledger(store)
    again = ledger.append(BETA, first.data, event_id=uuid.UUID(int=1))

    caught(observe(ledger.streams), 1, 'fill_id="F-B1"', f"sequence {first.sequence}",
           f"sequence {again.sequence}", alone=True)


def test_check_1_when_event_id_reused_across_accounts_names_it() -> None:
    store = clean_store()
    taken = store[ALPHA][0].event_id
    store[GAMMA][0] = store[GAMMA][0].model_copy(update={"event_id": taken})

    caught(observe(store), 1, f"event id {taken} stored twice", "account alpha sequence 1",
           alone=True)


# --- Check 2: history -----------------------------------------------------------------------------

LOST_ID = uuid.UUID(int=404)


@pytest.mark.parametrize(
    ("operation", "culprit"),
    [
        pytest.param(Operation(kind="append", account=ALPHA, event_ids=(LOST_ID,), outcome="ok"),
                     f"event {LOST_ID} not stored", id="ok-append-lost"),
        pytest.param(Operation(kind="execution", account=BETA, event_ids=(LOST_ID,),
                               outcome="ok"),
                     f"event {LOST_ID} not stored", id="ok-execution-lost"),
        pytest.param(Operation(kind="signal", account=BETA, signal_id="S-404", outcome="ok"),
                     "signal S-404 never decided", id="ok-signal-never-decided"),
    ],
)
def test_check_2_when_acknowledged_operation_left_no_trace_names_it(
        clean: Observation, operation: Operation, culprit: str) -> None:
    clean.history.append(operation)

    violation = caught(clean, 2, culprit, f"history #{len(clean.history) - 1}", alone=True)

    assert violation.account == operation.account


def test_check_2_when_refused_append_was_stored_names_the_event(clean: Observation) -> None:
    stored = clean.store[ALPHA][0].event_id
    clean.history.append(Operation(kind="append", account=ALPHA, event_ids=(stored,),
                                   outcome="failed"))

    caught(clean, 2, f"event {stored} stored", "append failed", alone=True)


def test_check_2_when_cut_off_append_half_stored_names_both_halves(clean: Observation) -> None:
    stored = clean.store[BETA][0].event_id
    clean.history.append(Operation(kind="append", account=BETA, event_ids=(stored, LOST_ID),
                                   outcome="unknown"))

    caught(clean, 2, "1 of 2 events stored", str(stored), str(LOST_ID), alone=True)


def test_check_2_when_execution_stored_twice_names_it(clean: Observation) -> None:
    fill = next(e for e in clean.store[BETA] if e.type == "OrderFilled")
    twice = fill.model_copy(update={"sequence": len(clean.store[BETA]) + 1})
    clean.store[BETA].append(twice)

    caught(clean, 2, f"event {fill.event_id} stored 2 times", "execution ok")


# --- Check 3: distribution ------------------------------------------------------------------------


def test_check_3_when_stored_event_never_published_names_it(clean: Observation) -> None:
    missing = clean.store[BETA][2]
    clean.ledger_events = [r for r in clean.ledger_events if r not in records_of(clean, BETA, 3)]

    violations = find_violations(clean)

    caught(clean, 3, "sequence 4 first seen before sequence 3", alone=True)
    assert any(f"stored sequence 3 (event {missing.event_id}" in v.message
               and "never published" in v.message for v in violations), violations


def test_check_3_when_record_carries_another_event_names_both_ids(clean: Observation) -> None:
    record = records_of(clean, ALPHA, 2)[0]
    stored = clean.store[ALPHA][1]
    impostor = stored.model_copy(update={"event_id": uuid.UUID(int=2)})
    index = clean.ledger_events.index(record)
    clean.ledger_events[index] = dataclasses.replace(record, value=encode_event(impostor))

    caught(clean, 3, "sequence 2", str(impostor.event_id), str(stored.event_id), alone=True)


def test_check_3_when_partition_goes_backwards_names_the_early_sequence(
        clean: Observation) -> None:
    second, third = records_of(clean, ALPHA, 2)[0], records_of(clean, ALPHA, 3)[0]
    clean.ledger_events = [
        dataclasses.replace(r, offset=third.offset) if r == second
        else dataclasses.replace(r, offset=second.offset) if r == third else r
        for r in clean.ledger_events
    ]

    caught(clean, 3, "sequence 3 first seen before sequence 2", f"@{second.offset}", alone=True)


def test_check_3_when_record_cannot_be_decoded_names_where(clean: Observation) -> None:
    offset = max(r.offset for r in clean.ledger_events if r.partition == 0) + 1
    torn = Record(topic=LEDGER_EVENTS, partition=0, offset=offset, key=ALPHA.encode(),
                  value=b'{"event_id": "7b1c', headers=(("account", ALPHA.encode()),))
    clean.ledger_events.append(torn)

    caught(clean, 3, f"{LEDGER_EVENTS}[0]@{offset}", "JSON", alone=True)


def test_check_3_when_forged_record_not_hostile_names_its_sequence(clean: Observation) -> None:
    clean.hostile = [h for h in clean.hostile if h.kind != "future-sequence"]

    caught(clean, 3, f"sequence {FORGED_SEQUENCE}",
           f"beyond the store's head {len(clean.store[ALPHA])}", alone=True)


def test_check_3_when_header_contradicts_value_names_the_header(clean: Observation) -> None:
    record = records_of(clean, GAMMA, 2)[0]
    headers = tuple((k, b"1" if k == "sequence" else v) for k, v in record.headers)
    index = clean.ledger_events.index(record)
    clean.ledger_events[index] = dataclasses.replace(record, headers=headers)

    caught(clean, 3, "header sequence='1'", "'2'", alone=True)


# --- Check 4: projection --------------------------------------------------------------------------


def test_check_4_when_position_quantity_differs_names_the_position(clean: Observation) -> None:
    live = clean.projection[ALPHA]
    position = live.positions[position_id("S-A1")]
    positions = {**live.positions,
                 position.position_id: dataclasses.replace(position, quantity=Decimal("2"))}
    clean.projection[ALPHA] = dataclasses.replace(live, positions=positions)

    caught(clean, 4, "projection_positions", position.position_id, alone=True)


def test_check_4_when_pending_intent_lost_names_the_intent(clean: Observation) -> None:
    clean.projection[ALPHA] = dataclasses.replace(clean.projection[ALPHA], pending={})

    caught(clean, 4, "projection_pending", intent_id("S-A6"), alone=True)


def test_check_4_when_projection_behind_head_names_both(clean: Observation) -> None:
    head = len(clean.store[BETA])
    clean.projection[BETA] = fold(clean.store[BETA][:-1], account=BETA)

    caught(clean, 4, f"projection at sequence {head - 1}", f"head is {head}", alone=True)


def test_check_4_when_projection_missing_names_the_account(clean: Observation) -> None:
    del clean.projection[GAMMA]

    violation = caught(clean, 4, "no projection", alone=True)

    assert violation.account == GAMMA


# --- Check 5: limits ------------------------------------------------------------------------------


def test_check_5_when_dispatcher_ignored_pending_names_sequence_and_figures() -> None:
    ledger = Ledger(clean_store())
    ledger.decide(ALPHA, "S-A7", "INTC 260220P00030000", "1", "4.00")  # 1 open + 2 pending: full
    ledger.decide(ALPHA, "S-A8", "ORCL 260220P00250000", "1", "4.00", view=ignoring_pending)
    over = ledger.streams[ALPHA][-1]
    assert isinstance(over, IntentIssuedEvent)

    caught(observe(ledger.streams), 5, f"IntentIssued at sequence {over.sequence}",
           intent_id("S-A8"), "4 positions > max_open_positions 3")


def test_check_5_when_intent_issued_without_limits_says_so() -> None:
    ledger = Ledger(clean_store())
    ledger.decide(GAMMA, "S-G2", "QQQ 260220P00500000", "1", "2.00", view=with_limits)

    caught(observe(ledger.streams), 5, "no limits", intent_id("S-G2"))


def test_check_5_when_exposure_over_limit_names_both_figures() -> None:
    ledger = Ledger(clean_store())
    # beta holds 1 x 7.95 x 100 = 795 against 5000; a 4500 order brings it to 5295.
    ledger.decide(BETA, "S-B3", "TSLA 260220P00400000", "5", "9.00", view=ignoring_open_positions)

    caught(observe(ledger.streams), 5, "exposure 5295", "max_exposure 5000")


def gamma_limited(**limits: object) -> Ledger:
    """The clean store with limits set on gamma, which holds 10 x SPY at 1.00 ($1,000)."""
    ledger = Ledger(clean_store())
    given: dict[str, object] = {"max_open_positions": 10, "max_exposure": Decimal("100000"),
                                **limits}
    ledger.append(GAMMA, LimitsSet.model_validate(given))
    return ledger


def test_check_5_when_order_rate_exceeded_names_count_and_limit() -> None:
    ledger = gamma_limited(max_orders_per_minute=2)
    ledger.decide(GAMMA, "S-G2", "QQQ 260220P00500000", "1", "2.00")
    ledger.decide(GAMMA, "S-G3", "IWM 260220P00200000", "1", "2.00")
    ledger.decide(GAMMA, "S-G4", "DIA 260220P00400000", "1", "2.00", view=forgetting_recent)
    over = ledger.streams[GAMMA][-1]
    assert isinstance(over, IntentIssuedEvent)

    caught(observe(ledger.streams), 5, f"IntentIssued at sequence {over.sequence}",
           intent_id("S-G4"), "3 intents issued in the 60 s", intent_id("S-G2"),
           "max_orders_per_minute 2")


def test_check_5_an_intent_exactly_60_s_old_no_longer_counts_against_the_rate() -> None:
    ledger = gamma_limited(max_orders_per_minute=2)
    ledger.decide(GAMMA, "S-G2", "QQQ 260220P00500000", "1", "2.00")
    ledger.decide(GAMMA, "S-G3", "IWM 260220P00200000", "1", "2.00")
    # The next decision comes 60 s after S-G2's: the gate's window (occurred_at > now - 60 s).
    ledger.wait(INTENT_TTL - 2 * STEP)
    third = ledger.decide(GAMMA, "S-G4", "DIA 260220P00400000", "1", "2.00")

    assert third.allowed, third.reason
    assert find_violations(observe(ledger.streams)) == []


def test_check_5_when_underlying_exposure_exceeded_names_underlying_and_figures() -> None:
    ledger = gamma_limited(max_underlying_exposure=Decimal("1500"))
    # SPY: 1,000 held + 400 = 1,400, within 1,500; another 300 makes 1,700.
    ledger.decide(GAMMA, "S-G2", "SPY 260220C00610000", "1", "4.00")
    ledger.decide(GAMMA, "S-G3", "SPY 260220P00590000", "1", "3.00",
                  view=ignoring_open_positions)

    caught(observe(ledger.streams), 5, intent_id("S-G3"), "SPY exposure 1700",
           "max_underlying_exposure 1500")


def test_check_5_exposure_on_another_underlying_does_not_count() -> None:
    ledger = gamma_limited(max_underlying_exposure=Decimal("1000"))
    # SPY is at its 1,000; QQQ has none.
    allowed = ledger.decide(GAMMA, "S-G2", "QQQ 260220P00500000", "5", "2.00")

    assert allowed.allowed, allowed.reason
    assert find_violations(observe(ledger.streams)) == []


def test_check_5_when_identical_intent_within_window_names_both_intents() -> None:
    ledger = gamma_limited(duplicate_window_s=30)
    ledger.decide(GAMMA, "S-G2", "QQQ 260220P00500000", "1", "2.00")
    ledger.wait(timedelta(seconds=20))
    ledger.decide(GAMMA, "S-G3", "QQQ 260220P00500000", "1", "2.00", view=forgetting_recent)

    caught(observe(ledger.streams), 5, intent_id("S-G3"), f"identical to intent "
           f"{intent_id('S-G2')}", "21 s before it", "within duplicate_window_s 30")


def test_check_5_an_order_differing_in_price_or_repeated_after_the_window_is_no_duplicate(
        ) -> None:
    ledger = gamma_limited(duplicate_window_s=30)
    decisions = [ledger.decide(GAMMA, "S-G2", "QQQ 260220P00500000", "1", "2.00"),
                 ledger.decide(GAMMA, "S-G3", "QQQ 260220P00500000", "1", "2.05"),
                 ledger.decide(GAMMA, "S-G4", "QQQ 260220P00500000", "2", "2.00")]
    ledger.wait(timedelta(seconds=28))  # S-G2 was 30 s before the next decision
    decisions.append(ledger.decide(GAMMA, "S-G5", "QQQ 260220P00500000", "1", "2.00"))

    assert all(d.allowed for d in decisions), [d.reason for d in decisions]
    assert find_violations(observe(ledger.streams)) == []


def test_check_5_when_intent_marked_reducing_opens_risk_judges_it_as_an_opening() -> None:
    ledger = gamma_limited()
    ledger.append(GAMMA, LimitsSet(max_open_positions=1, max_exposure=Decimal("100000")))
    # Gamma holds one position, its limit; an opening labelled reducing earns no exemption.
    ledger.decide(GAMMA, "S-G2", "QQQ 260220P00500000", "1", "2.00",
                  view=ignoring_open_positions, reducing=True)

    caught(observe(ledger.streams), 5, intent_id("S-G2"), "2 positions > max_open_positions 1")


def test_check_5_a_reducing_intent_still_counts_against_rate_and_duplicates() -> None:
    ledger = reducing_gamma()
    ledger.decide(GAMMA, "S-G3", "SPY 260220P00600000", "2", "1.10", side="short",
                  reduces="P-G1")
    ledger.decide(GAMMA, "S-G4", "SPY 260220P00600000", "2", "1.10", side="short",
                  reduces="P-G1", view=forgetting_recent)

    caught(observe(ledger.streams), 5, intent_id("S-G4"),
           f"identical to intent {intent_id('S-G3')}")


# --- Trading states: reducing, halts that cancel --------------------------------------------------


def reducing_gamma() -> Ledger:
    """Gamma at its limits (1 position, $1,000 of SPY), halted, then reducing."""
    ledger = gamma_limited()
    ledger.append(GAMMA, LimitsSet(
        max_open_positions=1, max_exposure=Decimal("1000"), max_order_notional=Decimal("500"),
        max_orders_per_minute=4, max_underlying_exposure=Decimal("1000"), duplicate_window_s=30))
    ledger.halt(GAMMA, "broker mismatch")
    ledger.append(GAMMA, TradingReduced(reason="flatten"))
    return ledger


def test_clean_reducing_flow_and_halt_cancels_are_clean() -> None:
    ledger = reducing_gamma()
    opening = ledger.decide(GAMMA, "S-G2", "QQQ 260220P00500000", "1", "2.00")
    # 5 x 1.20 x 100 = 600: over the order limit, and 1 open + 1 pending over the positions
    # limit, but it only reduces P-G1 (long 10): no new risk.
    reduction = ledger.decide(GAMMA, "S-G3", "SPY 260220P00600000", "5", "1.20", side="short",
                              reduces="P-G1")
    ledger.append(GAMMA, PositionClosed(close_id="C-G3", position_id="P-G1", price=Decimal("1.20"),
                                        quantity=Decimal("5"), intent_id=intent_id("S-G3")))
    again = ledger.decide(GAMMA, "S-G4", "SPY 260220P00600000", "4", "1.10", side="short",
                          reduces="P-G1")
    cancels = ledger.halt(GAMMA, "desk-wide stop")[1:]
    ledger.append(GAMMA, TradingResumed(reason="done"))
    observation = observe(ledger.streams)

    assert (opening.allowed, opening.code) == (False, "trading_reducing")
    assert reduction.allowed, reduction.reason
    assert again.allowed, again.reason
    intents = [e for e in ledger.streams[GAMMA] if isinstance(e, IntentIssuedEvent)]
    assert [(i.data.reducing, i.data.position_id) for i in intents[-2:]] == [
        (True, "P-G1"), (True, "P-G1")]
    assert [c.data.intent_id for c in cancels if isinstance(c.data, IntentCancelled)] == [
        intent_id("S-G4")]
    assert sum(r.header("type") == "IntentCancelled" for r in observation.order_intents) == 1
    assert find_violations(observation) == []


def forgetting_pending_reductions(state: AccountState) -> AccountState:
    """The view of a dispatcher that does not subtract the reductions already pending."""
    return dataclasses.replace(state, pending={
        key: intent for key, intent in state.pending.items() if not intent.reducing})


def test_check_5_when_two_pending_reductions_sell_more_than_is_open_judges_the_second_an_opening(
) -> None:
    ledger = reducing_gamma()
    # P-G1 is long 10; 6 then 6 would sell 12: the second is a short of 2 at its limits.
    first = ledger.decide(GAMMA, "S-G3", "SPY 260220P00600000", "6", "0.50", side="short",
                          reduces="P-G1")
    ledger.decide(GAMMA, "S-G4", "SPY 260220P00600000", "6", "0.60", side="short",
                  reduces="P-G1", view=forgetting_pending_reductions)

    assert first.allowed, first.reason
    caught(observe(ledger.streams), 5, intent_id("S-G4"), "max_open_positions 1")


def freshly_reconciled(ledger: Ledger) -> View:
    """The view of a dispatcher that believes the broker's positions were just reconciled."""
    return lambda state: dataclasses.replace(state, reconciled_as_of=ledger.now)


def test_check_5_when_opened_on_a_stale_reconciliation_names_its_age_and_limit() -> None:
    ledger = gamma_limited(max_reconcile_age_s=30)
    view = broker_view(ledger, GAMMA)
    judge(ledger, view)
    fresh = ledger.decide(GAMMA, "S-G2", "QQQ 260220P00500000", "1", "2.00")
    ledger.wait(timedelta(seconds=40))
    ledger.decide(GAMMA, "S-G3", "IWM 260220P00200000", "1", "2.00",
                  view=freshly_reconciled(ledger))

    assert fresh.allowed, fresh.reason
    caught(observed(ledger, [view]), 5, intent_id("S-G3"), "43 s old", "max_reconcile_age_s 30")


def test_check_5_when_opened_never_reconciled_says_so() -> None:
    ledger = gamma_limited(max_reconcile_age_s=30)
    ledger.decide(GAMMA, "S-G2", "QQQ 260220P00500000", "1", "2.00",
                  view=freshly_reconciled(ledger))

    caught(observe(ledger.streams), 5, intent_id("S-G2"), "without any PositionsReconciled")


def test_check_5_a_reduction_needs_no_recent_reconciliation() -> None:
    ledger = gamma_limited(max_reconcile_age_s=30)
    reduction = ledger.decide(GAMMA, "S-G2", "SPY 260220P00600000", "5", "1.20", side="short",
                              reduces="P-G1")

    assert reduction.allowed, reduction.reason
    assert find_violations(observe(ledger.streams)) == []


# --- Check 6: decisions ---------------------------------------------------------------------------


def test_check_6_when_decided_on_stale_view_names_both_sequences() -> None:
    ledger = Ledger(clean_store())
    head = ledger.state(BETA).sequence
    ledger.decide(BETA, "S-B3", "AMD 260220P00100000", "1", "1.00", as_of=head - 1)

    caught(observe(ledger.streams), 6, "S-B3", f"as of sequence {head - 1}",
           f"expected the head {head}", alone=True)


def test_check_6_when_recorded_figures_differ_from_truth_names_gate_and_figures() -> None:
    ledger = Ledger(clean_store())
    # Allowed either way (1 open + 1 pending + 1 <= 3), but it saw 0 pending: a lie on record.
    ledger.decide(ALPHA, "S-A7", "INTC 260220P00030000", "1", "4.00", view=ignoring_pending)

    caught(observe(ledger.streams), 6, "S-A7", "max_open_positions", "1 + 0 pending",
           "1 + 1 pending", alone=True)


def test_check_6_when_allowed_while_halted_says_halted() -> None:
    ledger = Ledger(clean_store())
    ledger.append(ALPHA, TradingHalted(reason="broker outage"))
    ledger.decide(ALPHA, "S-A7", "INTC 260220P00030000", "1", "4.00", view=not_halted)

    caught(observe(ledger.streams), 6, "S-A7", "allowed while the account was halted",
           "broker outage", alone=True)


def test_check_6_when_allowed_while_reducing_an_opening_says_reducing() -> None:
    ledger = reducing_gamma()
    # Gamma is at its limits too: the buggy view also missed its position.
    ledger.decide(GAMMA, "S-G2", "QQQ 260220P00500000", "1", "2.00", view=opening_freely)

    caught(observe(ledger.streams), 6, "S-G2", "allowed while the account was reducing",
           "flatten", "reduces no open position")


def test_check_6_when_reduction_names_another_side_it_opens_risk() -> None:
    ledger = reducing_gamma()
    # Long, like P-G1: it adds to the position rather than reducing it.
    ledger.decide(GAMMA, "S-G2", "SPY 260220P00600000", "1", "1.00", reduces="P-G1",
                  view=opening_freely)

    caught(observe(ledger.streams), 6, "S-G2", "allowed while the account was reducing",
           "position_id P-G1")


def test_check_6_when_intent_labelled_reducing_for_an_opening_names_the_label() -> None:
    ledger = gamma_limited()
    ledger.decide(GAMMA, "S-G2", "QQQ 260220P00500000", "1", "2.00", reducing=True)

    caught(observe(ledger.streams), 6, "S-G2", "marked reducing=True",
           "reduces no open position", alone=True)


def test_check_6_when_reduction_not_labelled_reducing_names_the_position() -> None:
    ledger = gamma_limited()
    ledger.decide(GAMMA, "S-G2", "SPY 260220P00600000", "3", "1.00", side="short",
                  reduces="P-G1", reducing=False)

    caught(observe(ledger.streams), 6, "S-G2", "marked reducing=False",
           "reduces position P-G1", alone=True)


def test_check_6_when_allowed_without_intent_names_the_signal() -> None:
    ledger = Ledger(clean_store())
    ledger.decide(BETA, "S-B3", "AMD 260220P00100000", "1", "1.00", issue=False)

    caught(observe(ledger.streams), 6, "S-B3", "expected IntentIssued", alone=True)


def test_check_6_when_intent_issued_without_decision_names_the_intent() -> None:
    ledger = Ledger(clean_store())
    ledger.append(BETA, IntentIssued(
        intent_id="I-rogue", signal_id="S-rogue", position_id="P-rogue",
        symbol="AMD 260220P00100000", instrument="option", side="long", quantity=Decimal("1"),
        limit_price=Decimal("1.00"), multiplier=MULTIPLIER, expires_at=ledger.now + INTENT_TTL))

    caught(observe(ledger.streams), 6, "I-rogue", "expected the allowed SignalEvaluated")


def test_check_6_when_intent_differs_from_signal_names_both_orders() -> None:
    store = clean_store()
    index = next(i for i, e in enumerate(store[BETA]) if isinstance(e, IntentIssuedEvent))
    intent = store[BETA][index]
    assert isinstance(intent, IntentIssuedEvent)
    store[BETA][index] = intent.model_copy(
        update={"data": intent.data.model_copy(update={"quantity": Decimal("20")})})

    caught(observe(store), 6, f"sequence {intent.sequence} reserves", " 20 ", " 2 ")


# --- Check 7: dead letters ------------------------------------------------------------------------


def test_check_7_when_hostile_message_not_dead_lettered_names_it(clean: Observation) -> None:
    malformed = next(h for h in clean.hostile if h.kind == "malformed-json" and h.acknowledged)
    clean.dead_letters = [d for d in clean.dead_letters if d.value != malformed.value]

    violation = caught(clean, 7, "malformed-json", EXECUTIONS, "was acknowledged", alone=True)

    assert violation.account is None


def test_check_7_when_unacknowledged_hostile_absent_passes(clean: Observation) -> None:
    unacknowledged = next(h for h in clean.hostile if not h.acknowledged)
    clean.dead_letters = [d for d in clean.dead_letters if d.value != unacknowledged.value]

    assert find_violations(clean) == []


@pytest.mark.parametrize("reason", [None, b"", b"  "], ids=["absent", "empty", "blank"])
def test_check_7_when_dead_letter_has_no_reason_names_it(
        clean: Observation, reason: bytes | None) -> None:
    letter = clean.dead_letters[0]
    headers = tuple((k, v) for k, v in letter.headers if k != "dlq.reason")
    if reason is not None:
        headers += (("dlq.reason", reason),)
    clean.dead_letters[0] = dataclasses.replace(letter, headers=headers)

    caught(clean, 7, f"{DEAD_LETTERS}[0]@{letter.offset}", "no dlq.reason")


# --- Check 8: writers ----------------------------------------------------------------------------


def _sequence_of(observation: Observation, account: str, event_type: str) -> int:
    event = next(e for e in observation.store[account] if e.type == event_type)
    assert event.sequence is not None
    return event.sequence


@pytest.mark.parametrize("event_type", ["TradingResumed", "LimitsSet", "TradingHalted"])
def test_check_8_when_a_dispatcher_appended_a_control_event_names_role_and_type(
        clean: Observation, event_type: str) -> None:
    sequence = _sequence_of(clean, ALPHA, event_type)
    clean.writers[ALPHA][sequence] = account_role(ALPHA)

    caught(clean, 8, f"{event_type} at sequence {sequence}", account_role(ALPHA),
           "only the operator", alone=True)


def test_check_8_when_a_dispatcher_decided_for_another_account_names_both(
        clean: Observation) -> None:
    sequence = _sequence_of(clean, BETA, "IntentIssued")
    clean.writers[BETA][sequence] = account_role(ALPHA)

    caught(clean, 8, f"IntentIssued at sequence {sequence}", f"dispatcher of account {ALPHA}",
           alone=True)


def test_check_8_when_the_writer_is_unknown_says_so(clean: Observation) -> None:
    sequence = _sequence_of(clean, BETA, "LimitsSet")
    del clean.writers[BETA][sequence]

    caught(clean, 8, f"LimitsSet at sequence {sequence}", "role None (no job)", alone=True)


# --- Check 9: live orders ------------------------------------------------------------------------


def _event(observation: Observation, account: str, kind: type, **data: str) -> Event:
    return next(e for e in observation.store[account] if isinstance(e, kind)
                and all(getattr(e.data, name) == value for name, value in data.items()))


def test_check_9_when_an_order_is_sent_after_its_expiry_names_the_intent(
        clean: Observation) -> None:
    issued = _event(clean, ALPHA, IntentIssuedEvent, intent_id=intent_id("S-A6"))
    assert isinstance(issued.data, IntentIssued)
    clean.order_intents.append(order_record(issued, issued.data.expires_at + 5 * STEP, 99,
                                            issued.sequence))

    caught(clean, 9, intent_id("S-A6"), "after it expired", alone=True)


def test_check_9_when_an_order_is_sent_after_the_store_rejected_it_names_the_event(
        clean: Observation) -> None:
    issued = _event(clean, ALPHA, IntentIssuedEvent, intent_id=intent_id("S-A2"))
    rejected = _event(clean, ALPHA, IntentRejectedEvent, intent_id=intent_id("S-A2"))
    assert rejected.recorded_at is not None
    clean.order_intents.append(order_record(issued, rejected.recorded_at + 2 * STEP, 99,
                                            rejected.sequence))

    caught(clean, 9, intent_id("S-A2"), "recorded its IntentRejected", alone=True)


def test_check_9_when_an_order_is_sent_while_the_account_is_halted_says_so(
        clean: Observation) -> None:
    halt = _event(clean, ALPHA, TradingHaltedEvent)
    issued = _event(clean, ALPHA, IntentIssuedEvent, intent_id=intent_id("S-A1"))
    assert halt.recorded_at is not None
    # Still unexpired when sent: only the halt makes it dead.
    long_lived = issued.model_copy(update={"data": issued.data.model_copy(
        update={"expires_at": halt.recorded_at + INTENT_TTL})})
    clean.order_intents.append(order_record(long_lived, halt.recorded_at + 2 * STEP, 99,
                                            halt.sequence))

    caught(clean, 9, intent_id("S-A1"), "while its account was halted", alone=True)


def test_check_9_an_order_proven_live_just_after_a_resume_is_clean(clean: Observation) -> None:
    # The relay reads a stream in order: the resume before the intent is known to the check even
    # when it was recorded a moment earlier (the clocks' tolerance must not hide it).
    resume = _event(clean, ALPHA, TradingResumedEvent)
    issued = _event(clean, ALPHA, IntentIssuedEvent, intent_id=intent_id("S-A6"))
    assert resume.recorded_at is not None
    clean.order_intents = [record for record in clean.order_intents
                           if _decoded_id(record) != issued.event_id]
    clean.order_intents.append(order_record(
        issued, resume.recorded_at + timedelta(milliseconds=200), 99, issued.sequence))

    assert check_9_live_orders(clean) == []


def test_check_9_a_halt_committed_after_the_check_is_a_race_not_a_violation(
        clean: Observation) -> None:
    halt = _event(clean, ALPHA, TradingHaltedEvent)
    issued = _event(clean, ALPHA, IntentIssuedEvent, intent_id=intent_id("S-A1"))
    assert halt.recorded_at is not None
    assert halt.sequence is not None
    long_lived = issued.model_copy(update={"data": issued.data.model_copy(
        update={"expires_at": halt.recorded_at + INTENT_TTL})})
    # The halt's transaction began before the check but committed after it: not in its snapshot.
    clean.order_intents.append(order_record(long_lived, halt.recorded_at + 2 * STEP, 99,
                                            halt.sequence - 1))

    assert check_9_live_orders(clean) == []


def test_check_9_an_order_without_the_head_it_was_checked_at_is_caught(
        clean: Observation) -> None:
    issued = _event(clean, ALPHA, IntentIssuedEvent, intent_id=intent_id("S-A6"))
    assert issued.recorded_at is not None
    clean.order_intents.append(order_record(issued, issued.recorded_at + STEP, 99, None))

    caught(clean, 9, intent_id("S-A6"), "without the stream head", alone=True)


def test_check_9_an_order_checked_before_its_own_intent_is_caught(clean: Observation) -> None:
    issued = _event(clean, ALPHA, IntentIssuedEvent, intent_id=intent_id("S-A6"))
    assert issued.recorded_at is not None
    assert issued.sequence is not None
    clean.order_intents.append(order_record(issued, issued.recorded_at + STEP, 99,
                                            issued.sequence - 1))

    caught(clean, 9, intent_id("S-A6"), "before the intent itself", alone=True)


def test_check_9_when_an_order_is_sent_after_the_store_cancelled_it_names_the_cancel() -> None:
    ledger = Ledger(clean_store())
    ledger.decide(BETA, "S-B3", "AMD 260220P00100000", "1", "1.00")
    cancel = ledger.halt(BETA, "risk review")[1]
    resume = ledger.append(BETA, TradingResumed(reason="done"))
    observation = observe(ledger.streams)
    issued = _event(observation, BETA, IntentIssuedEvent, intent_id=intent_id("S-B3"))
    assert resume.recorded_at is not None
    # Not halted any more when checked, and unexpired: only the cancel makes it dead.
    observation.order_intents.append(order_record(issued, resume.recorded_at + STEP, 99,
                                                  resume.sequence))

    caught(observation, 9, intent_id("S-B3"), "recorded its IntentCancelled",
           f"sequence {cancel.sequence}", alone=True)


def test_check_9_an_order_proven_live_while_reducing_after_a_halt_is_clean() -> None:
    ledger = reducing_gamma()
    ledger.decide(GAMMA, "S-G2", "SPY 260220P00600000", "5", "1.20", side="short",
                  reduces="P-G1")
    observation = observe(ledger.streams)

    assert any(_decoded_id(r) == ledger.streams[GAMMA][-1].event_id
               for r in observation.order_intents)
    assert check_9_live_orders(observation) == []


def test_check_9_when_a_stored_cancel_never_reached_the_router_names_it() -> None:
    ledger = Ledger(clean_store())
    ledger.decide(BETA, "S-B3", "AMD 260220P00100000", "1", "1.00")
    cancel = ledger.halt(BETA, "risk review")[1]
    observation = observe(ledger.streams)
    observation.order_intents = [r for r in observation.order_intents
                                 if r.header("type") != "IntentCancelled"]

    caught(observation, 9, f"IntentCancelled at sequence {cancel.sequence}", intent_id("S-B3"),
           "never reached order-intents", alone=True)


def test_cancels_on_order_intents_are_flagged_by_no_check() -> None:
    ledger = Ledger(clean_store())
    ledger.decide(BETA, "S-B3", "AMD 260220P00100000", "1", "1.00")
    ledger.halt(BETA, "risk review")
    observation = observe(ledger.streams)
    cancels = [r for r in observation.order_intents if r.header("type") == "IntentCancelled"]
    # Delivered twice, as a relay that crashed before marking them published sends them again.
    observation.order_intents += [dataclasses.replace(r, offset=r.offset + 100) for r in cancels]

    assert cancels
    assert find_violations(observation) == []


def _decoded_id(record: Record) -> object:
    return decode_event(record.value).event_id if record.value is not None else None


# --- Check 10: reconciliation ---------------------------------------------------------------------

# When the broker sent its views, on the history's clock: after every call `told` records.
SENT_AT = 1000.0
SHORT_SYMBOL = "AMD 260220C00200000"


def held(ledger: Ledger, account: str) -> tuple[BrokerPosition, ...]:
    """What an honest broker holds for the account: the ledger's open positions, line by line."""
    return tuple(BrokerPosition(symbol=p.symbol, side=p.side, quantity=p.quantity)
                 for p in ledger.state(account).positions.values())


def broker_view(ledger: Ledger, account: str, *, lines: tuple[BrokerPosition, ...] | None = None,
                planted: tuple[Difference, ...] | None = None, kind: str = "honest",
                acknowledged: bool = True) -> Snapshot:
    """A view the campaign's broker sends now: its book is the ledger's executions so far."""
    ledger.wait(STEP)
    executions = frozenset(e.event_id for e in ledger.streams.get(account, [])
                           if e.type in ("OrderFilled", "PositionClosed"))
    return Snapshot(account=account, as_of=ledger.now,
                    positions=held(ledger, account) if lines is None else lines,
                    accounted=executions, injected=planted, kind=kind,
                    acknowledged=acknowledged, sent_at=SENT_AT)


def judge(ledger: Ledger, view: Snapshot, *, differences: tuple[Difference, ...] | None = None,
          head: int | None = None) -> Event:
    """Judge a view as ingest does: the real comparison against the fold as of the view's
    `as_of` (the head, less the executions recorded last that occurred after it), one outcome
    appended; `differences` and `head` override it (a buggy judge's)."""
    stream = ledger.streams.get(view.account, [])
    at = len(stream)
    for event in reversed(stream):
        if event.type in ("OrderFilled", "PositionClosed"):
            if event.occurred_at <= view.as_of:
                break
            at = (event.sequence or 0) - 1
    at = at if head is None else head
    truth = compare(fold(stream[:at], account=view.account).positions, BrokerPositions(
        account=view.account, as_of=view.as_of, positions=view.positions))
    found = tuple(truth) if differences is None else differences
    data: EventData = (ReconciliationFailed(as_of=view.as_of, head=at, differences=found)
                       if found else PositionsReconciled(as_of=view.as_of, head=at))
    return ledger.append(view.account, data)


def beta_with_a_short() -> Ledger:
    """The clean morning, then beta sells 3 calls: it holds a long and a short."""
    ledger = Ledger(clean_store())
    ledger.append(BETA, OrderFilled(fill_id="F-B2", position_id="P-B2", symbol=SHORT_SYMBOL,
                                    instrument="option", side="short", quantity=Decimal("3"),
                                    price=Decimal("2.00"), multiplier=MULTIPLIER))
    return ledger


def short_off_by_one(ledger: Ledger) -> tuple[tuple[BrokerPosition, ...], tuple[Difference, ...]]:
    """Beta's lines with the short one 4 instead of 3, and the difference that plants."""
    lines = tuple(BrokerPosition(symbol=line.symbol, side=line.side, quantity=Decimal("4"))
                  if line.side == "short" else line for line in held(ledger, BETA))
    return lines, (Difference(symbol=SHORT_SYMBOL, side="short", broker=Decimal("4"),
                              ledger=Decimal("3")),)


def reconciling() -> tuple[Ledger, list[Snapshot]]:
    """The broker's views of a trading morning, each judged as it should be: honest views of
    alpha and beta (reconciled), a quantity off planted in beta's next (failed: reducing), a view
    of gamma that never arrived, then a close of a position gamma does not hold (a discrepancy:
    reducing)."""
    ledger = beta_with_a_short()
    views = [broker_view(ledger, ALPHA), broker_view(ledger, BETA)]
    for view in views:
        judge(ledger, view)
    lines, planted = short_off_by_one(ledger)
    views.append(broker_view(ledger, BETA, lines=lines, planted=planted, kind="quantity-off"))
    judge(ledger, views[-1])
    views.append(broker_view(ledger, GAMMA, acknowledged=False))
    close = ledger.append(GAMMA, PositionClosed(close_id="C-G9", position_id="P-G9",
                                                price=Decimal("1.00"), reason="stop_loss"))
    ledger.append(GAMMA, DiscrepancyFound(
        kind="close_of_unknown_position", execution=natural_key(close), position_id="P-G9",
        ledger=Decimal(0), reason="close C-G9 of position P-G9, which the ledger does not hold"))
    return ledger, views


def observed(ledger: Ledger, views: Sequence[Snapshot]) -> Observation:
    observation = observe(ledger.streams)
    observation.snapshots = list(views)
    return observation


def outcome_of(observation: Observation, view: Snapshot) -> Event:
    return next(e for e in observation.store[view.account]
                if isinstance(e.data, PositionsReconciled | ReconciliationFailed)
                and e.data.as_of == view.as_of)


def test_clean_reconciliations_are_clean() -> None:
    ledger, views = reconciling()
    observation = observed(ledger, views)

    assert [outcome_of(observation, view).type for view in views[:3]] == [
        "PositionsReconciled", "PositionsReconciled", "ReconciliationFailed"]
    failed = outcome_of(observation, views[2])
    assert isinstance(failed, ReconciliationFailedEvent)
    assert failed.data.differences == views[2].injected
    assert [observation.projection[a].trading_state for a in ACCOUNTS] == [
        "active", "reducing", "reducing"]
    assert find_violations(observation) == []


def test_check_10_when_planted_mismatch_judged_a_match_names_both() -> None:
    ledger, views = reconciling()
    lines, planted = short_off_by_one(ledger)
    blind = broker_view(ledger, BETA, lines=lines, planted=planted, kind="quantity-off")
    outcome = judge(ledger, blind, differences=())

    caught(observed(ledger, [*views, blind]), 10, "planted quantity-off",
           f"PositionsReconciled at sequence {outcome.sequence}", "records no difference",
           f"{SHORT_SYMBOL} short: broker 4, ledger 3", alone=True)


def test_check_10_when_planted_mismatch_judged_on_the_wrong_side_names_both() -> None:
    ledger, views = reconciling()
    lines, planted = short_off_by_one(ledger)
    view = broker_view(ledger, BETA, lines=lines, planted=planted, kind="quantity-off")
    judge(ledger, view, differences=(Difference(symbol=SHORT_SYMBOL, side="long",
                                                broker=Decimal("4"), ledger=Decimal("3")),))

    caught(observed(ledger, [*views, view]), 10, f"records {SHORT_SYMBOL} long: broker 4",
           f"gives {SHORT_SYMBOL} short: broker 4, ledger 3", alone=True)


def test_check_10_when_planted_mismatch_never_judged_names_it() -> None:
    ledger, views = reconciling()
    lines, planted = short_off_by_one(ledger)
    view = broker_view(ledger, BETA, lines=lines, planted=planted, kind="quantity-off")

    violation = caught(observed(ledger, [*views, view]), 10, "planted quantity-off",
                       "never judged", alone=True)

    assert violation.account == BETA


def test_check_10_when_planted_differences_not_recorded_exactly_names_both() -> None:
    ledger, views = reconciling()
    lines, _ = short_off_by_one(ledger)
    # What the broker meant to plant is not what its lines say: the ledger finds the lines'.
    meant = (Difference(symbol=SHORT_SYMBOL, side="short", broker=Decimal("5"),
                        ledger=Decimal("3")),)
    view = broker_view(ledger, BETA, lines=lines, planted=meant, kind="quantity-off")
    judge(ledger, view)

    caught(observed(ledger, [*views, view]), 10, "expected exactly the planted",
           f"{SHORT_SYMBOL} short: broker 5, ledger 3", alone=True)


def test_check_10_when_honest_view_judged_a_difference_it_lacks_names_it() -> None:
    ledger, views = reconciling()
    view = broker_view(ledger, ALPHA)
    invented = (Difference(symbol="SPY", side="long", broker=Decimal("1"), ledger=Decimal("0")),)
    outcome = judge(ledger, view, differences=invented)

    caught(observed(ledger, [*views, view]), 10, "honest broker view",
           f"ReconciliationFailed at sequence {outcome.sequence}",
           "records SPY long: broker 1, ledger 0", "gives no difference", alone=True)


def test_check_10_when_honest_view_fails_without_a_race_says_the_ledger_held_its_executions(
) -> None:
    ledger, views = reconciling()
    # The broker's book lost beta's short: honest by its own account, wrong all the same.
    view = broker_view(ledger, BETA, lines=tuple(
        line for line in held(ledger, BETA) if line.side == "long"))
    judge(ledger, view)

    caught(observed(ledger, [*views, view]), 10, "honest broker view",
           f"failed with {SHORT_SYMBOL} short: broker 0, ledger 3",
           "held exactly the 3 executions the broker had reported", alone=True)


def test_check_10_when_judged_on_a_stale_head_names_both() -> None:
    ledger, views = reconciling()
    view = broker_view(ledger, ALPHA)
    head = len(ledger.streams[ALPHA])
    judge(ledger, view, head=head - 1)

    caught(observed(ledger, [*views, view]), 10, f"compared the ledger at sequence {head - 1}",
           f"expected {head}, the head", alone=True)


def test_check_10_when_a_view_is_judged_twice_names_both_outcomes() -> None:
    ledger, views = reconciling()
    first = outcome_of(observe(ledger.streams), views[0])
    # Judged again, the other way (the same outcome again is check 1's: one natural key).
    again = judge(ledger, views[0], differences=(Difference(
        symbol="SPY", side="long", broker=Decimal("1"), ledger=Decimal("0")),))

    caught(observed(ledger, views), 10, "judged 2 times",
           f"PositionsReconciled at sequence {first.sequence}",
           f"ReconciliationFailed at sequence {again.sequence}", alone=True)


def test_check_10_when_a_view_nobody_sent_is_judged_names_it() -> None:
    ledger, views = reconciling()
    forged = broker_view(ledger, ALPHA)
    outcome = judge(ledger, forged)

    caught(observed(ledger, views), 10, f"sequence {outcome.sequence}", "never sent",
           alone=True)


def test_check_10_executions_after_the_view_are_left_out_of_its_comparison() -> None:
    ledger, views = reconciling()
    view = broker_view(ledger, BETA)
    before = len(ledger.streams[BETA])
    # The broker trades on before the view is judged: recorded first, not yet in its view.
    ledger.append(BETA, filled("F-B3", "P-B3", "IBM 260220P00200000", "2", "1.00"))
    ledger.append(BETA, PositionClosed(close_id="C-B3", position_id="P-B3", price=Decimal("1"),
                                       quantity=Decimal("1")))
    outcome = judge(ledger, view)

    assert isinstance(outcome.data, PositionsReconciled)
    assert outcome.data.head == before
    assert check_10_reconciliation(observed(ledger, [*views, view])) == []


def test_check_10_when_the_judge_counts_executions_after_the_view_names_the_first() -> None:
    ledger, views = reconciling()
    view = broker_view(ledger, BETA)
    later = ledger.append(BETA, filled("F-B3", "P-B3", "IBM 260220P00200000", "2", "1.00"))
    outcome = judge(ledger, view, head=len(ledger.streams[BETA]))

    assert outcome.type == "ReconciliationFailed"
    assert later.sequence is not None
    caught(observed(ledger, [*views, view]), 10,
           f"compared the ledger at sequence {later.sequence}",
           f"expected {later.sequence - 1}, just before OrderFilled {later.event_id}",
           alone=True)


def recorded_out_of_turn(ledger: Ledger, view: Snapshot) -> Event:
    """A fill that occurred before the view but was recorded after it, unknown to the broker's
    view: the comparison must count it."""
    fill = build_event(BETA, view.as_of - STEP, filled("F-B3", "P-B3", "IBM 260220P00200000",
                                                       "2", "1.00"))
    ledger.now += STEP
    return ledger._store(fill)


def test_check_10_when_the_ledger_holds_an_execution_sent_before_the_view_names_it() -> None:
    ledger, views = reconciling()
    view = broker_view(ledger, BETA)
    stray = recorded_out_of_turn(ledger, view)
    judge(ledger, view)

    caught(observed(ledger, [*views, view]), 10, f"OrderFilled {stray.event_id}",
           "sent before the view but left out of it", alone=True)


def test_check_10_an_execution_sent_after_the_view_and_counted_is_a_race() -> None:
    ledger, views = reconciling()
    view = broker_view(ledger, BETA)
    stray = recorded_out_of_turn(ledger, view)
    outcome = judge(ledger, view)
    observation = observed(ledger, [*views, view])
    sent = next(o for o in observation.history if stray.event_id in o.event_ids)
    sent.invoked_at = SENT_AT + 1

    assert outcome.type == "ReconciliationFailed"
    assert check_10_reconciliation(observation) == []


def test_check_10_when_the_ledger_holds_an_execution_nobody_sent_names_it() -> None:
    ledger, views = reconciling()
    view = broker_view(ledger, BETA)
    rogue = recorded_out_of_turn(ledger, view)
    judge(ledger, view)
    observation = observed(ledger, [*views, view])
    observation.history = [o for o in observation.history if rogue.event_id not in o.event_ids]

    caught(observation, 10, f"OrderFilled {rogue.event_id}", "which the broker never sent",
           alone=True)


def reported_late(wait: timedelta) -> tuple[Ledger, list[Snapshot], Event]:
    """A fill the broker reported before its view of beta, recorded only after the view was
    judged, `wait` after its as_of."""
    ledger, views = reconciling()
    fill = build_event(BETA, ledger.now, filled("F-B3", "P-B3", "IBM 260220P00200000", "2",
                                                "1.00"))
    view = broker_view(ledger, BETA)
    view = dataclasses.replace(view, accounted=view.accounted | {fill.event_id}, positions=(
        *view.positions, BrokerPosition(symbol="IBM 260220P00200000", side="long",
                                        quantity=Decimal("2"))))
    ledger.wait(wait)
    judge(ledger, view)
    ledger.now += STEP
    ledger._store(fill)
    return ledger, [*views, view], fill


def test_check_10_a_view_judged_after_ingest_gave_up_waiting_may_fail() -> None:
    ledger, views, _ = reported_late(timedelta(seconds=11))
    observation = observed(ledger, views)

    assert outcome_of(observation, views[-1]).type == "ReconciliationFailed"
    assert check_10_reconciliation(observation) == []


def test_check_10_when_judged_before_the_executions_reported_before_it_names_the_wait() -> None:
    ledger, views, fill = reported_late(timedelta(seconds=1))

    caught(observed(ledger, views), 10, f"before OrderFilled {fill.event_id}",
           "ingest must wait up to 10 s", alone=True)


def test_check_10_when_an_execution_the_broker_reported_was_never_stored_names_it() -> None:
    ledger, views = reconciling()
    lost = uuid.UUID(int=404)
    view = broker_view(ledger, ALPHA)
    view = dataclasses.replace(view, accounted=view.accounted | {lost})
    judge(ledger, view)

    caught(observed(ledger, [*views, view]), 10, f"execution {lost}",
           "the store never recorded it", alone=True)


def test_check_10_an_unacknowledged_view_that_arrived_is_judged_like_any() -> None:
    ledger, views = reconciling()
    late = broker_view(ledger, ALPHA, acknowledged=False)
    ledger.append(ALPHA, filled("F-A9", "P-A9", "IBM 260220P00200000", "2", "1.00"))
    judge(ledger, late)
    wrong = broker_view(ledger, BETA, acknowledged=False)
    judge(ledger, wrong, differences=(Difference(symbol="SPY", side="long", broker=Decimal("1"),
                                                 ledger=Decimal("0")),))

    caught(observed(ledger, [*views, late, wrong]), 10, "records SPY long: broker 1, ledger 0",
           alone=True)


def test_check_10_when_a_failure_leaves_the_account_active_names_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A fold that forgets to fail closed (the stand-in's own fold shares it: that is the point).
    monkeypatch.setattr(folding, "_fail_closed", lambda draft, reason: None)
    ledger, views = reconciling()
    failed = outcome_of(observe(ledger.streams), views[2])
    found = find_violations(observed(ledger, views))

    mine = [v for v in found if v.check == 10]
    assert [v.account for v in mine] == [BETA, GAMMA], mine
    assert f"ReconciliationFailed at sequence {failed.sequence}" in mine[0].message
    assert "DiscrepancyFound" in mine[1].message
    assert "close_of_unknown_position" in mine[1].message
    assert all("left the account active" in v.message for v in mine)



# --- Entry points ---------------------------------------------------------------------------------


def test_check_when_one_violation_raises_with_seed_check_and_culprit(
        clean: Observation) -> None:
    del clean.projection[GAMMA]

    with pytest.raises(AssertionError) as raised:
        check(clean)

    assert str(raised.value).startswith(f"seed={SEED}: check 4 (projection): account gamma: ")
    assert str(raised.value).endswith("(the only violation)")


def test_check_when_many_violations_counts_the_others(clean: Observation) -> None:
    clean.history += [Operation(kind="signal", account=BETA, signal_id=f"S-gone-{n}",
                                outcome="ok") for n in range(10)]
    clean.dead_letters = []

    with pytest.raises(AssertionError) as raised:
        check(clean)

    message = str(raised.value)
    assert message.startswith(f"seed={SEED}: check 2 (history): account beta: ")
    assert "S-gone-0" in message
    assert message.endswith("(and 12 other violations; in all: check 2 x10, check 7 x3)")


def test_find_violations_when_many_keeps_the_first_few_per_check(clean: Observation) -> None:
    clean.history += [Operation(kind="signal", account=BETA, signal_id=f"S-gone-{n}",
                                outcome="ok") for n in range(10)]

    violations = find_violations(clean, examples_max=3)

    assert [v.check for v in violations] == [2, 2, 2]
    assert "S-gone-0" in violations[0].message
