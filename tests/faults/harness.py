"""The fault campaign's harness: the real system as OS processes, a seeded client workload and a
seeded fault schedule, then an observation for the checker.

A `Cluster` runs ingest, relay and projector against one database and one set of topics for a
whole campaign; each schedule (`run_schedule(seed)`) adds three fresh accounts with a dispatcher
each, waits until the dispatchers decide, drives a trading workload through Kafka and the store
for a few seconds while faults fire, lets everything settle, and returns what it observed. The
workload: strategies (orders piling up on one underlying, some sent twice), a broker that fills,
rejects, ignores or - for reductions - closes, and honours cancels, and that publishes its own
book of each account's positions on `broker-positions` now and then (a few of those snapshots
with a mismatch planted on purpose, see `_snapshots`), a position manager closing positions or
reducing them through the dispatcher, an operator setting limits (every gate's: positions,
exposure, order, underlying, rate, duplicates, reconciliation age) and moving accounts between
active, reducing and halted with `console.commands.set_trading_state` (a halt cancels what is
pending).
Every random choice comes from the seed; only the operating system's timing differs between two
runs of one seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from console import commands
from ledger import failpoints, kafka, kafka_admin, roles, store
from ledger.db import connect
from ledger.events import (
    BrokerPosition,
    Event,
    EventData,
    IntentCancelled,
    IntentIssued,
    IntentRejected,
    LimitsSet,
    OrderFilled,
    PositionClosed,
    Side,
    build_event,
    decode_event,
    encode_event,
    format_decimal,
    format_time,
    with_ledger_fields,
)
from ledger.kafka_admin import ensure_topics
from ledger.logins import job_dsn
from ledger.runtime import OPERATING_ERRORS
from ledger.settings import Settings
from ledger.topics import Topics
from projections import tables
from projections.fold import Position
from projections.rebuild import fold_stream
from services.ingest import RECONCILE_WAIT_S
from tests.conftest import LEDGER_BIN, ROOT, cli_env
from tests.faults.checker import holdings_differences
from tests.faults.model import Hostile, Observation, Operation, Record, Snapshot
from tests.processes import LedgerProcess
from tests.stack import (
    MAIN,
    KafkaCluster,
    kafka_kill,
    kafka_start,
    postgres_start,
    postgres_stop_immediate,
)

log = logging.getLogger("tests.faults")

WORKLOAD_S = 6.0
# How long a schedule waits for its new dispatchers to decide a first signal; how often it looks.
READY_TIMEOUT_S = 30.0
READY_POLL_S = 0.25
SETTLE_TIMEOUT_S = 90.0
INTENT_TTL_S = 2.0
RESTART_DELAY_S = 0.3
FAILPOINT_PROBABILITY = 0.15
# What a client of the store sees when the database goes away under it.
CLIENT_ERRORS: tuple[type[BaseException], ...] = (*OPERATING_ERRORS, asyncpg.PostgresError)
PRICE_STEP = Decimal("0.05")
READER_ATTEMPTS = 3
# What strategies trade: three series of one underlying (MSFT) among five, so that exposure piles
# up on it and the max_underlying_exposure gate bites.
SYMBOLS = ("MSFT 260220P00400000", "MSFT 260220P00390000", "MSFT 260320C00420000",
           "AMD 260220P00150000", "SPY")
# How often a strategy sends the very order it sent last (same symbol, side, quantity and limit
# price) under a new signal id: what the duplicate_order gate is for.
REPEAT_PROBABILITY = 0.25

# The broker's own positions on `broker-positions`: each account's first snapshot within
# SNAPSHOT_FIRST_S, then one every SNAPSHOT_EVERY_S (both drawn), as of the moment it is sent.
SNAPSHOT_FIRST_S = (0.3, 1.5)
SNAPSHOT_EVERY_S = (1.5, 2.5)
# How long a snapshot waits for the account's executions in flight before it is skipped.
SNAPSHOT_QUIET_S = 2.0
SNAPSHOT_SEND_TIMEOUT_S = 5.0
# Mismatches the broker plants on purpose per schedule, each in one of the first
# PLANTED_SLOTS snapshots of an account drawn (or the next one where its kind can be planted).
MISMATCHES_PER_SCHEDULE = (2, 3)
PLANTED_SLOTS = 3
MISMATCH_KINDS = ("quantity-off", "symbol-missing", "extra-symbol", "side-flipped")
# Symbols no strategy trades: what the extra line of a planted mismatch holds.
FOREIGN_SYMBOLS = ("NVDA 260220P00120000", "QQQ 260320C00500000")
# How often an operator's new limits require a recent reconciliation, and how recent (seconds).
RECONCILE_AGE_PROBABILITY = 0.3
RECONCILE_AGES_S = (3, 5, 30)

# Faults a schedule draws from, with weights: process crashes are cheap and the most telling;
# a broker restart costs several seconds of JVM start-up, so it is drawn less often.
FAULT_WEIGHTS: dict[str, int] = {
    "kill": 6,
    "failpoint": 4,
    "postgres-restart": 2,
    "kafka-restart": 1,
    "rebalance": 2,
    "hostile": 3,
    # The relay down longer than the intents' TTL: what it finds expired must not be routed.
    "relay-pause": 1,
}
# On three brokers the cluster's own failures are what the schedule is for: the leader of a busy
# partition killed mid-stream (leadership moves; acks=all keeps every acknowledged write), and
# two of three down at once (fewer in sync than min.insync.replicas: producers wait).
THREE_BROKER_FAULT_WEIGHTS: dict[str, int] = {
    **FAULT_WEIGHTS, "kafka-restart": 0, "leader-kill": 6, "two-brokers-down": 2,
}
# How long a killed broker stays down: long enough for leadership to move under load.
BROKER_DOWN_S = (1.0, 4.0)


class ManagedProcess(LedgerProcess):
    """A `ledger run` child that the cluster's supervisor restarts whenever it is found dead."""

    wanted = True

    def kill(self) -> None:
        # A fault may pick a process that its own failpoint has already killed.
        if self.alive():
            super().kill()

    def stop(self) -> int:
        self.wanted = False
        try:
            return super().stop()
        except subprocess.TimeoutExpired:
            self.kill()
            return -signal.SIGKILL


