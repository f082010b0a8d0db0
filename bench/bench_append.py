"""Benchmark `append` (the import path, batches of 1,000) and `append_one` (the dispatcher's shape).

Baselines in the same run and database: asyncpg `copy_records_to_table` of the same rows into an
equal table (`LIKE events INCLUDING ALL`: same columns, keys and indexes), and a bare single-row
INSERT + commit. Expectation on the 2-core machine: COPY of 1,000-row batches runs at roughly
50-100k rows/s; a set-based idempotent insert that checks two unique keys per row should reach at
least 60% of that. Re-submitting duplicates writes no rows, so it should beat COPY and write
(almost) no WAL. The rate on a store already holding 1,000,000 events (100,000 with --quick)
should stay within 10% of the rate on an empty one: the idempotency checks are index lookups.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

import asyncpg

from bench.common import Timer, fresh_database, percentile, report, wal_bytes
from console import commands
from ledger import store
from ledger.db import connect
from ledger.events import Event, decode_event

BATCH_SIZE = 1000
ROUNDS = 4
SEED = 20260203


_SYMBOLS = ("MSFT 260220P00400000", "AMD 260220P00150000")


def make_fills(account: str, count: int, rng: random.Random, prefix: str = "F") -> list[Event]:
    events = []
    for index in range(count):
        document = {
            "account": account, "type": "OrderFilled",
            "occurred_at": f"2026-02-03T{9 + index // 360000 % 8:02d}:"
                           f"{index // 6000 % 60:02d}:{index // 100 % 60:02d}.{index % 100:02d}Z",
            "data": {"fill_id": f"{prefix}-{index}", "position_id": f"P-{index % 50}",
                     # One symbol per position: ingest refuses a fill that adds another
                     # instrument to an open position.
                     "symbol": _SYMBOLS[index % 50 % len(_SYMBOLS)],
                     "instrument": "option", "side": "long",
                     "quantity": str(rng.randint(1, 20)),
                     "price": f"{rng.randint(100, 2000) / 100:.2f}", "multiplier": "100"},
        }
        events.append(decode_event(json.dumps(document)))
    return events


def as_rows(events: list[Event], first_sequence: int) -> list[tuple[object, ...]]:
    return [(e.account, first_sequence + i, e.event_id, e.type, f"fill:{e.event_id}",
             e.occurred_at, e.data.model_dump_json()) for i, e in enumerate(events)]


COLUMNS = ["account", "sequence", "event_id", "type", "natural_key", "occurred_at", "data"]


async def append_and_copy(
    conn: asyncpg.Connection, account: str, events: list[Event]
) -> tuple[float, float]:
    """Return (append rate, COPY rate), measured in alternating rounds so drift hits both."""
    rows = as_rows(events, 1)
    append_s = copy_s = 0.0
    round_size = len(events) // ROUNDS
    for start in range(0, len(events), round_size):
        with Timer() as timer:
            for offset in range(start, start + round_size, BATCH_SIZE):
                end = min(offset + BATCH_SIZE, start + round_size)
                async with conn.transaction():
                    await conn.copy_records_to_table("events_baseline", columns=COLUMNS,
                                                     records=rows[offset:end])
        copy_s += timer.elapsed_s
        append_s += await _timed_import(conn, account, events[start:start + round_size])
    return len(events) / append_s, len(events) / copy_s


async def _timed_import(conn: asyncpg.Connection, account: str, events: list[Event]) -> float:
    """Append as `ledger import` does: batches through the store's pipeline."""
    pipeline = store.AppendPipeline(conn)
    with Timer() as timer:
        for start in range(0, len(events), BATCH_SIZE):
            await pipeline.submit(account, events[start:start + BATCH_SIZE])
        await pipeline.finish()
    return timer.elapsed_s


async def append_batches(conn: asyncpg.Connection, account: str, events: list[Event]) -> float:
    return len(events) / await _timed_import(conn, account, events)


async def prefill(conn: asyncpg.Connection, account: str, count: int) -> None:
    """Grow the store server-side (COPY into events is refused under row-level security)."""
    step = 100_000
    for start in range(0, count, step):
        await conn.execute(
            """INSERT INTO events (account, sequence, event_id, type, natural_key, occurred_at,
                                   data)
               SELECT $1, n, gen_random_uuid(), 'OrderFilled', 'OrderFilled:fill_id="' || n || '"',
                      '2026-02-02T10:00:00Z', '{"fill_id": "x"}'
               FROM generate_series($2::bigint, $3::bigint) AS n""",
            account, start + 1, min(start + step, count))
    await conn.execute("UPDATE streams SET head = $2 WHERE account = $1", account, count)
    # Done now rather than by autovacuum in the middle of the measurement.
    await conn.execute("VACUUM (ANALYZE) events")


