"""Ingest: executions from Kafka (fills, closes, intent rejections) into the store.

Wired with faststream (a batch subscriber with an explicit ack policy, a dead-letter publisher, an
AsyncAPI description). The handler validates every message of a batch against the contract (and
refuses a close without the broker's `close_id`, or a time too far in the future), then records
the valid ones per account in one transaction: lock the account's head, prove its state at the
head (projection + the store's tail), refuse what contradicts it (a fill naming an open position
of another instrument), and append the rest, idempotent by event_id and natural key, so a
redelivered message changes nothing. The refused go to `dead-letters` with a one-line reason, and
only then are the offsets committed. A crash at any point redelivers the batch from the last
commit. Must not import the CLI.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker, KafkaMessage

from ledger import consumer, deadletters, failpoints, kafka, metrics, store
from ledger.clock import utc_now
from ledger.db import create_pool
from ledger.deadletters import DeadLetter
from ledger.errors import InvalidEvent, UnknownAccount
from ledger.events import (
    MISSING,
    REPORTED_TYPES,
    BrokerPositions,
    Event,
    IntentRejected,
    OrderFilled,
    PositionClosed,
    build_event,
    decode_broker_positions,
    decode_event,
    format_time,
    natural_key,
    refuse_future,
)
from ledger.kafka_admin import check_topics
from ledger.logins import job_dsn
from ledger.principals import Job as KafkaJob
from ledger.principals import for_job
from ledger.roles import Job
from ledger.runtime import OPERATING_ERRORS, one_line
from ledger.settings import Settings
from ledger.topics import Topics
from projections.current import state_at_head
from projections.executions import discrepancies, execution_problem
from projections.fold import AccountState, Folding
from services import reconcile, signal_watch

if TYPE_CHECKING:
    import asyncpg

    from ledger.db import Conn

CONSUMER_GROUP = "ledger-ingest"
# Broker views are read by their own group, so that a slow judgement never holds executions.
RECONCILE_GROUP = "ledger-reconcile"
POSITIONS_RECORDS_MAX = 100
# How long a broker view waits for the executions before it is judged anyway.
RECONCILE_WAIT_S = 10.0
WATCH_POLL_S = 0.1
# One database transaction per account per batch: larger batches mean fewer commits to wait for.
BATCH_RECORDS_MAX = 2000
POLL_TIMEOUT_MS = 500
RETRY_PAUSE_S = 2.0
# Accounts whose last proven state ingest keeps between batches.
CACHED_ACCOUNTS_MAX = 10_000
# What a broker adapter or position manager may report (the broker's types of the registry);
# decisions and settings come from elsewhere and are refused here.
ACCEPTED_TYPES = frozenset(REPORTED_TYPES)

log = logging.getLogger("services.ingest")

# aiokafka ships no type information: records are untyped here.
Message: TypeAlias = ConsumerRecord


@dataclass(kw_only=True)
class Sorted:
    """A batch split into valid events per account and dead letters."""

    by_account: dict[str, list[tuple[Message, Event]]] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)


@dataclass(kw_only=True)
class IngestCounters:
    appended: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    reconciliations: int = 0


def sort_batch(messages: Sequence[Message], *, now: datetime,
               clock_skew: timedelta) -> Sorted:
    """Validate each message; keep the valid ones per account, in order, and refuse the rest.

    `now` and `clock_skew` bound how far in the future an event may say it occurred.
    """
    result = Sorted()
    for message in messages:
        try:
            event = _validate(message, now, clock_skew)
        except InvalidEvent as exc:
            result.dead.append(DeadLetter(message=message, reason=str(exc)))
            continue
        result.by_account.setdefault(event.account, []).append((message, event))
    return result


def _check_key(message: Message, account: str) -> None:
    """Refuse a message whose key is not the account it names: keys place an account's
    messages in one partition, in order."""
    key = message.key.decode("utf-8", "replace") if message.key is not None else None
    if key != account:
        raise InvalidEvent("key", key, f"does not match account {account!r}")


def _validate(message: Message, now: datetime, clock_skew: timedelta) -> Event:
    if message.value is None:
        raise InvalidEvent("value", None, "is empty: expected an event as JSON")
    event = decode_event(message.value)
    if event.type not in ACCEPTED_TYPES:
        raise InvalidEvent("type", event.type,
                           f"is not accepted on executions: expected one of "
                           f"{', '.join(sorted(ACCEPTED_TYPES))}")
    _check_key(message, event.account)
    if isinstance(event.data, PositionClosed) and event.data.close_id is None:
        raise InvalidEvent("data.close_id", MISSING, "was given: required on executions (the "
                           "broker's execution id, the close's identity)")
    refuse_future(event.occurred_at, now, clock_skew)
    return event


@dataclass(frozen=True, kw_only=True)
class Recorded:
    """What recording one account's events did: the append, and the events refused."""

    result: store.AppendResult
    # (index in the events given, why): contradicts the account's state at its head.
    refused: list[tuple[int, InvalidEvent]] = field(default_factory=list)