@dataclass
class Tap:
    """Reads a topic from its beginning for the campaign's lifetime, every partition in order."""

    settings: Settings
    topic: str
    records: list[Record] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_servers,
                                        client_id="campaign-tap", enable_auto_commit=False,
                                        auto_offset_reset="earliest",
                                        **kafka.security(self.settings))
            try:
                await consumer.start()
                # ensure_topics created every topic with this many partitions.
                partitions = [TopicPartition(self.topic, p)
                              for p in range(self.settings.topic_partitions)]
                consumer.assign(partitions)
                for partition in partitions:
                    consumer.seek(partition, self._next_offset(partition.partition))
                while True:
                    polled = await consumer.getmany(timeout_ms=200, max_records=5000)
                    for batch in polled.values():
                        self.records.extend(_record(message) for message in batch)
            except KafkaError:
                await asyncio.sleep(0.5)
            finally:
                await _stop_quietly(consumer)

    def _next_offset(self, partition: int) -> int:
        offsets = [r.offset for r in self.records if r.partition == partition]
        return max(offsets) + 1 if offsets else 0


async def _stop_quietly(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    # After a broker restart, stopping can re-raise what a background fetch task died of
    # (a connection error, or its own cancellation); the client is gone either way.
    with contextlib.suppress(KafkaError, asyncio.CancelledError):
        await client.stop()


def _record(message: object) -> Record:
    return Record(topic=message.topic, partition=message.partition,  # type: ignore[attr-defined]
                  offset=message.offset, key=message.key,  # type: ignore[attr-defined]
                  value=message.value,  # type: ignore[attr-defined]
                  headers=tuple(message.headers or ()),  # type: ignore[attr-defined]
                  timestamp_ms=message.timestamp)  # type: ignore[attr-defined]


@dataclass
class FaultLog:
    """What a schedule injected, by kind (the README reports the totals)."""

    injected: Counter[str] = field(default_factory=Counter)

    def note(self, kind: str) -> None:
        self.injected[kind] += 1
        log.info("fault: %s", kind)


@dataclass
class Book:
    """The simulated broker's own book of one account: the positions its executions left open.

    Made of exactly the fills and closes it sent on `executions` and saw acknowledged, applied
    as the ledger applies them: a fill opens or adds to its position (one naming an open
    position of another symbol or side is refused by ingest, so it is left out), a close takes
    at most what is open and a close of nothing changes nothing. A send that was cut off is held
    apart (`unknown`) until the store shows it recorded; until then the account gets no
    snapshot. Hostile messages never enter it: the hostile producer's executions are malformed
    or of an unknown account (dead-lettered) or copies of ones already sent (stored once).

    An execution takes `lock` only to start (`in_flight`); a snapshot holds it while it waits
    for those in flight, is taken and sent, so none starts meanwhile.
    """

    positions: dict[str, tuple[str, Side, Decimal]] = field(default_factory=dict)
    accounted: set[uuid.UUID] = field(default_factory=set)
    unknown: dict[uuid.UUID, EventData] = field(default_factory=dict)
    in_flight: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Set while nothing is in flight.
    quiet: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.quiet.set()

    def started(self) -> None:
        self.in_flight += 1
        self.quiet.clear()

    def ended(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self.quiet.set()

    def settle(self, event_id: uuid.UUID, data: EventData, outcome: str) -> None:
        """Take in one execution sent: applied when acknowledged, held apart when cut off."""
        if not isinstance(data, OrderFilled | PositionClosed):
            return
        if outcome == "ok":
            self.apply(event_id, data)
        else:
            self.unknown[event_id] = data

    def apply(self, event_id: uuid.UUID, data: EventData) -> None:
        position_id = getattr(data, "position_id", None)
        held = self.positions.get(position_id) if position_id is not None else None
        if isinstance(data, OrderFilled):
            if held is None:
                self.positions[data.position_id] = (data.symbol, data.side, data.quantity)
            elif (held[0], held[1]) == (data.symbol, data.side):
                self.positions[data.position_id] = (held[0], held[1], held[2] + data.quantity)
            else:
                return  # refused by ingest: a fill adds to a position of its own instrument
        elif isinstance(data, PositionClosed) and held is not None:
            taken = held[2] if data.quantity is None else min(data.quantity, held[2])
            if taken == held[2]:
                del self.positions[data.position_id]
            else:
                self.positions[data.position_id] = (held[0], held[1], held[2] - taken)
        self.accounted.add(event_id)

    def lines(self) -> tuple[BrokerPosition, ...]:
        return tuple(BrokerPosition(symbol=symbol, side=side, quantity=quantity)
                     for _, (symbol, side, quantity) in sorted(self.positions.items()))


class Cluster:
    """The shared services of a campaign: ingest, relay and projector, and two topic taps."""

    def __init__(self, settings: Settings, log_dir: Path,
                 bugs: dict[str, str] | None = None, kafka_cluster: KafkaCluster = MAIN) -> None:
        self.settings = settings
        self.kafka_cluster = kafka_cluster
        self.fault_weights = (THREE_BROKER_FAULT_WEIGHTS if kafka_cluster.brokers == 3
                              else FAULT_WEIGHTS)
        self.log_dir = log_dir
        # What every child gets beyond the test's settings: short intents, and the tests'
        # modules for the planted-bug wrapper.
        self.env = {"LEDGER_INTENT_TTL_S": str(INTENT_TTL_S), "PYTHONPATH": str(ROOT)}
        self.bugs = bugs or {}
        self.processes: dict[str, ManagedProcess] = {}
        self.topics: Topics | None = None
        self.ledger_events: Tap | None = None
        self.dead_letters: Tap | None = None
        self.order_intents: Tap | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self.faults = FaultLog()

    def command(self, role: str) -> list[str]:
        """How to start `ledger` for a role: as installed, or wrapped in a planted bug."""
        if role in self.bugs:
            return [sys.executable, "-m", "tests.faults.bugged", self.bugs[role]]
        return [str(LEDGER_BIN)]

    def process(self, name: str, *args: str) -> ManagedProcess:
        """Register (and start) a `ledger run ...` child."""
        managed = ManagedProcess(self.settings, self.log_dir, *args, name=name,
                                 command=self.command(args[0]), env=self.env)
        managed.start()
        self.processes[name] = managed
        return managed

    async def start(self) -> None:
        self.topics = await ensure_topics(self.settings)
        for role in ("ingest", "relay", "projector"):
            self.process(role, role)
        self.ledger_events = Tap(self.settings, self.topics.ledger_events)
        self.dead_letters = Tap(self.settings, self.topics.dead_letters)
        self.order_intents = Tap(self.settings, self.topics.order_intents)
        for tap in (self.ledger_events, self.dead_letters, self.order_intents):
            await tap.start()
        self._supervisor = asyncio.create_task(self._supervise())

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in self.processes.values()))
        for tap in (self.ledger_events, self.dead_letters, self.order_intents):
            if tap is not None:
                await tap.stop()

    async def _supervise(self) -> None:
        # Crash-only: whatever died (killed by a fault or by its own failpoint) is started
        # again, as an init system would.
        while True:
            await asyncio.sleep(RESTART_DELAY_S)
            for managed in list(self.processes.values()):
                if managed.wanted and not managed.alive():
                    managed.start()

    def disarm(self) -> None:
        """Restart every process that has failpoints armed, without them."""
        for managed in self.processes.values():
            if managed.extra_env:
                managed.extra_env = {}
                managed.kill()


