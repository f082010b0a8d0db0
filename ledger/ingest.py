"""Ingest: executions from Kafka (fills, closes, intent rejections) into the store.

Wired with faststream (a batch subscriber with an explicit ack policy, a dead-letter publisher, an
AsyncAPI description). The handler validates every message of a batch, appends the valid ones per
account (one transaction per account, idempotent by event_id and natural key, so a redelivered
message changes nothing), sends the refused ones to `dead-letters` with a one-line reason, and
only then lets the offsets be committed. A crash at any point redelivers the batch from the last
commit. Must not import the CLI.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from aiokafka.structs import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage

from ledger import deadletters, failpoints, kafka, metrics, store
from ledger.db import create_pool
from ledger.deadletters import DeadLetter
from ledger.errors import InvalidEvent, UnknownAccount
from ledger.events import Event, decode_event, types_written_by
from ledger.logins import job_dsn
from ledger.roles import Job
from ledger.runtime import OPERATING_ERRORS, keep_running
from ledger.settings import Settings
from ledger.topics import Topics, ensure_topics

CONSUMER_GROUP = "ledger-ingest"
# One database transaction per account per batch: larger batches mean fewer commits to wait for.
BATCH_RECORDS_MAX = 2000
POLL_TIMEOUT_MS = 500
RETRY_PAUSE_S = 2.0
# What a broker adapter or position manager may report (the broker's types of the registry);
# decisions and settings come from elsewhere and are refused here.
ACCEPTED_TYPES = frozenset(types_written_by("broker"))

log = logging.getLogger("ledger.ingest")

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


def sort_batch(messages: Sequence[Message]) -> Sorted:
    """Validate each message; keep the valid ones per account, in order, and refuse the rest."""
    result = Sorted()
    for message in messages:
        try:
            event = _validate(message)
        except InvalidEvent as exc:
            result.dead.append(DeadLetter(message=message, reason=str(exc)))
            continue
        result.by_account.setdefault(event.account, []).append((message, event))
    return result


def _validate(message: Message) -> Event:
    if message.value is None:
        raise InvalidEvent("value", None, "is empty: expected an event as JSON")
    event = decode_event(message.value)
    if event.type not in ACCEPTED_TYPES:
        raise InvalidEvent("type", event.type,
                           f"is not accepted on executions: expected one of "
                           f"{', '.join(sorted(ACCEPTED_TYPES))}")
    key = message.key.decode("utf-8", "replace") if message.key is not None else None
    if key != event.account:
        raise InvalidEvent("key", key, f"does not match account {event.account!r}")
    return event


class Appender(Protocol):
    """Append one account's events atomically (the store, or a stub in unit tests)."""

    async def __call__(self, account: str, events: Sequence[Event]) -> store.AppendResult: ...


async def apply_batch(append: Appender, batch: Sorted,
                      counters: IngestCounters) -> list[DeadLetter]:
    """Append each account's events; return every dead letter, unknown accounts included."""
    dead = list(batch.dead)
    for account, items in batch.by_account.items():
        try:
            result = await append(account, [event for _, event in items])
        except UnknownAccount as exc:
            dead.extend(DeadLetter(message=message, reason=f"account: {exc}")
                        for message, _ in items)
            continue
        counters.appended += len(result.appended)
        counters.duplicates += len(result.duplicates)
        metrics.EVENTS_APPENDED.labels("ingest").inc(len(result.appended))
    counters.dead_letters += len(dead)
    metrics.DEAD_LETTERS.labels(CONSUMER_GROUP).inc(len(dead))
    return dead




def build_broker(settings: Settings, topics: Topics, append: Appender,
                 counters: IngestCounters) -> KafkaBroker:
    """Wire ingest: a batch subscriber on `executions` and a publisher of dead letters."""
    broker = KafkaBroker(settings.kafka_bootstrap, client_id="ledger-ingest", acks="all",
                         enable_idempotence=True, request_timeout_ms=kafka.REQUEST_TIMEOUT_MS,
                         logger=log, log_level=logging.DEBUG)
    dead_letters = broker.publisher(
        topics.dead_letters, title="dead-letters",
        description="Messages no consumer could use: original bytes and key, with headers "
                    "dlq.reason, dlq.topic, dlq.partition, dlq.offset, dlq.consumer.")

    # NACK_ON_ERROR: offsets are committed only when the handler returned, that is after the
    # database commit and the dead letters' acknowledgement; an error rewinds to the batch start.
    @broker.subscriber(
        topics.executions, batch=True, max_records=BATCH_RECORDS_MAX,
        batch_timeout_ms=POLL_TIMEOUT_MS, group_id=CONSUMER_GROUP, auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR, decoder=kafka.raw_values, title="executions",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms(settings),
        description="Fills, closes and intent rejections from the broker adapter and the "
                    "position manager, keyed by account.")
    async def on_executions(bodies: list[bytes], message: KafkaMessage) -> None:
        try:
            dead = await apply_batch(append, sort_batch(kafka.records_of(message)), counters)
            failpoints.hit("ingest.after_commit")
        except OPERATING_ERRORS as exc:
            log.warning("ingest: %s; the batch will be read again in %.1fs",
                        type(exc).__name__, RETRY_PAUSE_S)
            await asyncio.sleep(RETRY_PAUSE_S)
            raise
        await deadletters.publish(dead_letters, dead, CONSUMER_GROUP)

    return broker


async def run(settings: Settings, stop: asyncio.Event,
              counters: IngestCounters | None = None) -> None:
    """Run ingest until stop is set, riding out database and broker outages."""
    counters = counters if counters is not None else IngestCounters()

    async def attempt(stop: asyncio.Event) -> None:
        topics = await ensure_topics(settings)
        pool = await create_pool(job_dsn(settings, Job.ingest))

        async def append(account: str, events: Sequence[Event]) -> store.AppendResult:
            async with pool.acquire() as conn:
                return await store.append(conn, account, events)

        broker = build_broker(settings, topics, append, counters)
        try:
            await broker.start()
            log.info("ingest: consuming %s", topics.executions)
            await stop.wait()
        finally:
            await broker.stop()
            await pool.close()

    await keep_running("ingest", stop, attempt)