class Recorder(Protocol):
    """Record one account's events atomically (the store, or a stub in unit tests)."""

    async def __call__(self, account: str, events: Sequence[Event]) -> Recorded: ...


class StoreRecorder:
    """Record executions in the store, checked against each account's state at its head.

    Keeps the last state proven per account (bounded), so a busy account folds only what
    others appended since its last batch.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._states: dict[str, AccountState] = {}

    async def __call__(self, account: str, events: Sequence[Event]) -> Recorded:
        async with self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    recorded, after = await record(conn, account, events,
                                                   self._states.get(account))
            except BaseException:
                self._states.pop(account, None)
                raise
        if len(self._states) >= CACHED_ACCOUNTS_MAX and account not in self._states:
            self._states.pop(next(iter(self._states)))
        if after is None:
            self._states.pop(account, None)
        else:
            self._states[account] = after
        return recorded


async def record(conn: Conn, account: str, events: Sequence[Event],
                 cached: AccountState | None = None) -> tuple[Recorded, AccountState | None]:
    """Record one account's executions in the caller's transaction; return the state after.

    Under the head lock: prove the state at the head, refuse each event that contradicts it
    (in order: an event sees those accepted before it), append the rest.

    Raises:
        UnknownAccount: the account has no stream.
    """
    head = await store.lock_head(conn, account)
    proven = await state_at_head(conn, account, head, fold_bound=None, cached=cached)
    seen = await store.stored_identities(conn, account, events)
    draft = Folding(proven.state)
    fates = await store.intent_fates(conn, account, _dead_intent_candidates(draft, events))
    accepted: list[Event] = []
    refused: list[tuple[int, InvalidEvent]] = []
    for index, event in enumerate(events):
        key = natural_key(event)
        if event.event_id in seen or key in seen:
            accepted.append(event)  # a redelivery: the store drops it (and what it found)
            continue
        problem = execution_problem(draft.positions, event)
        if problem is not None:
            refused.append((index, problem))
            continue
        found = discrepancies(draft.positions, draft.pending, fates, event)
        seen.update((event.event_id, key))
        for stepped in (event, *(build_event(account, event.occurred_at, d) for d in found)):
            accepted.append(stepped)
            draft.step(stepped, draft.sequence + 1)
        if found:
            log.warning("ingest: %s: %s", account,
                        "; ".join(f"{d.kind}: {d.reason}" for d in found))
            metrics.DISCREPANCIES.labels(account).inc(len(found))
        if isinstance(event.data, IntentRejected):
            fates[event.data.intent_id] = "rejected"
    result = await store.append(conn, account, accepted, expected_sequence=head)
    after = draft.freeze() if result.head == draft.sequence else None
    return Recorded(result=result, refused=refused), after


def _dead_intent_candidates(draft: Folding, events: Sequence[Event]) -> list[str]:
    """Return the intents that fills name but that are not pending: they may have ended."""
    return [event.data.intent_id for event in events
            if isinstance(event.data, OrderFilled) and event.data.intent_id is not None
            and event.data.intent_id not in draft.pending]


async def apply_batch(record_events: Recorder, batch: Sorted,
                      counters: IngestCounters) -> list[DeadLetter]:
    """Record each account's events; return every dead letter, unknown accounts included.

    Raises:
        An operating error: the infrastructure failed; nothing of this batch is acknowledged.
    """
    dead = list(batch.dead)
    for account, items in batch.by_account.items():
        for chunk, outcome in await _record_isolating(record_events, account, items):
            if isinstance(outcome, str):
                dead.extend(DeadLetter(message=message, reason=outcome) for message, _ in chunk)
                continue
            dead.extend(DeadLetter(message=chunk[index][0], reason=str(problem))
                        for index, problem in outcome.refused)
            counters.appended += len(outcome.result.appended)
            counters.duplicates += len(outcome.result.duplicates)
            metrics.EVENTS_APPENDED.labels("ingest").inc(len(outcome.result.appended))
    counters.dead_letters += len(dead)
    metrics.DEAD_LETTERS.labels(CONSUMER_GROUP).inc(len(dead))
    return dead




Chunk: TypeAlias = list[tuple[Message, Event]]


async def _record_isolating(record_events: Recorder, account: str,
                            items: Chunk) -> list[tuple[Chunk, Recorded | str]]:
    """Record an account's events; if that fails for a reason of its own, one by one.

    Returns each chunk recorded with its outcome, or with the reason all of it is refused.
    One poison message must cost its own dead letter, never its neighbours' or the partition.
    """
    try:
        return [(items, await record_events(account, [event for _, event in items]))]
    except UnknownAccount as exc:
        return [(items, f"account: {exc}")]
    except OPERATING_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - classified: this batch's own fault
        if len(items) == 1:
            log.error("ingest: %s: message refused: %s", account, one_line(exc))
            return [(items, one_line(exc))]
    outcomes: list[tuple[Chunk, Recorded | str]] = []
    for item in items:
        outcomes.extend(await _record_isolating(record_events, account, [item]))
    return outcomes


# --- Broker positions: reconciliation ------------------------------------------------------------


def sort_positions(messages: Sequence[Message], *, now: datetime, clock_skew: timedelta,
                   ) -> tuple[list[tuple[Message, BrokerPositions]], list[DeadLetter]]:
    """Validate each broker view; return the valid ones with their messages, and the refused.

    A view from the future is refused: it would keep reconciliation_stale passing until then.
    """
    views: list[tuple[Message, BrokerPositions]] = []
    dead: list[DeadLetter] = []
    for message in messages:
        try:
            if message.value is None:
                raise InvalidEvent("value", None, "is empty: expected the broker's positions")
            view = decode_broker_positions(message.value)
            _check_key(message, view.account)
            refuse_future(view.as_of, now, clock_skew, field="as_of")
        except InvalidEvent as exc:
            dead.append(DeadLetter(message=message, reason=str(exc)))
            continue
        views.append((message, view))
    return views, dead


class ExecutionsWatch:
    """Whether ingest has recorded every execution that was on `executions` at a moment.

    A broker adapter reports its fills, then its positions. Compared before those fills are in
    the store, the positions would differ for no fault of either side; so a view is judged only
    once the ingest group's committed offsets reach the ends `executions` had when the view
    arrived (or after `RECONCILE_WAIT_S`, when ingest is stuck: then it is judged as it is, and
    a difference fails closed).
    """

    def __init__(self, settings: Settings, topic: str) -> None:
        self._settings = settings
        self._topic = topic
        self._reader: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    async def caught_up(self, wait_s: float) -> bool:
        """Wait until ingest has committed past today's ends; False if `wait_s` ran out."""
        reader, admin = await self._clients()
        partitions = reader.partitions_for_topic(self._topic) or set()
        wanted = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        ends = {tp: end for tp, end in (await reader.end_offsets(wanted)).items() if end > 0}
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            committed = await admin.list_consumer_group_offsets(
                CONSUMER_GROUP, partitions=list(ends))
            if all(tp in committed and committed[tp].offset >= end for tp, end in ends.items()):
                return True
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(WATCH_POLL_S)

    async def _clients(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        if self._reader is None or self._admin is None:
            reader = kafka.consumer(self._settings, self._topic, group_id=None,
                                    client_id=f"{CONSUMER_GROUP}-watch")
            admin = kafka.admin(self._settings, client_id=f"{CONSUMER_GROUP}-watch")
            await reader.start()
            await admin.start()
            self._reader, self._admin = reader, admin
        return self._reader, self._admin

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
        if self._admin is not None:
            await self._admin.close()
        self._reader = self._admin = None


class Reconciler(Protocol):
    """Judge one broker view atomically (the store, or a stub in unit tests)."""

    async def __call__(self, view: BrokerPositions) -> reconcile.Reconciliation: ...


class StoreReconciler:
    """Judge broker views in the store, each in its own transaction."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def __call__(self, view: BrokerPositions) -> reconcile.Reconciliation:
        async with self._pool.acquire() as conn, conn.transaction():
            return await reconcile.reconcile(conn, view, utc_now())


async def judge_views(judge: Reconciler, views: Sequence[tuple[Message, BrokerPositions]],
                      counters: IngestCounters) -> list[DeadLetter]:
    """Judge each view in order; return a dead letter for each refused (an unknown account, or
    a fault of its own)."""
    dead: list[DeadLetter] = []
    for message, view in views:
        try:
            outcome = await judge(view)
        except UnknownAccount as exc:
            dead.append(DeadLetter(message=message, reason=f"account: {exc}"))
            continue
        except OPERATING_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - classified: this view's own fault
            dead.append(DeadLetter(message=message, reason=one_line(exc)))
            continue
        if outcome.repeated:
            continue
        counters.reconciliations += 1
        if not outcome.matched:
            log.warning("ingest: %s: reconciliation with the broker as of %s failed: %s",
                        view.account, format_time(view.as_of),
                        "; ".join(f"{d.symbol} {d.side}: broker {d.broker:f}, ledger "
                                  f"{d.ledger:f}" for d in outcome.differences))
    return dead


def build_broker(settings: Settings, topics: Topics, record_events: Recorder,
                 counters: IngestCounters, judge: Reconciler | None = None,
                 watch: ExecutionsWatch | None = None) -> KafkaBroker:
    """Wire ingest: batch subscribers on `executions` and `broker-positions` (when a judge is
    given) and a publisher of dead letters."""
    broker = consumer.build_broker(settings, client_id=CONSUMER_GROUP)
    dead_letters = consumer.dead_letter_publisher(broker, topics.dead_letters)
    if judge is not None:
        _subscribe_positions(broker, settings, topics, judge, watch, dead_letters, counters)

    @consumer.batch_subscriber(broker, settings, consumer.Subscription(
        topic=topics.executions, group_id=CONSUMER_GROUP, title="executions",
        description="Fills, closes and intent rejections from the broker adapter and the "
                    "position manager, keyed by account.",
        max_records=BATCH_RECORDS_MAX, poll_ms=POLL_TIMEOUT_MS))
    async def on_executions(bodies: list[bytes], message: KafkaMessage) -> None:
        async with consumer.read_again_on_outage("ingest", RETRY_PAUSE_S):
            batch = sort_batch(kafka.records_of(message), now=utc_now(),
                               clock_skew=timedelta(seconds=settings.max_clock_skew_s))
            dead = await apply_batch(record_events, batch, counters)
            failpoints.hit("ingest.after_commit")
        await deadletters.publish(dead_letters, dead, CONSUMER_GROUP)

    return broker


def _subscribe_positions(broker: KafkaBroker, settings: Settings, topics: Topics,
                         judge: Reconciler, watch: ExecutionsWatch | None, dead_letters: Any,
                         counters: IngestCounters) -> None:
    @consumer.batch_subscriber(broker, settings, consumer.Subscription(
        topic=topics.broker_positions, group_id=RECONCILE_GROUP, title="broker-positions",
        description="The broker's own view of an account's open positions, keyed by account: "
                    "each is compared with the ledger at its head (PositionsReconciled or "
                    "ReconciliationFailed).",
        max_records=POSITIONS_RECORDS_MAX, poll_ms=POLL_TIMEOUT_MS))
    async def on_positions(bodies: list[bytes], message: KafkaMessage) -> None:
        async with consumer.read_again_on_outage("ingest", RETRY_PAUSE_S):
            views, dead = sort_positions(
                kafka.records_of(message), now=utc_now(),
                clock_skew=timedelta(seconds=settings.max_clock_skew_s))
            if views and watch is not None and not await watch.caught_up(RECONCILE_WAIT_S):
                log.warning("ingest: executions not recorded within %.0f s: broker positions "
                            "judged against the ledger as it is", RECONCILE_WAIT_S)
            dead += await judge_views(judge, views, counters)
            counters.dead_letters += len(dead)
            metrics.DEAD_LETTERS.labels(RECONCILE_GROUP).inc(len(dead))
        await deadletters.publish(dead_letters, dead, RECONCILE_GROUP)


async def run(settings: Settings, stop: asyncio.Event,
              counters: IngestCounters | None = None) -> None:
    """Run ingest until stop is set, riding out database and broker outages."""
    counters = counters if counters is not None else IngestCounters()
    settings = for_job(settings, KafkaJob.ingest)

    async def open_attempt() -> consumer.Running:
        topics = await check_topics(settings, KafkaJob.ingest)
        pool = await create_pool(job_dsn(settings, Job.ingest))
        watch = ExecutionsWatch(settings, topics.executions)
        return consumer.Running(
            broker=build_broker(settings, topics, StoreRecorder(pool), counters,
                                StoreReconciler(pool), watch),
            pool=pool, closing=[watch.close],
            companions=[signal_watch.run_watch(settings, topics, pool, stop)],
            started=f"consuming {topics.executions} and {topics.broker_positions}, "
                    f"watching {topics.signals}")

    await consumer.serve("ingest", stop, open_attempt)
