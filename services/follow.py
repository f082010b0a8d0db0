"""Follow one account's events live: catch up from the store, then follow `ledger-events`.

    async for event in follow(settings, "large", from_sequence=1):
        ...

Every event of the account is yielded exactly once, in sequence order, with no gap: the topic's
end offsets are recorded before the store is read, so nothing published during the catch-up is
missed. Kafka only wakes the follower: on every poll with news for the account, and on every
quiet one (so a stopped relay delays nothing), the events after the last one yielded are read
from the store. A malformed or forged message on the account's key is logged and skipped, never
yielded and never fatal; a repeat or a gap on the topic changes nothing. Connects as the
account's own role.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg

from ledger import kafka, store
from ledger.db import connect
from ledger.errors import InvalidEvent
from ledger.events import Event, decode_event
from ledger.kafka_admin import check_topics
from ledger.logins import account_dsn
from ledger.principals import Job as KafkaJob
from ledger.principals import for_job
from ledger.settings import Settings

POLL_TIMEOUT_MS = 500

log = logging.getLogger("services.follow")


async def follow(
    settings: Settings,
    account: str,
    from_sequence: int = 1,
    *,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[Event]:
    """Yield the account's events from `from_sequence` on, live, until `stop` is set."""
    stop = stop if stop is not None else asyncio.Event()
    settings = for_job(settings, KafkaJob.follow)
    topics = await check_topics(settings, KafkaJob.follow)
    conn = await connect(account_dsn(settings, account))
    # No consumer group: a follower reads everything and commits nothing. The end offsets are
    # taken before the store is read, so nothing published during the catch-up is missed.
    consumer = await kafka.reader_at_end(settings, topics.ledger_events,
                                         client_id=f"ledger-follow-{uuid.uuid4().hex[:8]}")
    try:
        last = from_sequence - 1
        async for event in _from_store(conn, account, last):
            last = _sequence(event)
            yield event
        while not stop.is_set():
            polled = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
            for message in (m for batch in polled.values() for m in batch
                            if m.key == account.encode()):
                _check(message, account)
            # Kafka only brings the news (or a quiet poll says: look anyway); what is yielded
            # is read from the store, so a malformed or forged message cannot end or mislead
            # a follower, and a gap or a repeat on the topic changes nothing.
            async for event in _from_store(conn, account, last):
                last = _sequence(event)
                yield event
    finally:
        await consumer.stop()
        await conn.close()


async def _from_store(conn: asyncpg.Connection, account: str, after: int,
                      up_to: int | None = None) -> AsyncIterator[Event]:
    async for event in store.iterate_stream(conn, account, after, up_to):
        yield event


def _check(message: object, account: str) -> None:
    """Warn of a message on the account's key that is not one of its events."""
    value = getattr(message, "value", None)
    try:
        event = decode_event(value or b"")
    except InvalidEvent as exc:
        log.warning("follow %s: skipped a malformed message (offset %s): %s", account,
                    getattr(message, "offset", "?"), exc)
        return
    if event.account != account:
        log.warning("follow %s: skipped a message of account %s on its key", account,
                    event.account)


def _sequence(event: Event) -> int:
    assert event.sequence is not None
    return event.sequence
