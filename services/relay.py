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
from aiokafka.partitioner import DefaultPartitioner

from ledger import failpoints, kafka, metrics
from ledger.db import connect
from ledger.events import EventType, IntentIssued, decode_event, format_time, intent_key
from ledger.kafka_admin import check_topics
from ledger.logins import job_dsn
from ledger.principals import Job as KafkaJob
from ledger.principals import for_job
from ledger.roles import Job
from ledger.runtime import keep_running, wait_or_stop
from ledger.settings import Settings
from ledger.store import EVENT_JSON_SQL
from ledger.topics import Topics

PUBLISH_BATCH_SIZE = 1000
POLL_INTERVAL_S = 1.0
STANDBY_INTERVAL_S = 2.0
# Any constant: it only has to be the same for every relay of one database.
RELAY_LOCK_KEY = 0x1ED6E6
NOTIFY_CHANNEL = "ledger_appended"

log = logging.getLogger("services.relay")

# Every account, not only those behind: the lag gauge of one caught up must read 0, not vanish.
_HEADS_SQL = """
SELECT s.account, s.head, coalesce(r.published_sequence, 0) AS published
FROM streams s LEFT JOIN relay_positions r USING (account)
"""

# The next page of every account behind, in one statement: per account its events after the
# published sequence, up to the head read by _HEADS_SQL, in sequence order.
_PAGES_SQL = f"""
SELECT b.account, e.sequence, e.event_id, e.type, e.body
FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS b(account, published, head)
CROSS JOIN LATERAL (
    SELECT sequence, event_id, type, {EVENT_JSON_SQL} AS body
    FROM events WHERE account = b.account AND sequence > b.published AND sequence <= b.head
    ORDER BY sequence LIMIT $4) AS e
ORDER BY b.account, e.sequence
"""

# One statement, so one snapshot: per account the stream head, its latest trading state and
# which of these intents the store has already released are read together, with the clock at
# the check. ($2, $3: the intents' accounts and their release keys, side by side.)
_LIVENESS_SQL = """
SELECT s.account, s.head, statement_timestamp() AS checked_at,
       coalesce((SELECT e.type = 'TradingHalted' FROM events e
                 WHERE e.account = s.account
                   AND e.type IN ('TradingHalted', 'TradingResumed', 'TradingReduced')
                 ORDER BY e.sequence DESC LIMIT 1), false) AS halted,
       ARRAY(SELECT e.natural_key
             FROM unnest($2::text[], $3::text[]) AS k(account, natural_key)
             JOIN events e ON e.account = k.account AND e.natural_key = k.natural_key
             WHERE k.account = s.account) AS released
FROM streams s WHERE s.account = ANY($1::text[])
"""
_RELEASING_TYPES: tuple[EventType, ...] = ("IntentExpired", "IntentRejected", "IntentCancelled")