# --- The workload -------------------------------------------------------------------------------


@dataclass
class Schedule:
    """One seeded run: its accounts, its client history, its hostile messages."""

    seed: int
    cluster: Cluster
    rng: random.Random
    accounts: list[str]
    history: list[Operation] = field(default_factory=list)
    hostile: list[Hostile] = field(default_factory=list)
    producer: AIOKafkaProducer | None = None
    started: float = field(default_factory=time.monotonic)
    intents_seen: set[str] = field(default_factory=set)
    # The executions sent, as (key, value): the hostile producer sends some of them again.
    executions_sent: list[tuple[str, bytes]] = field(default_factory=list)
    # Per account, the last order a strategy sent (it sometimes sends it again).
    last_order: dict[str, dict[str, str]] = field(default_factory=dict)
    # Intents the router was told to cancel: the broker does not execute them any more.
    cancelled: set[str] = field(default_factory=set)
    reductions: int = 0
    # Draws the limits the accounts start with and the operator sets later.
    limits: Callable[[random.Random], LimitsSet] = field(default=lambda rng: limits_for(rng))
    # The broker's book per account, the snapshots it published (and their raw messages, which
    # the hostile producer sends again), and the kinds of mismatch it may plant.
    books: dict[str, Book] = field(default_factory=dict)
    snapshots: list[Snapshot] = field(default_factory=list)
    snapshots_sent: list[tuple[str, bytes]] = field(default_factory=list)
    mismatch_kinds: tuple[str, ...] = MISMATCH_KINDS
    # Plant a mismatch in every snapshot where one of `mismatch_kinds` can be, not 2-3.
    plant_always: bool = False
    # Draws whether the operator's limits require a recent reconciliation; a stream of its own,
    # so that the rest of the schedule draws what it drew before.
    reconcile_rng: random.Random = field(default_factory=random.Random)

    @property
    def settings(self) -> Settings:
        return self.cluster.settings

    @property
    def topics(self) -> Topics:
        assert self.cluster.topics is not None
        return self.cluster.topics

    def now(self) -> datetime:
        return datetime.now(UTC)

    def book(self, account: str) -> Book:
        return self.books.setdefault(account, Book())

    def operator_limits(self, rng: random.Random) -> LimitsSet:
        """The limits an operator sets: now and then requiring a recent reconciliation."""
        limits = self.limits(rng)
        if self.reconcile_rng.random() < RECONCILE_AGE_PROBABILITY:
            limits = limits.model_copy(update={
                "max_reconcile_age_s": self.reconcile_rng.choice(RECONCILE_AGES_S)})
        return limits

    async def produce(self, operation: Operation, topic: str, key: str,
                      value: bytes) -> None:
        """Send one message and record the client's view of the outcome."""
        assert self.producer is not None
        operation.invoked_at = time.monotonic()
        self.history.append(operation)
        try:
            await asyncio.wait_for(self.producer.send_and_wait(topic, value, key=key.encode()),
                                   timeout=15)
        except (KafkaError, TimeoutError) as exc:
            operation.outcome = "unknown"
            operation.detail = type(exc).__name__
        else:
            operation.outcome = "ok"
        operation.completed_at = time.monotonic()

    async def append(self, account: str, data: EventData) -> None:
        """Append one event straight to the store as the operator role, as its commands do."""
        event = build_event(account, self.now(), data)
        operation = Operation(kind="append", account=account, event_ids=(event.event_id,),
                              invoked_at=time.monotonic())
        self.history.append(operation)
        try:
            conn = await asyncio.wait_for(connect(job_dsn(self.settings, roles.Job.operator)),
                                          timeout=5)
        except CLIENT_ERRORS as exc:
            operation.outcome, operation.detail = "failed", f"connect: {type(exc).__name__}"
            return
        try:
            await asyncio.wait_for(store.append(conn, account, [event]), timeout=10)
        except CLIENT_ERRORS as exc:
            # The commit may or may not have happened before the connection went away.
            operation.outcome, operation.detail = "unknown", type(exc).__name__
        else:
            operation.outcome = "ok"
        finally:
            operation.completed_at = time.monotonic()
            with contextlib.suppress(Exception):
                conn.terminate()

    async def set_state(self, account: str, state: str, reason: str) -> None:
        """Move an account to a trading state as `ledger halt|reduce|resume` do
        (`console.commands.set_trading_state`, the operator role): a halt cancels every pending
        intent in its transaction. The events it built are its operation's, all or nothing."""
        operation = Operation(kind="append", account=account, invoked_at=time.monotonic(),
                              detail=state)
        self.history.append(operation)
        built: list[Event] = []
        token = _OPERATOR_EVENTS.set(built)
        try:
            await asyncio.wait_for(commands.set_trading_state(
                self.settings, [account], state, reason, occurred_at=self.now()), timeout=10)
        except CLIENT_ERRORS as exc:
            # Before any event was built (the connection refused) nothing can have been stored.
            operation.outcome = "unknown" if built else "failed"
            operation.detail = f"{state}: {type(exc).__name__}"
        else:
            operation.outcome = "ok"
        finally:
            _OPERATOR_EVENTS.reset(token)
            operation.event_ids = tuple(event.event_id for event in built)
            operation.completed_at = time.monotonic()

    async def execution(self, account: str, data: EventData) -> None:
        """Report one execution on `executions`, and enter it in the broker's book."""
        book = self.book(account)
        async with book.lock:  # a snapshot being taken: this one comes after it
            book.started()
        event = build_event(account, self.now(), data)
        body = encode_event(event)
        self.executions_sent.append((account, body))
        operation = Operation(kind="execution", account=account, event_ids=(event.event_id,))
        try:
            await self.produce(operation, self.topics.executions, account, body)
        finally:
            book.ended()
            book.settle(event.event_id, data, operation.outcome)

    async def signal(self, account: str, signal_id: str) -> None:
        """A strategy's signal: a new order, or sometimes the very one it sent last."""
        rng = self.rng
        order = self.last_order.get(account)
        if order is None or rng.random() >= REPEAT_PROBABILITY:
            order = {"symbol": rng.choice(SYMBOLS), "instrument": "option",
                     "side": rng.choice(["long", "short"]), "quantity": str(rng.randint(1, 4)),
                     "limit_price": str(Decimal(rng.randint(20, 80)) * Decimal("0.10")),
                     "multiplier": "100"}
            self.last_order[account] = order
        await self.send_signal(account, signal_id, order)

    async def reduce(self, account: str, position: Position, rng: random.Random) -> None:
        """A signal that reduces an open position: it names it, takes the other side and at most
        its quantity (now and then more, which is no reduction: the gates must see that)."""
        self.reductions += 1
        roll = rng.random()
        quantity = (position.quantity + 1 if roll < 0.1
                    else Decimal(1) if roll < 0.4 else position.quantity)
        price = max(PRICE_STEP, position.average_price.quantize(Decimal("0.01")))
        await self.send_signal(account, f"s{self.seed}-r{self.reductions}", {
            "symbol": position.symbol, "instrument": position.instrument,
            "side": "short" if position.side == "long" else "long",
            "quantity": str(quantity), "limit_price": str(price),
            "multiplier": str(position.multiplier), "position_id": position.position_id})

    async def send_signal(self, account: str, signal_id: str, order: dict[str, str]) -> None:
        body = json.dumps({
            "signal_id": signal_id, "account": account,
            "occurred_at": self.now().isoformat().replace("+00:00", "Z"), **order}).encode()
        await self.produce(Operation(kind="signal", account=account, signal_id=signal_id),
                           self.topics.signals, account, body)


