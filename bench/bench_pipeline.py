"""Benchmark the relay (store -> ledger-events) and ingest (executions -> store).

Baselines in the same run, on the same broker and topic shape (6 partitions): a bare aiokafka
producer (acks=all, idempotent) sending the same payloads the relay sends; and a bare aiokafka
consumer reading the same executions and COPYing them into an equal table. Expectation on the
2-core machine: a bare producer moves roughly 30-60k small messages/s; the relay adds one page
query per 1,000 events and one checkpoint per page, so it should keep at least 60% of that. Ingest
validates each message with pydantic and appends through `ledger_append`, so at least 50% of
consumer + COPY.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import datetime

import asyncpg
from aiokafka.admin import NewTopic

from bench.bench_append import COLUMNS, make_fills
from bench.common import Timer, fresh_database, report
from console import commands
from ledger import kafka, kafka_admin, store
from ledger.db import connect, create_pool
from ledger.events import Event, encode_event
from ledger.kafka_admin import ensure_topics
from ledger.logins import job_dsn
from ledger.roles import Job
from ledger.settings import Settings
from ledger.topics import Topics
from services import ingest, relay

SEED = 20260204
ACCOUNTS = ("bench_a", "bench_b", "bench_c", "bench_d")
SETTLE_TIMEOUT_S = 300.0


async def _prepare(settings: Settings, count: int) -> list[Event]:
    rng = random.Random(SEED)
    events: list[Event] = []
    conn = await connect(settings.database_url)
    try:
        for account in ACCOUNTS:
            await commands.add_account(settings, account, None)
            fills = make_fills(account, count // len(ACCOUNTS), rng, prefix=account)
            for start in range(0, len(fills), 1000):
                await store.append(conn, account, fills[start:start + 1000])
            events.extend(fills)
    finally:
        await conn.close()
    return events


async def bench_relay(settings: Settings, topics: Topics, count: int) -> None:
    conn = await connect(settings.database_url)
    try:
        bodies = [row[0].encode() for row in await conn.fetch(
            f"SELECT {store.EVENT_JSON_SQL} FROM events ORDER BY account, sequence")]
        keys = [row[0].encode() for row in await conn.fetch(
            "SELECT account FROM events ORDER BY account, sequence")]
        baseline_topic = settings.topic("bare-producer")
        await ensure_extra_topic(settings, baseline_topic)
        producer = kafka.producer(settings, client_id="bench-bare")
        await producer.start()
        with Timer() as bare:
            futures = [await producer.send(baseline_topic, value=body, key=key)
                       for body, key in zip(bodies, keys, strict=True)]
            await asyncio.gather(*futures)
        await producer.stop()

        producer = kafka.producer(settings, client_id="bench-relay")
        await producer.start()
        counters = relay.RelayCounters()
        with Timer() as ours:
            sent = await relay.publish_pending(conn, producer, topics, counters)
        await producer.stop()
    finally:
        await conn.close()
    assert sent == count, (sent, count)
    report("relay", count / ours.elapsed_s, "events/s", "bare aiokafka producer, same payloads",
           count / bare.elapsed_s, events=count, partitions=settings.topic_partitions,
           seed=SEED)


async def ensure_extra_topic(settings: Settings, name: str) -> None:
    async with kafka_admin.opened(settings) as admin:
        await admin.create_topics([NewTopic(name, num_partitions=settings.topic_partitions,
                                            replication_factor=1)])


async def bench_ingest(settings: Settings, topics: Topics, events: list[Event]) -> None:
    fresh = [e.model_copy(update={"account": "bench_ingest", "event_id": uuid.uuid4()})
             for e in events]
    await commands.add_account(settings, "bench_ingest", None)
    producer = kafka.producer(settings, client_id="bench-load")
    await producer.start()
    futures = [await producer.send(topics.executions, value=encode_event(e),
                                   key=b"bench_ingest") for e in fresh]
    await asyncio.gather(*futures)
    await producer.stop()

    conn = await connect(settings.database_url)
    try:
        await conn.execute("CREATE TABLE events_baseline (LIKE events INCLUDING ALL)")
        bare_s = await _bare_consume_and_copy(settings, topics, conn, len(fresh))
        ours_s = await _ingest_until(settings, topics, conn, len(fresh))
    finally:
        await conn.close()
    report("ingest", len(fresh) / ours_s, "executions/s", "bare aiokafka consumer + COPY",
           len(fresh) / bare_s, events=len(fresh), seed=SEED)


async def _bare_consume_and_copy(settings: Settings, topics: Topics, conn: asyncpg.Connection,
                                 count: int) -> float:
    consumer = kafka.consumer(settings, topics.executions, group_id=f"bare-{uuid.uuid4().hex}",
                              client_id="bench-bare-consumer")
    sequence = 0
    with Timer() as timer:
        await consumer.start()
        while sequence < count:
            polled = await consumer.getmany(timeout_ms=500, max_records=kafka.MAX_POLL_RECORDS)
            rows = []
            for message in (m for batch in polled.values() for m in batch):
                document = json.loads(message.value)
                sequence += 1
                rows.append((document["account"], sequence, uuid.UUID(document["event_id"]),
                             document["type"], None,
                             datetime.fromisoformat(document["occurred_at"]),
                             json.dumps(document["data"])))
            if rows:
                async with conn.transaction():
                    await conn.copy_records_to_table("events_baseline", columns=COLUMNS,
                                                     records=rows)
                await consumer.commit()
        await consumer.stop()
    return timer.elapsed_s


async def _ingest_until(settings: Settings, topics: Topics, conn: asyncpg.Connection,
                        count: int) -> float:
    pool = await create_pool(job_dsn(settings, Job.ingest))
    counters = ingest.IngestCounters()
    broker = ingest.build_broker(settings, topics, ingest.StoreRecorder(pool), counters)
    loop = asyncio.get_running_loop()
    with Timer() as timer:
        await broker.start()
        deadline = loop.time() + SETTLE_TIMEOUT_S
        # Polling a counter that the handler owns; a bench, not a test, so a short poll is fine.
        while counters.appended < count and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await broker.stop()
    await pool.close()
    assert counters.appended == count, (counters.appended, count)
    return timer.elapsed_s


async def run(quick: bool, parts: tuple[str, ...] = ("relay", "ingest")) -> None:
    """Run the relay's and ingest's benchmarks (`parts`: either or both)."""
    count = 20_000 if quick else 100_000
    print(f"# pipeline: seed={SEED} events={count} accounts={len(ACCOUNTS)} "
          f"parts={','.join(parts)}", flush=True)
    async with fresh_database() as base:
        settings = base.model_copy(update={"topic_prefix": f"bench{uuid.uuid4().hex[:8]}."})
        topics = await ensure_topics(settings)
        events = await _prepare(settings, count)
        if "relay" in parts:
            await bench_relay(settings, topics, count)
        if "ingest" in parts:
            await bench_ingest(settings, topics, events)
