"""The relay: publishes committed events per account, in sequence order, to `ledger-events`.

The store is the outbox: the relay reads what is committed after each account's published sequence,
sends it (key = account; headers account, sequence, event_id, type), waits until the broker
acknowledged every message, and only then moves the account's published sequence. `IntentIssued`
also goes to `order-intents`, with an `expires_at` header, but only while it is live when
published: not past its expiry, not released by the store (expired, rejected), and its account not
halted, all read in one snapshot; it carries that snapshot's stream head (`checked_head`) and is
stamped with the database clock of the check. A relay that was down longer than the TTL therefore
sends the router no backlog of dead orders; every event still goes to `ledger-events`. A crash in
between republishes; consumers dedupe by (account, sequence). Readers track (account, sequence),
never a global serial, so an event that commits late is never skipped. One relay publishes at a
time (a session advisory lock); a second one waits as a standby. It wakes on NOTIFY and polls as a
fallback, so a lost notification only delays.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from aiokafka import AIOKafkaProducer

from ledger import failpoints, kafka, metrics
from ledger.db import connect
from ledger.events import EventType, IntentIssued, decode_event, format_time, intent_key
from ledger.logins import job_dsn
from ledger.roles import Job
from ledger.runtime import keep_running, wait_or_stop
from ledger.settings import Settings
from ledger.store import EVENT_JSON_SQL
from ledger.topics import Topics, ensure_topics

PUBLISH_BATCH_SIZE = 1000
POLL_INTERVAL_S = 1.0
STANDBY_INTERVAL_S = 2.0
# Any constant: it only has to be the same for every relay of one database.
RELAY_LOCK_KEY = 0x1ED6E6
NOTIFY_CHANNEL = "ledger_appended"

log = logging.getLogger("services.relay")

_BEHIND_SQL = """
SELECT s.account, s.head, coalesce(r.published_sequence, 0) AS published
FROM streams s LEFT JOIN relay_positions r USING (account)
WHERE s.head > coalesce(r.published_sequence, 0)
ORDER BY s.account
"""

_PAGE_SQL = f"""
SELECT sequence, event_id, type, {EVENT_JSON_SQL} AS body
FROM events WHERE account = $1 AND sequence > $2 AND sequence <= $3
ORDER BY sequence LIMIT $4
"""

# One statement, so one snapshot: the stream head, the account's latest trading state and which of
# these intents the store has already released are read together, with the clock at the check.
_LIVENESS_SQL = """
SELECT s.head, statement_timestamp() AS checked_at,
       coalesce((SELECT e.type = 'TradingHalted' FROM events e
                 WHERE e.account = $1
                   AND e.type IN ('TradingHalted', 'TradingResumed', 'TradingReduced')
                 ORDER BY e.sequence DESC LIMIT 1), false) AS halted,
       ARRAY(SELECT e.natural_key FROM events e
             WHERE e.account = $1 AND e.natural_key = ANY($2::text[])) AS released
FROM streams s WHERE s.account = $1
"""
_RELEASING_TYPES: tuple[EventType, ...] = ("IntentExpired", "IntentRejected", "IntentCancelled")

_MARK_SQL = """
INSERT INTO relay_positions (account, published_sequence) VALUES ($1, $2)
ON CONFLICT (account) DO UPDATE SET published_sequence = excluded.published_sequence,
                                    updated_at = now()