# The events `console.commands` builds for the operator, collected for the call in progress (a
# context variable: only the operator's own call records into its list). Its event ids are
# random, and the history must know what each call may have stored.
_OPERATOR_EVENTS: contextvars.ContextVar[list[Event] | None] = contextvars.ContextVar(
    "campaign_operator_events", default=None)
_RECORDING: list[Callable[..., Event]] = []


def record_operator_events() -> None:
    """Wrap `console.commands._operator_event` (once) to record what it builds."""
    if _RECORDING:
        return
    original: Callable[..., Event] = vars(commands)["_operator_event"]

    def recording(*args: Any, **kwargs: Any) -> Event:
        event = original(*args, **kwargs)
        built = _OPERATOR_EVENTS.get()
        if built is not None:
            built.append(event)
        return event

    _RECORDING.append(original)
    vars(commands)["_operator_event"] = recording


async def _strategies(schedule: Schedule, until: float) -> None:
    """Bursts of signals, now to one account, now to another."""
    rng = schedule.rng
    count = 0
    while time.monotonic() < until:
        account = rng.choice(schedule.accounts)
        burst = rng.randint(1, 8)
        await asyncio.gather(*(schedule.signal(account, f"s{schedule.seed}-{count + i}")
                               for i in range(burst)))
        count += burst
        await asyncio.sleep(rng.uniform(0.2, 0.8))


async def _broker(schedule: Schedule, until: float) -> None:
    """The simulated broker: fills most intents (sometimes late), rejects some, ignores a few."""
    rng = random.Random(schedule.rng.random())
    consumer = await _reader_at_end(schedule.settings, schedule.topics.order_intents)
    pending: set[asyncio.Task[None]] = set()
    try:
        while time.monotonic() < until:
            try:
                polled = await consumer.getmany(timeout_ms=200)
            except KafkaError:
                await asyncio.sleep(0.5)
                continue
            for batch in polled.values():
                for message in batch:
                    try:
                        event = decode_event(message.value)
                    except Exception:  # noqa: BLE001 - not ours to judge here
                        continue
                    if event.account not in schedule.accounts:
                        continue
                    if isinstance(event.data, IntentCancelled):
                        schedule.cancelled.add(event.data.intent_id)
                        continue
                    if not isinstance(event.data, IntentIssued) or \
                            event.data.intent_id in schedule.intents_seen:
                        continue
                    schedule.intents_seen.add(event.data.intent_id)
                    task = asyncio.create_task(_answer(schedule, rng, event.account,
                                                       event.data))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
    finally:
        await asyncio.gather(*pending, return_exceptions=True)
        await _stop_quietly(consumer)


async def _reader_at_end(settings: Settings, topic: str) -> AIOKafkaConsumer:
    # A broker that has just started (or restarted) can take longer than one reader's patience
    # to hand out a new topic's partitions; the simulated broker, like a real one, tries again.
    for _ in range(READER_ATTEMPTS - 1):
        with contextlib.suppress(KafkaError):
            return await kafka.reader_at_end(settings, topic, client_id="campaign-broker")
    return await kafka.reader_at_end(settings, topic, client_id="campaign-broker")


async def _answer(schedule: Schedule, rng: random.Random, account: str,
                  intent: IntentIssued) -> None:
    roll = rng.random()
    # Some answers come after the intent's TTL: a late fill is still a fact to record.
    await asyncio.sleep(rng.uniform(0.05, INTENT_TTL_S * 1.2))
    if intent.intent_id in schedule.cancelled:
        return  # cancelled at the broker before it was executed
    if roll < 0.7 and intent.reducing:
        # A reduction executed is reported as a close naming its intent (docs/events.md).
        await schedule.execution(account, PositionClosed(
            close_id=f"close-{intent.intent_id}", position_id=intent.position_id,
            price=intent.limit_price, quantity=intent.quantity, reason="reduce",
            intent_id=intent.intent_id))
    elif roll < 0.7:
        price = max(PRICE_STEP, intent.limit_price - PRICE_STEP * rng.randint(0, 3))
        await schedule.execution(account, OrderFilled(
            fill_id=f"fill-{intent.intent_id}", position_id=intent.position_id,
            symbol=intent.symbol, instrument=intent.instrument, side=intent.side,
            quantity=intent.quantity, price=price, multiplier=intent.multiplier,
            intent_id=intent.intent_id))
    elif roll < 0.85:
        await schedule.execution(account, IntentRejected(intent_id=intent.intent_id,
                                                         reason="venue refused"))


async def _position_manager(schedule: Schedule, until: float) -> None:
    """Closes open positions now and then, as stop-loss and take-profit would.

    It knows the positions as the broker does, from what was executed (the store folded), never
    from the projection: a projector that lags or is broken must not stop the closes that would
    expose it."""
    rng = random.Random(schedule.rng.random())
    while time.monotonic() < until:
        await asyncio.sleep(rng.uniform(0.4, 1.2))
        account = rng.choice(schedule.accounts)
        try:
            conn = await asyncio.wait_for(connect(schedule.settings.database_url), timeout=3)
        except CLIENT_ERRORS:
            continue
        try:
            state = await asyncio.wait_for(fold_stream(conn, account), timeout=3)
        except CLIENT_ERRORS:
            continue
        finally:
            conn.terminate()
        if not state.positions:
            continue
        position = state.positions[rng.choice(sorted(state.positions))]
        if rng.random() < (0.7 if state.reducing else 0.2):
            # Through the dispatcher, as a reducing signal: what passes while reducing.
            await schedule.reduce(account, position, rng)
            continue
        partial = rng.random() < 0.3 and position.quantity > 1
        await schedule.execution(account, PositionClosed(
            close_id=f"close-{uuid.uuid4().hex[:12]}", position_id=position.position_id,
            price=max(PRICE_STEP, position.average_price + PRICE_STEP * rng.randint(-10, 10)),
            quantity=Decimal(1) if partial else None,
            reason=rng.choice(["stop-loss", "take-profit"])))