async def append_one(conn: asyncpg.Connection, account: str, events: list[Event]) -> list[float]:
    latencies = []
    for event in events:
        started = time.perf_counter()
        await store.append(conn, account, [event])
        latencies.append(time.perf_counter() - started)
    return latencies


async def insert_one_baseline(
    conn: asyncpg.Connection, rows: list[tuple[object, ...]]
) -> list[float]:
    latencies = []
    for row in rows:
        started = time.perf_counter()
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO events_baseline (account, sequence, event_id, type, natural_key, "
                "occurred_at, data) VALUES ($1, $2, $3, $4, $5, $6, $7)", *row)
        latencies.append(time.perf_counter() - started)
    return latencies


async def run(quick: bool) -> None:
    events_n = 20_000 if quick else 100_000
    large_n = 100_000 if quick else 1_000_000
    one_n = 1_000 if quick else 3_000
    rng = random.Random(SEED)
    print(f"# append: seed={SEED} events={events_n} large_store={large_n} one={one_n}", flush=True)
    async with fresh_database() as settings:
        for account in ("bench_empty", "bench_one"):
            await commands.add_account(settings, account, None)
        conn = await connect(settings.database_url)
        try:
            await conn.execute("SET plan_cache_mode = force_custom_plan")
            await conn.execute("CREATE TABLE events_baseline (LIKE events INCLUDING ALL)")
            warmup = make_fills("bench_empty", ROUNDS * BATCH_SIZE, rng, prefix="W")
            await append_and_copy(conn, "bench_empty", warmup)
            await conn.execute("TRUNCATE events_baseline")
            fills = make_fills("bench_empty", events_n, rng)
            # Every measured phase starts right after a checkpoint, so none pays for another's
            # full-page writes.
            await conn.execute("CHECKPOINT")
            append_rate, copy_rate = await append_and_copy(conn, "bench_empty", fills)
            params = {"events": events_n, "batch_size": BATCH_SIZE, "seed": SEED}
            report("append", append_rate, "events/s", "asyncpg COPY into an equal table",
                   copy_rate, **params)

            await conn.execute("CHECKPOINT")
            wal_before = await wal_bytes(conn)
            duplicate_rate = await append_batches(conn, "bench_empty", fills)
            wal_written = await wal_bytes(conn) - wal_before
            report("append_duplicates", duplicate_rate, "events/s",
                   "asyncpg COPY into an equal table", copy_rate, wal_bytes=wal_written, **params)

            singles = make_fills("bench_one", one_n, rng, prefix="O")
            await conn.execute("CHECKPOINT")
            ours = await append_one(conn, "bench_one", singles)
            bare = await insert_one_baseline(conn, as_rows(singles, 10_000_000))
            report("append_one", one_n / sum(ours), "events/s",
                   "bare single-row INSERT + commit", one_n / sum(bare),
                   p50_ms=percentile(ours, 0.5) * 1000, p99_ms=percentile(ours, 0.99) * 1000,
                   baseline_p99_ms=percentile(bare, 0.99) * 1000, events=one_n)
        finally:
            await conn.close()
    await large_store(events_n, large_n, rng)


async def large_store(events_n: int, large_n: int, rng: random.Random) -> None:
    """Append rate on a store of large_n events against the rate on an empty one.

    In a database of its own, so that nothing else measured (the COPY baseline's table) competes
    for the buffer cache.
    """
    async with fresh_database() as settings:
        for account in ("bench_small", "bench_large", "bench_filler"):
            await commands.add_account(settings, account, None)
        conn = await connect(settings.database_url)
        try:
            await conn.execute("SET plan_cache_mode = force_custom_plan")
            small = make_fills("bench_small", events_n, rng, prefix="E")
            large = make_fills("bench_large", events_n, rng, prefix="L")
            await conn.execute("CHECKPOINT")
            empty_rate = await append_batches(conn, "bench_small", small)
            await prefill(conn, "bench_filler", large_n)
            await conn.execute("CHECKPOINT")
            large_rate = await append_batches(conn, "bench_large", large)
        finally:
            await conn.close()
    report("append_large_store", large_rate, "events/s", "append on an empty store",
           empty_rate, store_events=large_n, events=events_n, batch_size=BATCH_SIZE, seed=SEED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    asyncio.run(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