WHERE relay_positions.published_sequence < excluded.published_sequence
"""


@dataclass(kw_only=True)
class RelayCounters:
    published: int = 0
    cycles: int = 0
    # Intents kept off `order-intents`: dead when published (expired, released, halted).
    withheld: int = 0


async def publish_pending(conn: asyncpg.Connection, producer: AIOKafkaProducer,
                          topics: Topics, counters: RelayCounters) -> int:
    """Publish every committed event not yet published; return how many were sent."""
    sent = 0
    for row in await conn.fetch(_BEHIND_SQL):
        published, head = int(row["published"]), int(row["head"])
        while published < head:
            count, published = await _publish_page(conn, producer, topics, row["account"],
                                                   published, head, counters)
            sent += count
    counters.published += sent
    counters.cycles += 1
    metrics.EVENTS_PUBLISHED.inc(sent)
    return sent


async def _publish_page(conn: asyncpg.Connection, producer: AIOKafkaProducer, topics: Topics,
                        account: str, published: int, head: int,
                        counters: RelayCounters) -> tuple[int, int]:
    rows = await conn.fetch(_PAGE_SQL, account, published, head, PUBLISH_BATCH_SIZE)
    assert rows, f"stream {account} has head {head} but no event after {published}"
    failpoints.hit("relay.before_send")
    intents = [row for row in rows if row["type"] == "IntentIssued"]
    liveness = await _live_intents(conn, account, intents) if intents else None
    live = liveness.live if liveness is not None else {}
    key = account.encode()
    futures = []
    for expected, row in enumerate(rows, start=published + 1):
        # Sequences are gap-free under the head lock; a gap here would be a store bug.
        assert row["sequence"] == expected, (account, expected, row["sequence"])
        body = row["body"].encode()
        headers = [("account", key), ("sequence", str(row["sequence"]).encode()),
                   ("event_id", str(row["event_id"]).encode()), ("type", row["type"].encode())]
        futures.append(await producer.send(topics.ledger_events, value=body, key=key,
                                           headers=headers))
        expires_at = live.get(row["sequence"])
        if expires_at is not None and liveness is not None:
            # Stamped with the moment it was proven live and the head that proof read, so the
            # router (and an auditor) can tell "live when checked" from "live when delivered".
            futures.append(await producer.send(
                topics.order_intents, value=body, key=key,
                timestamp_ms=liveness.checked_at_ms,
                headers=[*headers, ("expires_at", expires_at.encode()),
                         ("checked_head", str(liveness.head).encode())]))
        elif row["type"] == "IntentCancelled":
            # The router cancels it at the broker; a cancel is never dead.
            futures.append(await producer.send(topics.order_intents, value=body, key=key,
                                               headers=headers))
    counters.withheld += len(intents) - len(live)
    metrics.INTENTS_WITHHELD.inc(len(intents) - len(live))
    await asyncio.gather(*futures)
    failpoints.hit("relay.after_send")
    last = int(rows[-1]["sequence"])
    await conn.execute(_MARK_SQL, account, last)
    return len(rows), last


@dataclass(frozen=True)
class Liveness:
    """Which intents of a page may reach the router, and the snapshot that decided it."""

    # The account's stream head in the snapshot: every event up to it was taken into account.
    head: int
    # The database clock when the check ran, in milliseconds since the epoch.
    checked_at_ms: int
    # By sequence, the `expires_at` of each live intent.
    live: dict[int, str]


async def _live_intents(conn: asyncpg.Connection, account: str,
                        intents: list[asyncpg.Record]) -> Liveness:
    """Return which intents are still live: the router may act on them.

    Dead: its expiry has passed, the store holds its expiry or rejection, or the account is
    halted in the same snapshot.
    """
    issued = {int(row["sequence"]): decode_event(row["body"]) for row in intents}
    data = {sequence: event.data for sequence, event in issued.items()
            if isinstance(event.data, IntentIssued)}
    assert len(data) == len(issued), issued
    releases = {sequence: {intent_key(kind, intent.intent_id) for kind in _RELEASING_TYPES}
                for sequence, intent in data.items()}
    keys = [key for keys_of_intent in releases.values() for key in keys_of_intent]
    row = await conn.fetchrow(_LIVENESS_SQL, account, keys)
    assert row is not None, f"stream {account} vanished while it was published"
    checked_at: datetime = row["checked_at"]
    released = set(row["released"])
    live = {} if row["halted"] else {
        sequence: format_time(intent.expires_at) for sequence, intent in data.items()
        if intent.expires_at > checked_at and not releases[sequence] & released}
    return Liveness(head=int(row["head"]), checked_at_ms=int(checked_at.timestamp() * 1000),
                    live=live)


async def run(settings: Settings, stop: asyncio.Event,
              counters: RelayCounters | None = None) -> None:
    """Run the relay until stop is set, riding out database and broker outages."""
    counters = counters if counters is not None else RelayCounters()

    async def attempt(stop: asyncio.Event) -> None:
        topics = await ensure_topics(settings)
        conn = await connect(job_dsn(settings, Job.relay))
        producer = kafka.producer(settings, client_id="ledger-relay")
        try:
            await _become_leader(conn, stop)
            wake = asyncio.Event()
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: wake.set())
            await producer.start()
            log.info("relay: publishing to %s", topics.ledger_events)
            while not stop.is_set():
                wake.clear()
                await publish_pending(conn, producer, topics, counters)
                await _wait_for_wake(wake, stop)
        finally:
            await producer.stop()
            await conn.close()

    await keep_running("relay", stop, attempt)


async def _become_leader(conn: asyncpg.Connection, stop: asyncio.Event) -> None:
    # A session lock dies with its connection, so a crashed relay frees the way at once.
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
        if await wait_or_stop(stop, STANDBY_INTERVAL_S):
            return


async def _wait_for_wake(wake: asyncio.Event, stop: asyncio.Event) -> None:
    stopping = asyncio.ensure_future(stop.wait())
    woken = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait({stopping, woken}, timeout=POLL_INTERVAL_S,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        woken.cancel()