def limits_for(rng: random.Random) -> LimitsSet:
    """Limits tight enough that every gate bites within a schedule's few seconds."""
    return LimitsSet(max_open_positions=rng.randint(2, 4),
                     max_exposure=Decimal(rng.choice([3000, 6000, 9000])),
                     max_order_notional=Decimal(2500),
                     max_orders_per_minute=rng.randint(3, 6),
                     max_underlying_exposure=Decimal(rng.choice([1500, 2500, 4000])),
                     duplicate_window_s=rng.randint(10, 30))


async def _operator(schedule: Schedule, until: float) -> None:
    """Limit changes appended straight to the store; halts (which cancel what is pending),
    spells of reducing (now and then straight from a halt) and resumes, as `ledger halt`,
    `reduce` and `resume` make them."""
    rng = random.Random(schedule.rng.random())
    while time.monotonic() < until:
        await asyncio.sleep(rng.uniform(0.8, 2.0))
        account = rng.choice(schedule.accounts)
        roll = rng.random()
        if roll < 0.4:
            await schedule.append(account, schedule.operator_limits(rng))
        elif roll < 0.7:
            await schedule.set_state(account, "halted", "operator pause")
            await asyncio.sleep(rng.uniform(0.3, 1.0))
            await schedule.set_state(account, "active", "resumed")
        else:
            if rng.random() < 0.3:
                await schedule.set_state(account, "halted", "broker mismatch")
                await asyncio.sleep(rng.uniform(0.2, 0.5))
            await schedule.set_state(account, "reducing", "flatten")
            # Long enough for the position manager to send reductions through the dispatcher.
            await asyncio.sleep(rng.uniform(1.0, 2.5))
            await schedule.set_state(account, "active", "resumed")


async def _manual_dispatch(schedule: Schedule) -> None:
    """Two operators replay signal files with `ledger dispatch` while the live dispatcher runs."""
    rng = random.Random(schedule.rng.random())
    account = schedule.accounts[0]
    await asyncio.gather(*(_dispatch_file(schedule, account, f"m{schedule.seed}-{operator}",
                                          rng.randint(30, 60), rng)
                           for operator in range(2)))


