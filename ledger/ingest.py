"""Ingest: executions from Kafka (fills, closes, intent rejections) into the store.

Reads `executions` in batches, validates every message, appends the valid ones per account (one
transaction per account, idempotent by event_id and natural key, so a redelivered message changes
nothing), sends the refused ones to `dead-letters` with a one-line reason, and commits Kafka
offsets only after both the database and the dead-letter topic have acknowledged. A crash at any
point redelivers the batch from the last commit. Must not import the CLI.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import asyncpg
from aiokafka.structs import ConsumerRecord

from ledger import deadletters, kafka, store
from ledger.db import connect
from ledger.deadletters import DeadLetter
from ledger.errors import InvalidEvent, UnknownAccount
from ledger.events import Event, decode_event
from ledger.logins import service_dsn
from ledger.runtime import keep_running
from ledger.settings import Settings
from ledger.topics import ensure_topics

CONSUMER_GROUP = "ledger-ingest"
POLL_TIMEOUT_MS = 500
# What a broker adapter or position manager may report; decisions and settings come from
# elsewhere and are refused here.
ACCEPTED_TYPES = frozenset({"OrderFilled", "PositionClosed", "IntentRejected"})

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


async def apply_batch(conn: asyncpg.Connection, batch: Sorted,
                      counters: IngestCounters) -> list[DeadLetter]:
    """Append each account's events; return every dead letter, unknown accounts included."""
    dead = list(batch.dead)
    for account, items in batch.by_account.items():
        try:
            result = await store.append(conn, account, [event for _, event in items])
        except UnknownAccount as exc:
            dead.extend(DeadLetter(message=message, reason=f"account: {exc}")
                        for message, _ in items)
            continue
        counters.appended += len(result.appended)
        counters.duplicates += len(result.duplicates)
    counters.dead_letters += len(dead)
    return dead


async def run(settings: Settings, stop: asyncio.Event,
              counters: IngestCounters | None = None) -> None:
    """Run ingest until stop is set, riding out database and broker outages."""
    counters = counters if counters is not None else IngestCounters()

    async def attempt(stop: asyncio.Event) -> None:
        topics = await ensure_topics(settings)
        conn = await connect(service_dsn(settings))
        consumer = kafka.consumer(settings, topics.executions, group_id=CONSUMER_GROUP,
                                  client_id="ledger-ingest")
        producer = kafka.producer(settings, client_id="ledger-ingest-dlq")
        try:
            await producer.start()
            await consumer.start()
            log.info("ingest: consuming %s", topics.executions)
            while not stop.is_set():
                polled = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
                messages = [m for partition in polled.values() for m in partition]
                if not messages:
                    continue
                dead = await apply_batch(conn, sort_batch(messages), counters)
                await deadletters.send(producer, topics.dead_letters, dead, CONSUMER_GROUP)
                # Only now, with the events committed and the dead letters acknowledged.
                await consumer.commit()
        finally:
            await consumer.stop()
            await producer.stop()
            await conn.close()

    await keep_running("ingest", stop, attempt)
