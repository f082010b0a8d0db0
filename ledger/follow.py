"""Follow one account's events live: catch up from the store, then follow `ledger-events`.

    async for event in follow(settings, "large", from_sequence=1):
        ...

Every event of the account is yielded exactly once, in sequence order, with no gap at the
hand-over from store to topic: the topic's end offsets are recorded before the store is read, so
nothing published during the catch-up is missed, and anything seen twice is dropped by sequence.
A message ahead of the next expected sequence (a gap: the relay republished, or a message was
lost) is preceded by the missing events read from the store; when the topic is quiet the store is
checked too, so a stopped relay delays nothing. Connects as the account's own role.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg

from ledger import kafka, store
from ledger.db import connect
from ledger.events import Event, decode_event
from ledger.logins import account_dsn
from ledger.settings import Settings
from ledger.topics import ensure_topics

POLL_TIMEOUT_MS = 500


async def follow(
    settings: Settings,
    account: str,
    from_sequence: int = 1,
    *,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[Event]:
    """Yield the account's events from `from_sequence` on, live, until `stop` is set."""
    stop = stop if stop is not None else asyncio.Event()
    topics = await ensure_topics(settings)
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
            events = [decode_event(m.value) for batch in polled.values() for m in batch
                      if m.key == account.encode()]
            if not events:
                events = [e async for e in _from_store(conn, account, last)]
            for event in sorted(events, key=_sequence):
                if _sequence(event) <= last:
                    continue
                if _sequence(event) > last + 1:
                    async for missing in _from_store(conn, account, last, _sequence(event) - 1):
                        last = _sequence(missing)
                        yield missing
                if _sequence(event) == last + 1:
                    last = _sequence(event)
                    yield event
    finally:
        await consumer.stop()
        await conn.close()


async def _from_store(conn: asyncpg.Connection, account: str, after: int,
                      up_to: int | None = None) -> AsyncIterator[Event]:
    async for event in store.iterate_stream(conn, account, after, up_to):
        yield event


def _sequence(event: Event) -> int:
    assert event.sequence is not None
    return event.sequence