async def _dispatch_file(schedule: Schedule, account: str, prefix: str, count: int,
                         rng: random.Random) -> None:
    lines = [json.dumps({
        "signal_id": f"{prefix}-{index}", "account": account,
        "occurred_at": "2026-02-03T15:00:00Z", "symbol": "SPY", "instrument": "option",
        "side": "long", "quantity": str(rng.randint(1, 3)), "limit_price": "5.00",
        "multiplier": "100"}) for index in range(count)]
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        handle.write("\n".join(lines) + "\n")
    operations = [Operation(kind="signal", account=account, signal_id=f"{prefix}-{index}",
                            invoked_at=time.monotonic()) for index in range(count)]
    schedule.history.extend(operations)
    process = await asyncio.create_subprocess_exec(
        *schedule.cluster.command("dispatch"), "dispatch", account, "--signals", handle.name,
        env={**cli_env(schedule.settings), **schedule.cluster.env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    _, error = await process.communicate()
    code = process.returncode
    os.unlink(handle.name)
    if code:
        log.info("ledger dispatch exited %s: %s", code, error.decode().strip()[-300:])
    for operation in operations:
        # Exit 0: every line decided. Anything else (an outage mid-file): each line may or may
        # not have been decided.
        operation.outcome = "ok" if code == 0 else "unknown"
        operation.detail = f"exit {code}: {error.decode().strip()[-200:]}"
        operation.completed_at = time.monotonic()


# --- The broker's positions ---------------------------------------------------------------------


async def _snapshots(schedule: Schedule, until: float) -> None:
    """The broker publishes each account's positions on `broker-positions` now and then, as its
    book has them; a few snapshots of a schedule carry a mismatch planted on purpose.

    The rule that makes an honest snapshot match: it is taken only when none of the account's
    executions is in flight and none was cut off unrecorded (`Book`), so every execution it
    accounts for is on `executions` before it (ingest waits for those), and every execution
    after it occurs after its `as_of` (ingest leaves those out of the comparison, even when it
    recorded them first). Its draws come from a stream of their own: the rest of the schedule
    draws what it drew before.
    """
    rng = random.Random(f"snapshots-{schedule.seed}")
    slots = [(account, slot) for account in schedule.accounts for slot in range(PLANTED_SLOTS)]
    planted = rng.sample(slots, rng.randint(*MISMATCHES_PER_SCHEDULE))
    if schedule.plant_always:
        planted = [(account, 0) for account in schedule.accounts]
    await asyncio.gather(*(
        _account_snapshots(schedule, account, until, random.Random(rng.random()),
                           sorted(slot for name, slot in planted if name == account))
        for account in schedule.accounts))


async def _account_snapshots(schedule: Schedule, account: str, until: float,
                             rng: random.Random, planted: list[int]) -> None:
    await asyncio.sleep(rng.uniform(*SNAPSHOT_FIRST_S))
    published = 0
    while time.monotonic() < until:
        # A planted mismatch whose slot has come (or passed: its kind could not be planted yet).
        due = bool(planted) and planted[0] <= published
        snapshot = await _snapshot(schedule, account, rng, plant=due)
        if snapshot is not None:
            published += 1
            if snapshot.injected is not None and not schedule.plant_always:
                planted.pop(0)
        await asyncio.sleep(rng.uniform(*SNAPSHOT_EVERY_S))


async def _snapshot(schedule: Schedule, account: str, rng: random.Random,
                    plant: bool) -> Snapshot | None:
    """Take and send one snapshot; None when it had to be skipped."""
    book = schedule.book(account)
    if not await _resolved(schedule, account, book):
        return None
    async with book.lock:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(book.quiet.wait(), timeout=SNAPSHOT_QUIET_S)
        if book.in_flight or book.unknown:
            return None
        snapshot, body = _taken(schedule, account, book, rng, plant)
        assert schedule.producer is not None
        try:
            await asyncio.wait_for(schedule.producer.send_and_wait(
                schedule.topics.broker_positions, body, key=account.encode()),
                timeout=SNAPSHOT_SEND_TIMEOUT_S)
        except (KafkaError, TimeoutError):
            snapshot = dataclasses.replace(snapshot, acknowledged=False)
        schedule.snapshots.append(snapshot)
        if snapshot.acknowledged:
            schedule.snapshots_sent.append((account, body))
        return snapshot


async def _resolved(schedule: Schedule, account: str, book: Book) -> bool:
    """Enter in the book the executions cut off that the store shows recorded; return whether
    none is left in doubt."""
    if not book.unknown:
        return True
    try:
        conn = await asyncio.wait_for(connect(schedule.settings.database_url), timeout=3)
    except CLIENT_ERRORS:
        return False
    try:
        rows = await asyncio.wait_for(conn.fetch(
            "SELECT event_id FROM events WHERE account = $1 AND event_id = ANY($2::uuid[])",
            account, list(book.unknown)), timeout=3)
    except CLIENT_ERRORS:
        return False
    finally:
        conn.terminate()
    for row in rows:
        book.apply(row["event_id"], book.unknown.pop(row["event_id"]))
    return not book.unknown


def _taken(schedule: Schedule, account: str, book: Book, rng: random.Random,
           plant: bool) -> tuple[Snapshot, bytes]:
    """The book's lines as of now, with a mismatch planted if one is due and can be."""
    lines = book.lines()
    sent, injected, kind = lines, None, "honest"
    kinds = [k for k in schedule.mismatch_kinds if k == "extra-symbol" or lines]
    if plant and kinds:
        kind = rng.choice(kinds)
        sent = _perturbed(kind, lines, rng)
        injected = holdings_differences(_held(lines), _held(sent)) or None
        if injected is None:
            sent, kind = lines, "honest"  # the change cancelled out: nothing was planted
    as_of = schedule.now()
    body = json.dumps({"account": account, "as_of": format_time(as_of), "positions": [
        {"symbol": line.symbol, "side": line.side, "quantity": format_decimal(line.quantity)}
        for line in sent]}).encode()
    return Snapshot(account=account, as_of=as_of, positions=sent,
                    accounted=frozenset(book.accounted), injected=injected, kind=kind,
                    sent_at=time.monotonic()), body


def _held(lines: Sequence[BrokerPosition]) -> list[tuple[str, Side, Decimal]]:
    return [(line.symbol, line.side, line.quantity) for line in lines]


def _perturbed(kind: str, lines: tuple[BrokerPosition, ...],
               rng: random.Random) -> tuple[BrokerPosition, ...]:
    """The book's lines with one thing wrong: a quantity off, a symbol missing, an extra
    symbol or a side flipped."""
    if kind == "extra-symbol":
        held = {line.symbol for line in lines}
        symbol = rng.choice([s for s in FOREIGN_SYMBOLS if s not in held])
        side: Side = rng.choice(["long", "short"])
        return (*lines, BrokerPosition(symbol=symbol, side=side,
                                       quantity=Decimal(rng.randint(1, 5))))
    index = rng.randrange(len(lines))
    line = lines[index]
    if kind == "symbol-missing":
        return tuple(other for other in lines if other.symbol != line.symbol)
    if kind == "quantity-off":
        changed = BrokerPosition(symbol=line.symbol, side=line.side, quantity=line.quantity
                                 + rng.choice([1, 2, *([-1] if line.quantity > 1 else [])]))
    elif kind == "side-flipped":
        changed = BrokerPosition(symbol=line.symbol, quantity=line.quantity,
                                 side="short" if line.side == "long" else "long")
    else:
        raise ValueError(kind)
    return (*lines[:index], changed, *lines[index + 1:])


# --- Hostile input ------------------------------------------------------------------------------


async def _hostile(schedule: Schedule) -> None:
    """Write what no well-behaved producer writes, straight into the topics."""
    assert schedule.producer is not None
    rng = schedule.rng
    account = rng.choice(schedule.accounts)
    topics = schedule.topics
    stranger = f"zz{uuid.uuid4().hex[:8]}"
    stranger_fill = build_event(stranger, schedule.now(), OrderFilled(
        fill_id="x-1", position_id="x", symbol="SPY", instrument="equity", side="long",
        quantity=Decimal(1), price=Decimal(1)))
    forged = with_ledger_fields(build_event(account, schedule.now(), OrderFilled(
        fill_id=f"forged-{uuid.uuid4().hex[:6]}", position_id="forged", symbol="SPY",
        instrument="equity", side="long", quantity=Decimal(100), price=Decimal(500))),
        sequence=1_000_000 + rng.randint(0, 1000), recorded_at=schedule.now(),
        global_position=0)
    messages = [
        (topics.executions, account, b'{"account": "' + account.encode() + b'", "type": ',
         "dead-letter", "malformed-json"),
        (topics.executions, stranger, encode_event(stranger_fill), "dead-letter",
         "unknown-account"),
        (topics.signals, account, b"not a signal at all", "dead-letter", "malformed-signal"),
        (topics.ledger_events, account, encode_event(forged), "dead-letter", "future-sequence"),
    ]
    messages += _poison(schedule, account, topics)
    messages += [
        (topics.broker_positions, account,
         b'{"account": "' + account.encode() + b'", "as_of": ', "dead-letter",
         "malformed-positions"),
        (topics.broker_positions, stranger, json.dumps({
            "account": stranger, "as_of": format_time(schedule.now()),
            "positions": []}).encode(), "dead-letter", "unknown-account-positions"),
    ]
    for key, value in schedule.snapshots_sent[-1:]:
        # A broker view sent again: judged once, whatever happens.
        messages.append((topics.broker_positions, key, value, "harmless", "replayed-snapshot"))
    for key, value in rng.sample(schedule.executions_sent, min(3, len(schedule.executions_sent))):
        # A producer retrying what was already acknowledged: stored once, whatever happens.
        messages.append((topics.executions, key, value, "harmless", "duplicate-execution"))
    assert schedule.cluster.ledger_events is not None
    replayed = [r for r in schedule.cluster.ledger_events.records
                if r.key is not None and r.key.decode() in schedule.accounts]
    if replayed:
        # Old events again, out of order: the projector must take them for what they are.
        for record in rng.sample(replayed, min(3, len(replayed)))[::-1]:
            assert record.value is not None
            assert record.key is not None
            messages.append((topics.ledger_events, record.key.decode(), record.value,
                             "harmless", "reordered-duplicate"))
    for topic, key, value, expect, kind in messages:
        hostile = Hostile(topic=topic, key=key.encode(), value=value, expect=expect,  # type: ignore[arg-type]
                          kind=kind, acknowledged=False)
        try:
            await asyncio.wait_for(schedule.producer.send_and_wait(topic, value,
                                                                   key=key.encode()), 15)
        except (KafkaError, TimeoutError):
            pass
        else:
            hostile = Hostile(topic=topic, key=key.encode(), value=value, expect=expect,  # type: ignore[arg-type]
                              kind=kind, acknowledged=True)
        schedule.hostile.append(hostile)


def _poison(schedule: Schedule, account: str,
            topics: Topics) -> list[tuple[str, str, bytes, str, str]]:
    """Values beyond the contract's bounds and shapes no parser should choke on."""
    at = schedule.now().isoformat().replace("+00:00", "Z")
    signal = {"signal_id": f"poison-{uuid.uuid4().hex[:8]}", "account": account,
              "occurred_at": at, "symbol": "SPY", "instrument": "equity", "side": "long",
              "quantity": "1000000000000000000", "limit_price": "1000000000000000000"}
    data: dict[str, object] = {
        "fill_id": f"poison-{uuid.uuid4().hex[:8]}", "position_id": "P-poison", "symbol": "SPY",
        "instrument": "equity", "side": "long", "quantity": True, "price": "1.00"}
    fill = {"account": account, "type": "OrderFilled", "occurred_at": at, "data": data}
    huge = {**fill, "data": {**data, "quantity": "1", "symbol": "S" * 300_000}}
    limits = {"event_id": str(uuid.uuid4()), "account": account, "type": "LimitsSet",
              "occurred_at": at, "sequence": 1_000_000 + schedule.rng.randint(0, 1000),
              "data": {"max_open_positions": 3_000_000_000, "max_exposure": "10"}}
    deep = b"[" * 50_000 + b"]" * 50_000
    return [
        (topics.signals, account, json.dumps(signal).encode(), "dead-letter", "1e18-signal"),
        (topics.executions, account, json.dumps(fill).encode(), "dead-letter", "wrong-type"),
        (topics.executions, account, json.dumps(huge).encode(), "dead-letter", "huge-string"),
        (topics.executions, account, json.dumps({**fill, "type": "Bogus"}).encode(),
         "dead-letter", "unknown-type"),
        (topics.executions, account, deep, "dead-letter", "deep-nesting"),
        (topics.signals, account, deep, "dead-letter", "deep-nesting"),
        (topics.ledger_events, account, json.dumps(limits).encode(), "dead-letter",
         "3e9-limits"),
    ]


# --- Faults -------------------------------------------------------------------------------------


async def _fault(schedule: Schedule, kind: str, rng: random.Random) -> None:
    cluster = schedule.cluster
    if kind != "failpoint":
        cluster.faults.note(kind)
    names = sorted(cluster.processes)
    if kind == "kill":
        victim = cluster.processes[rng.choice(names)]
        await asyncio.to_thread(victim.kill)
    elif kind == "failpoint":
        point = rng.choice(failpoints.POINTS)
        role = point.split(".")[0]
        owners = [p for n, p in sorted(cluster.processes.items()) if n.split("-")[0] == role]
        victim = rng.choice(owners)
        victim.extra_env = {"LEDGER_FAILPOINTS": f"{point}={FAILPOINT_PROBABILITY}",
                            "LEDGER_FAILPOINT_SEED": str(rng.randint(0, 2**31))}
        cluster.faults.note(f"failpoint {point}")
        await asyncio.to_thread(victim.kill)
    elif kind == "postgres-restart":
        await asyncio.to_thread(postgres_stop_immediate)
        await asyncio.sleep(rng.uniform(0.3, 2.0))
        await asyncio.to_thread(postgres_start)
    elif kind == "kafka-restart":
        await asyncio.to_thread(kafka_kill)
        await asyncio.sleep(rng.uniform(0.3, 1.0))
        await asyncio.to_thread(kafka_start)
    elif kind == "leader-kill":
        node = await _leader_of(cluster, rng.choice(schedule.accounts))
        await asyncio.to_thread(kafka_kill, node, cluster.kafka_cluster)
        await asyncio.sleep(rng.uniform(*BROKER_DOWN_S))
        await asyncio.to_thread(kafka_start, node, cluster.kafka_cluster)
    elif kind == "two-brokers-down":
        nodes = rng.sample(range(1, cluster.kafka_cluster.brokers + 1), 2)
        for node in nodes:
            await asyncio.to_thread(kafka_kill, node, cluster.kafka_cluster)
        await asyncio.sleep(rng.uniform(*BROKER_DOWN_S))
        for node in nodes:
            await asyncio.to_thread(kafka_start, node, cluster.kafka_cluster)
    elif kind == "rebalance":
        account = rng.choice(schedule.accounts)
        original = cluster.processes[f"dispatcher-{account}"]
        replica = cluster.process(f"dispatcher-{account}-replica", "dispatcher", "--account",
                                  account)
        # Kill the member that holds the partition while the new one is joining the group.
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        await asyncio.to_thread(original.kill)
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        await asyncio.to_thread(replica.stop)
        del cluster.processes[replica.name]
    elif kind == "hostile":
        await _hostile(schedule)
    elif kind == "relay-pause":
        relay = cluster.processes["relay"]
        relay.wanted = False
        await asyncio.to_thread(relay.kill)
        await asyncio.sleep(INTENT_TTL_S * 3)
        relay.wanted = True
    else:
        raise ValueError(kind)


async def _leader_of(cluster: Cluster, account: str) -> int:
    """Return the node leading the partition of `ledger-events` that holds an account's events."""
    assert cluster.topics is not None
    topic = cluster.topics.ledger_events
    async with kafka_admin.opened(cluster.settings, client_id="campaign-faults") as admin:
        described = await admin.describe_topics([topic])
    partitions = {p["partition"]: p["leader"] for p in described[0]["partitions"]}
    index = int(DefaultPartitioner()(account.encode(), sorted(partitions), sorted(partitions)))
    return int(partitions[index])


def draw_faults(rng: random.Random,
                weights_by_kind: dict[str, int] = FAULT_WEIGHTS) -> list[tuple[float, str]]:
    """The schedule: 2-4 faults at instants within the workload window."""
    kinds, weights = zip(*weights_by_kind.items(), strict=True)
    count = rng.randint(2, 4)
    return sorted((rng.uniform(0.3, WORKLOAD_S - 0.5), rng.choices(kinds, weights)[0])
                  for _ in range(count))


async def _faults(schedule: Schedule, plan: list[tuple[float, str]]) -> None:
    rng = random.Random(schedule.rng.random())
    for at, kind in plan:
        delay = schedule.started + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await _fault(schedule, kind, rng)


# --- One schedule -------------------------------------------------------------------------------


async def run_schedule(cluster: Cluster, seed: int, *, plan: list[tuple[float, str]] | None = None,
                       manual_dispatch: bool | None = None,
                       settle_timeout_s: float = SETTLE_TIMEOUT_S,
                       limits: Callable[[random.Random], LimitsSet] | None = None,
                       mismatches: Sequence[str] | None = None,
                       ) -> Observation:
    """Run one seeded schedule on the cluster and return what settled.

    `plan` replaces the drawn faults, and `manual_dispatch` the drawn choice of operators
    replaying signal files (the planted-bug tests pin both); `limits` draws the limits the
    accounts start with and the operator sets (default `limits_for`); `mismatches` the kinds of
    mismatch the broker plants, then in every snapshot where one can be (default: any kind of
    MISMATCH_KINDS, in 2-3 snapshots of the schedule).
    """
    limits = limits_for if limits is None else limits
    rng = random.Random(seed)
    suffix = uuid.uuid4().hex[:6]
    accounts = [f"c{seed}_{suffix}_{letter}" for letter in "abc"]
    drawn = draw_faults(rng, cluster.fault_weights)
    plan = drawn if plan is None else plan
    replay_files = rng.random() < 0.5
    manual_dispatch = replay_files if manual_dispatch is None else manual_dispatch
    print(f"schedule seed={seed} accounts={accounts} faults={[k for _, k in plan]}", flush=True)
    record_operator_events()
    schedule = Schedule(seed=seed, cluster=cluster, rng=rng, accounts=accounts)
    schedule.limits = limits
    schedule.reconcile_rng = random.Random(f"reconcile-age-{seed}")
    if mismatches is not None:
        assert set(mismatches) <= set(MISMATCH_KINDS), mismatches
        schedule.mismatch_kinds, schedule.plant_always = tuple(mismatches), True
    initial = {account: limits(rng) for account in accounts}
    for account in accounts:
        await commands.add_account(cluster.settings, account, None)
        cluster.process(f"dispatcher-{account}", "dispatcher", "--account", account)
    schedule.producer = kafka.producer(cluster.settings, client_id="campaign-client")
    await schedule.producer.start()
    try:
        await _dispatchers_ready(schedule)
        for account in accounts:
            await schedule.append(account, initial[account])
        schedule.started = time.monotonic()
        until = schedule.started + WORKLOAD_S
        tasks = [_strategies(schedule, until), _broker(schedule, until + INTENT_TTL_S),
                 _position_manager(schedule, until), _operator(schedule, until),
                 _faults(schedule, plan), _snapshots(schedule, until + INTENT_TTL_S)]
        if manual_dispatch:
            tasks.append(_manual_dispatch(schedule))
        await asyncio.gather(*tasks)
        cluster.disarm()
        observation = await settle(schedule, settle_timeout_s)
    finally:
        await _stop_quietly(schedule.producer)
        for account in accounts:
            managed = cluster.processes.pop(f"dispatcher-{account}")
            await asyncio.to_thread(managed.stop)
    return observation


async def _dispatchers_ready(schedule: Schedule) -> None:
    """Wait until every account's dispatcher decides, so the workload meets live dispatchers.

    A new dispatcher takes seconds to start and join its consumer group; without this wait it
    would decide the whole workload as one backlog after it, and nothing would interleave with
    the fills, closes, halts and reductions. Each account gets one signal before its limits are
    set (so it is blocked, limits_not_set), and the wait ends when all are decided or after
    READY_TIMEOUT_S (the workload then runs all the same).
    """
    for account in schedule.accounts:
        await schedule.send_signal(account, f"s{schedule.seed}-ready", {
            "symbol": "SPY", "instrument": "equity", "side": "long", "quantity": "1",
            "limit_price": "1.00"})
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(*CLIENT_ERRORS):
            conn = await asyncio.wait_for(connect(schedule.settings.database_url), timeout=3)
            try:
                decided = await conn.fetchval(
                    "SELECT count(DISTINCT account) FROM events WHERE account = ANY($1::text[]) "
                    "AND type = 'SignalEvaluated'", schedule.accounts)
            finally:
                conn.terminate()
            if decided == len(schedule.accounts):
                return
        await asyncio.sleep(READY_POLL_S)
    log.warning("dispatchers of %s not all ready after %ss", schedule.accounts, READY_TIMEOUT_S)


async def settle(schedule: Schedule, timeout_s: float) -> Observation:
    """Observe until the system has converged (or the deadline passes); return the last view.

    Converged means the checker finds nothing: every invariant that needs time (the projector
    catching up, the relay publishing, dead letters arriving) has had it. At the deadline the
    last observation is returned as it is, for the checker to report.
    """
    from tests.faults.checker import find_violations

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            observation = await observe(schedule)
        except CLIENT_ERRORS:
            observation = None
        if observation is not None and (not find_violations(observation)
                                        or time.monotonic() > deadline):
            return observation
        await asyncio.sleep(1.0)


async def observe(schedule: Schedule) -> Observation:
    """Read the store, the projection and the tapped topics for the schedule's accounts."""
    conn = await connect(schedule.settings.database_url)
    try:
        events: dict[str, list[Event]] = {}
        projection = {}
        writers: dict[str, dict[int, str]] = {}
        for account in schedule.accounts:
            events[account] = await store.read_stream(conn, account, batch_size=1_000_000)
            projection[account] = await tables.load_state(conn, account)
            writers[account] = {int(row[0]): row[1] for row in await conn.fetch(
                "SELECT sequence, recorded_by FROM events WHERE account = $1", account)}
    finally:
        await conn.close()
    names = roles.roles_for(schedule.settings)
    role_kinds: dict[str, tuple[str, str | None]] = {
        names.job(roles.Job.ingest): ("broker", None),
        names.job(roles.Job.operator): ("operator", None),
        **{names.account(account): ("dispatcher", account) for account in schedule.accounts}}
    cluster = schedule.cluster
    assert cluster.ledger_events is not None
    assert cluster.dead_letters is not None
    assert cluster.order_intents is not None
    keys = {account.encode() for account in schedule.accounts}
    return Observation(
        seed=schedule.seed, accounts=list(schedule.accounts), store=events,
        projection=projection,
        ledger_events=[r for r in cluster.ledger_events.records if r.key in keys],
        dead_letters=list(cluster.dead_letters.records),
        order_intents=[r for r in cluster.order_intents.records if r.key in keys],
        history=list(schedule.history), hostile=list(schedule.hostile), writers=writers,
        role_kinds=role_kinds, snapshots=list(schedule.snapshots),
        reconcile_wait_s=RECONCILE_WAIT_S)

