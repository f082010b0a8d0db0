"""Benchmark the projector (ledger-events -> projection tables).

Baseline in the same run: a bare aiokafka consumer reading the same topic (the median of three
reads, since a single one is dominated by its group join). Expectation on the 2-core machine: the
projector decodes each message through the contract (about 7 us), checks the store's ids and
writes one transaction per account per batch, against a bare consumer's 7-14 us per message, so
0.3-0.5 of it. The same with `ledger run projector` as 1 and 2 processes of one consumer group
(the projector scales out over partitions), timed from the first event projected. Rebuild and
audit are in bench_scale.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bench.bench_append import make_fills
from bench.common import ROOT, Timer, fresh_database, report
from console import commands
from ledger import kafka, store
from ledger.db import connect, create_pool
from ledger.kafka_admin import ensure_topics
from ledger.settings import Settings
from ledger.topics import Topics
from projections import projector as projector_module
from services import relay

SEED = 20260205
SETTLE_TIMEOUT_S = 600.0
LEDGER_BIN = ROOT / ".venv" / "bin" / "ledger"


async def load(settings: Settings, accounts: list[str], total: int, rng: random.Random) -> None:
    """Append `total` fills spread over the accounts, through the store."""
    conn = await connect(settings.database_url)
    pipeline = store.AppendPipeline(conn)
    try:
        per_account = total // len(accounts)
        for account in accounts:
            await commands.add_account(settings, account, None)
            fills = make_fills(account, per_account, rng, prefix=account)
            for start in range(0, len(fills), 1000):
                await pipeline.submit(account, fills[start:start + 1000])
        await pipeline.finish()
    finally:
        await conn.close()


@asynccontextmanager
async def _published(count: int) -> AsyncIterator[tuple[Settings, Topics]]:
    """A fresh database and topics holding `count` fills over 4 accounts, all published."""
    rng = random.Random(SEED)
    async with fresh_database() as base:
        settings = base.model_copy(update={"topic_prefix": f"bench{uuid.uuid4().hex[:8]}."})
        topics = await ensure_topics(settings)
        await load(settings, ["bench_p0", "bench_p1", "bench_p2", "bench_p3"], count, rng)
        await _publish_all(settings, topics)
        yield settings, topics


async def bench_projector(count: int) -> None:
    async with _published(count) as (settings, topics):
        bare_s = statistics.median([await _bare_consumer(settings, topics, count)
                                    for _ in range(3)])
        ours_s = await _project_all(settings, topics, count)
    report("projector", count / ours_s, "events/s", "bare aiokafka consumer, same topic",
           count / bare_s, events=count, accounts=4, seed=SEED)
    for processes in (1, 2):
        async with _published(count) as (settings, _):
            seconds = await _project_with_processes(settings, count, processes)
        report("projector_processes", count / seconds, "events/s",
               "bare aiokafka consumer, same topic", count / bare_s, processes=processes,
               events=count, accounts=4, seed=SEED)


async def _project_with_processes(settings: Settings, count: int, processes: int) -> float:
    """Seconds from the first event projected to the last, with `ledger run projector` x N.

    The projector scales out as a consumer group: each process takes some of the partitions.
    Timing starts at the first projected event, so interpreter start-up is left out.
    """
    env = {"LEDGER_DATABASE_URL": settings.database_url, "PATH": "/usr/bin:/bin",
           "LEDGER_SECRETS_DIR": str(settings.secrets_dir),
           "LEDGER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "LEDGER_TOPIC_PREFIX": settings.topic_prefix}
    children = [await asyncio.create_subprocess_exec(
        str(LEDGER_BIN), "run", "projector", env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL) for _ in range(processes)]
    conn = await connect(settings.database_url)
    loop = asyncio.get_running_loop()
    first = None
    try:
        deadline = loop.time() + SETTLE_TIMEOUT_S
        while loop.time() < deadline:
            applied = int(await conn.fetchval(
                "SELECT coalesce(sum(applied_sequence), 0) FROM projection_accounts"))
            if applied and first is None:
                first = loop.time()
            if applied >= count:
                break
            await asyncio.sleep(0.02)
        else:
            raise TimeoutError(f"{processes} projector processes applied {applied} of {count}")
    finally:
        await conn.close()
        for child in children:
            child.terminate()
        await asyncio.gather(*(child.wait() for child in children))
    assert first is not None
    return loop.time() - first


async def _publish_all(settings: Settings, topics: Topics) -> None:
    conn = await connect(settings.database_url)
    producer = kafka.producer(settings, client_id="bench-relay")
    await producer.start()
    try:
        await relay.publish_pending(conn, producer, topics, relay.RelayCounters())
    finally:
        await producer.stop()
        await conn.close()


async def _bare_consumer(settings: Settings, topics: Topics, count: int) -> float:
    consumer = kafka.consumer(settings, topics.ledger_events,
                              group_id=f"bare-{uuid.uuid4().hex}", client_id="bench-bare")
    seen = 0
    with Timer() as timer:
        await consumer.start()
        while seen < count:
            polled = await consumer.getmany(timeout_ms=500, max_records=kafka.MAX_POLL_RECORDS)
            seen += sum(len(batch) for batch in polled.values())
            await consumer.commit()
        await consumer.stop()
    return timer.elapsed_s


async def _project_all(settings: Settings, topics: Topics, count: int) -> float:
    pool = await create_pool(settings.database_url, synchronous_commit=False)
    projector = projector_module.Projector()
    broker = projector_module.build_broker(settings, topics, pool, projector)
    loop = asyncio.get_running_loop()
    with Timer() as timer:
        await broker.start()
        deadline = loop.time() + SETTLE_TIMEOUT_S
        # Polling a counter that the handler owns; a bench, not a test.
        while projector.counters.applied < count and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await broker.stop()
    await pool.close()
    assert projector.counters.applied == count, (projector.counters.applied, count)
    return timer.elapsed_s


async def run(quick: bool) -> None:
    projector_events = 20_000 if quick else 100_000
    print(f"# projector: seed={SEED} events={projector_events}", flush=True)
    await bench_projector(projector_events)
