"""Benchmark the projector (ledger-events -> projection) and rebuild (store -> projection).

Baselines in the same run: a bare aiokafka consumer reading the same topic; a raw server-side
cursor over the same rows with json.loads of each. Expectation on the 2-core machine: the
projector validates each message, checks the store's ids and writes one transaction per account
per batch, so at least 50% of the bare consumer; rebuild decodes each event through the contract
(about 10 us) and folds it (about 3 us), so at least 50% of cursor + json.loads needs the decode
to stay that cheap. Rebuild time should grow linearly with events (fitted exponent near 1.0), and
its peak memory should not grow with the store (pages of 1,000 events).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import subprocess
import uuid

from bench.bench_append import make_fills
from bench.common import ROOT, Timer, fresh_database, report
from ledger import commands, kafka, relay, store
from ledger.db import connect, create_pool
from ledger.settings import Settings
from ledger.topics import Topics, ensure_topics
from projections import projector as projector_module

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


async def cursor_baseline(settings: Settings) -> float:
    """Seconds to read every event through a server-side cursor and json.loads each."""
    conn = await connect(settings.database_url)
    try:
        with Timer() as timer:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                cursor = conn.cursor(f"SELECT {store.EVENT_JSON_SQL} FROM events "
                                     "ORDER BY account, sequence", prefetch=1000)
                async for row in cursor:
                    json.loads(row[0])
    finally:
        await conn.close()
    return timer.elapsed_s


def cli_subprocess(settings: Settings, *args: str) -> tuple[float, int]:
    """Run a `ledger` command as a user would; return (seconds, peak RSS of a process, KiB)."""
    env = {"LEDGER_DATABASE_URL": settings.database_url, "PATH": "/usr/bin:/bin",
           "LEDGER_SECRETS_DIR": str(settings.secrets_dir)}
    with Timer() as timer:
        child = subprocess.Popen([str(LEDGER_BIN), *args], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # wait4 gives this child's own peak RSS (RUSAGE_CHILDREN would be the largest of all).
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    # audit exits 3 when it finds a breach: still a complete run.
    assert child.returncode in (0, 3), child.stderr.read() if child.stderr else b""
    return timer.elapsed_s, usage.ru_maxrss


async def bench_rebuild(sizes: list[int], account_count: int) -> None:
    rng = random.Random(SEED)
    points: list[tuple[int, float]] = []
    for size in sizes:
        async with fresh_database() as settings:
            accounts = [f"bench_{index:03d}" for index in range(account_count)]
            await load(settings, accounts, size, rng)
            baseline_s = await cursor_baseline(settings)
            ours_s, peak_kib = cli_subprocess(settings, "rebuild")
            audit_s, audit_kib = cli_subprocess(settings, "audit", "--json")
            points.append((size, ours_s))
            report("rebuild", size / ours_s, "events/s", "server-side cursor + json.loads",
                   size / baseline_s, events=size, accounts=account_count,
                   peak_rss_mib=round(peak_kib / 1024, 1), seconds=round(ours_s, 2),
                   seed=SEED)
            report("audit", size / audit_s, "events/s", "server-side cursor + json.loads",
                   size / baseline_s, events=size, accounts=account_count,
                   peak_rss_mib=round(audit_kib / 1024, 1), seconds=round(audit_s, 2),
                   seed=SEED)
    if len(points) >= 2:
        exponent = _fitted_exponent(points)
        report("rebuild_scaling", exponent, "exponent", "linear", 1.0,
               sizes=[size for size, _ in points],
               seconds=[round(s, 2) for _, s in points])


def _fitted_exponent(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of log(time) against log(events): 1.0 is linear."""
    xs = [math.log(size) for size, _ in points]
    ys = [math.log(seconds) for _, seconds in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    variance = sum((x - mean_x) ** 2 for x in xs)
    return covariance / variance


async def bench_projector(count: int) -> None:
    rng = random.Random(SEED)
    async with fresh_database() as base:
        settings = base.model_copy(update={"topic_prefix": f"bench{uuid.uuid4().hex[:8]}."})
        topics = await ensure_topics(settings)
        await load(settings, ["bench_p0", "bench_p1", "bench_p2", "bench_p3"], count, rng)
        await _publish_all(settings, topics)
        bare_s = await _bare_consumer(settings, topics, count)
        ours_s = await _project_all(settings, topics, count)
    report("projector", count / ours_s, "events/s", "bare aiokafka consumer, same topic",
           count / bare_s, events=count, accounts=4, seed=SEED)


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
    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    projector_events = 20_000 if quick else 100_000
    print(f"# projections: seed={SEED} rebuild_sizes={sizes} accounts=100 "
          f"projector_events={projector_events}", flush=True)
    await bench_projector(projector_events)
    await bench_rebuild(sizes, account_count=100)
