"""Benchmark the dispatcher's decision transaction: decisions/s and latency per signal.

Each decision is one transaction as the account's role: lock the head, read the projection,
fold the tail, evaluate the gates, append SignalEvaluated (and IntentIssued). Baseline in the same
run: a bare single-row INSERT + commit round trip. Expectation on the 2-core machine: about six
statements per decision, each a local round trip of 0.1-0.3 ms, so p50 near 1-2 ms and p99
under 10 ms with one replica; replicas of one account serialise on the head lock (no gain from
more of them), while separate accounts run in parallel up to the two cores. Each replica is a
process of its own, as each account's dispatcher is in production; they start together at a
barrier, after connecting, so the rate is decisions over the span from first start to last end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import multiprocessing
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench.common import fresh_database, percentile, report
from console import commands
from dispatcher.decide import DispatcherConfig, StateCache, decide
from ledger import store
from ledger.db import connect
from ledger.events import Signal, decode_signal
from ledger.logins import account_dsn
from ledger.runtime import tune_gc
from ledger.settings import Settings
from projections import rebuild
from tests.factories import limits

SEED = 20260206


def signals(account: str, count: int) -> list[Signal]:
    return [decode_signal(json.dumps({
        "signal_id": f"S-{uuid.uuid4().hex}", "account": account,
        "occurred_at": "2026-02-03T17:29:04Z", "symbol": "MSFT 260220P00400000",
        "instrument": "option", "side": "long", "quantity": "1", "limit_price": "0.01",
        "multiplier": "1"})) for _ in range(count)]


async def _replica(settings: Settings, account: str, batch: list[Signal],
                   ready: Callable[[], None]) -> tuple[float, float, list[float]]:
    conn = await connect(account_dsn(settings, account))
    config = DispatcherConfig(account=account)
    cache = StateCache()
    latencies = []
    try:
        ready()
        # CLOCK_MONOTONIC is one clock for every process of the machine.
        began = time.monotonic()
        for signal in batch:
            started = time.perf_counter()
            await decide(conn, config, signal, datetime.now(UTC), cache)
            latencies.append(time.perf_counter() - started)
        ended = time.monotonic()
    finally:
        await conn.close()
    return began, ended, latencies


def _replica_process(settings: Settings, account: str, count: int,
                     barrier: Any) -> tuple[float, float, list[float]]:
    tune_gc()
    return asyncio.run(_replica(settings, account, signals(account, count), barrier.wait))


async def _bare_inserts(settings: Settings, count: int) -> list[float]:
    conn = await connect(settings.database_url)
    await conn.execute("CREATE TABLE IF NOT EXISTS bare_insert (id bigserial PRIMARY KEY, "
                       "body jsonb NOT NULL)")
    latencies = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            async with conn.transaction():
                await conn.execute("INSERT INTO bare_insert (body) VALUES ($1)", '{"x": 1}')
            latencies.append(time.perf_counter() - started)
    finally:
        await conn.close()
    return latencies


async def _scenario(settings: Settings, accounts: list[str], replicas: int,
                    per_replica: int) -> tuple[float, list[float]]:
    jobs = [account for account in accounts for _ in range(replicas)]
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, concurrent.futures.ProcessPoolExecutor(
            max_workers=len(jobs), mp_context=context) as pool:
        barrier = manager.Barrier(len(jobs))
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(
            loop.run_in_executor(pool, _replica_process, settings, account, per_replica, barrier)
            for account in jobs))
    elapsed = max(ended for _, ended, _ in results) - min(began for began, _, _ in results)
    return elapsed, [latency for _, _, result in results for latency in result]


async def run(quick: bool) -> None:
    per_replica = 200 if quick else 1000
    print(f"# decide: seed={SEED} signals_per_replica={per_replica}", flush=True)
    async with fresh_database() as settings:
        conn = await connect(settings.database_url)
        try:
            for account in ("decide_a", "decide_b", "decide_c", "decide_d"):
                await commands.add_account(settings, account, None)
                # Generous limits: every decision allows, so each appends two events.
                await store.append(conn, account, [limits(account, 10**6, "1000000000")])
                await rebuild.rebuild_account(conn, account)
        finally:
            await conn.close()
        bare = await _bare_inserts(settings, per_replica)
        bare_rate = len(bare) / sum(bare)
        for label, accounts, replicas in (("1 replica", ["decide_a"], 1),
                                          ("2 replicas", ["decide_a"], 2),
                                          ("4 replicas", ["decide_a"], 4),
                                          ("2 accounts", ["decide_b", "decide_c"], 1),
                                          ("4 accounts", ["decide_a", "decide_b", "decide_c",
                                                          "decide_d"], 1)):
            elapsed, latencies = await _scenario(settings, accounts, replicas, per_replica)
            report("decide", len(latencies) / elapsed, "decisions/s",
                   "bare single-row INSERT + commit", bare_rate, scenario=label,
                   p50_ms=round(percentile(latencies, 0.5) * 1000, 3),
                   p99_ms=round(percentile(latencies, 0.99) * 1000, 3),
                   max_ms=round(max(latencies) * 1000, 3),
                   baseline_p99_ms=round(percentile(bare, 0.99) * 1000, 3),
                   decisions=len(latencies), seed=SEED)