_MARK_SQL = """
INSERT INTO relay_positions (account, published_sequence)
SELECT * FROM unnest($1::text[], $2::bigint[])
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
    """Publish every committed event not yet published; return how many were sent.

    Every account behind is served in the same round: its next page read in one statement,
    the intents' liveness in another, all pages sent. Rounds overlap by one: the next round is
    read while the broker acknowledges the last, and an account's published sequence moves
    (one statement for all) only once every message of its round was acknowledged.
    """
    sent = 0
    behind: dict[str, tuple[int, int]] = {}
    for row in await conn.fetch(_HEADS_SQL):
        account, done, head = row["account"], int(row["published"]), int(row["head"])
        metrics.RELAY_LAG.labels(account).set(head - done)
        if head > done:
            behind[account] = (done, head)
    heads = {account: head for account, (_, head) in behind.items()}
    in_flight: _Round | None = None
    while behind:
        sending = await _send_round(conn, producer, topics, behind, counters)
        if in_flight is not None:
            await _settle(conn, in_flight, heads)
        in_flight = sending
        published = sending.published
        sent += sum(published[account] - behind[account][0] for account in published)
        behind = {account: (published[account], head)
                  for account, (_, head) in behind.items() if published[account] < head}
    if in_flight is not None:
        await _settle(conn, in_flight, heads)
    counters.published += sent
    counters.cycles += 1
    metrics.EVENTS_PUBLISHED.inc(sent)
    return sent


@dataclass(frozen=True)
class _Round:
    """A round handed to the producer: its acknowledgements, and what they publish."""

    futures: list[asyncio.Future[object]]
    # Per account, the last sequence of its page.
    published: dict[str, int]


async def _send_round(conn: asyncpg.Connection, producer: AIOKafkaProducer, topics: Topics,
                      behind: dict[str, tuple[int, int]], counters: RelayCounters) -> _Round:
    """Hand the next page of every account behind to the producer; do not wait for the broker."""
    accounts = sorted(behind)
    rows = await conn.fetch(_PAGES_SQL, accounts, [behind[a][0] for a in accounts],
                            [behind[a][1] for a in accounts], PUBLISH_BATCH_SIZE)
    pages: dict[str, list[asyncpg.Record]] = {account: [] for account in accounts}
    for row in rows:
        pages[row["account"]].append(row)
    for account, page in pages.items():
        assert page, f"stream {account} has head {behind[account][1]} but no event after " \
                     f"{behind[account][0]}"
    failpoints.hit("relay.before_send")
    liveness = await _live_intents(conn, {account: [row for row in page
                                                     if row["type"] == "IntentIssued"]
                                          for account, page in pages.items()})
    futures = []
    for account, page in pages.items():
        futures.extend(await _send_page(producer, topics, account, behind[account][0], page,
                                        liveness.get(account), counters))
    return _Round(futures=futures,
                  published={account: int(page[-1]["sequence"]) for account, page in pages.items()})


async def _settle(conn: asyncpg.Connection, sent: _Round, heads: dict[str, int]) -> None:
    """Wait until the broker acknowledged a round, then move its published sequences.

    The lag gauge follows only then: it counts what the broker has not acknowledged.
    """
    await asyncio.gather(*sent.futures)
    failpoints.hit("relay.after_send")
    accounts = sorted(sent.published)
    await conn.execute(_MARK_SQL, accounts, [sent.published[a] for a in accounts])
    for account in accounts:
        metrics.RELAY_LAG.labels(account).set(heads[account] - sent.published[account])


async def _send_page(producer: AIOKafkaProducer, topics: Topics, account: str, published: int,
                     page: list[asyncpg.Record], liveness: Liveness | None,
                     counters: RelayCounters) -> list[asyncio.Future[object]]:
    """Hand one account's page to the producer, in order; return the acknowledgements."""
    live = liveness.live if liveness is not None else {}
    key = account.encode()
    # The partition the producer's own partitioner gives this key, hashed once per page
    # rather than for every message (murmur2 in Python was a quarter of the relay's time).
    events_partition = await _partition_of(producer, topics.ledger_events, key)
    futures = []
    for expected, row in enumerate(page, start=published + 1):
        # Sequences are gap-free under the head lock; a gap here would be a store bug.
        assert row["sequence"] == expected, (account, expected, row["sequence"])
        body = row["body"].encode()
        headers = [("account", key), ("sequence", str(row["sequence"]).encode()),
                   ("event_id", str(row["event_id"]).encode()), ("type", row["type"].encode())]
        futures.append(await producer.send(topics.ledger_events, value=body, key=key,
                                           partition=events_partition, headers=headers))
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
    intents = sum(row["type"] == "IntentIssued" for row in page)
    counters.withheld += intents - len(live)
    metrics.INTENTS_WITHHELD.inc(intents - len(live))
    return futures


async def _partition_of(producer: AIOKafkaProducer, topic: str, key: bytes) -> int:
    partitions = sorted(await producer.partitions_for(topic))
    return int(DefaultPartitioner()(key, partitions, partitions))


@dataclass(frozen=True)
class Liveness:
    """Which intents of a page may reach the router, and the snapshot that decided it."""

    # The account's stream head in the snapshot: every event up to it was taken into account.
    head: int
    # The database clock when the check ran, in milliseconds since the epoch.
    checked_at_ms: int
    # By sequence, the `expires_at` of each live intent.
    live: dict[int, str]


async def _live_intents(conn: asyncpg.Connection,
                        intents: dict[str, list[asyncpg.Record]]) -> dict[str, Liveness]:
    """Return, per account with intents in its page, which are still live: the router may act
    on them. One statement for every account.

    Dead: its expiry has passed, the store holds its expiry or rejection, or the account is
    halted in the same snapshot.
    """
    data: dict[str, dict[int, IntentIssued]] = {}
    for account, rows in intents.items():
        if not rows:
            continue
        issued = {int(row["sequence"]): decode_event(row["body"]).data for row in rows}
        data[account] = {sequence: intent for sequence, intent in issued.items()
                         if isinstance(intent, IntentIssued)}
        assert len(data[account]) == len(issued), issued
    if not data:
        return {}
    releases = {(account, sequence): {intent_key(kind, intent.intent_id)
                                      for kind in _RELEASING_TYPES}
                for account, by_sequence in data.items()
                for sequence, intent in by_sequence.items()}
    pairs = [(account, key) for (account, _), keys in releases.items() for key in keys]
    rows = await conn.fetch(_LIVENESS_SQL, sorted(data), [a for a, _ in pairs],
                            [k for _, k in pairs])
    found = {row["account"]: row for row in rows}
    result = {}
    for account, by_sequence in data.items():
        row = found.get(account)
        assert row is not None, f"stream {account} vanished while it was published"
        checked_at: datetime = row["checked_at"]
        released = set(row["released"])
        live = {} if row["halted"] else {
            sequence: format_time(intent.expires_at) for sequence, intent in by_sequence.items()
            if intent.expires_at > checked_at and not releases[account, sequence] & released}
        result[account] = Liveness(head=int(row["head"]),
                                   checked_at_ms=int(checked_at.timestamp() * 1000), live=live)
    return result


async def run(settings: Settings, stop: asyncio.Event,
              counters: RelayCounters | None = None) -> None:
    """Run the relay until stop is set, riding out database and broker outages."""
    counters = counters if counters is not None else RelayCounters()
    settings = for_job(settings, KafkaJob.relay)

    async def attempt(stop: asyncio.Event) -> None:
        topics = await check_topics(settings, KafkaJob.relay)
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
