"""End to end through Kafka: a signal produced -> its intent on `order-intents`.

The whole system runs as `ledger run all` (dispatchers, relay, projector, ingest); this process
produces signals for 4 accounts with limits high enough that every one is allowed, and times
each until its IntentIssued arrives on `order-intents`. Scenarios: a steady 200 signals/s, then
a burst of 1,000 at once. Baseline in the same run: a bare aiokafka round trip (produce, consume
back) of the same payloads. Expectation on the 2-core machine: a decision takes 1-3 ms and the
relay wakes on NOTIFY, so the p50 should be a few ms above the bare round trip; the burst queues
behind one dispatcher per account (p99 of a few seconds for 250 signals each).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer

from bench.bench_pipeline import ensure_extra_topic
from bench.common import OUT_DIR, fresh_database, percentile, report
from console import commands
from ledger import kafka, store
from ledger.db import connect
from ledger.kafka_admin import ensure_topics
from ledger.settings import Settings
from tests.factories import limits

ACCOUNTS = ("e2e_a", "e2e_b", "e2e_c", "e2e_d")
STEADY_RATE_PER_S = 200
BURST_SIZE = 1000
SETTLE_TIMEOUT_S = 120.0


def signal_body(account: str, signal_id: str) -> bytes:
    return json.dumps({
        "signal_id": signal_id, "account": account,
        "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "symbol": "MSFT 260220P00400000", "instrument": "option", "side": "long",
        "quantity": "1", "limit_price": "0.01", "multiplier": "1"}).encode()


@dataclass
class Trace:
    """When one signal passed each stage, in wall-clock seconds (one machine, one clock)."""

    produced: float
    # The record's timestamp on the way out: for order-intents the database time of the relay's
    # liveness check, i.e. when the relay picked the committed intent up.
    published: float | None = None
    received: float | None = None


async def _collect(consumer: AIOKafkaConsumer, sent: dict[str, Trace], latencies: list[float],
                   expected: int, id_of: str) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    # `sent` grows while this runs (the producer adds each signal just before sending it), so
    # it is read live, never copied; `seen` keeps a redelivered record from counting twice.
    seen: set[str] = set()
    while len(latencies) < expected and time.monotonic() < deadline:
        polled = await consumer.getmany(timeout_ms=200)
        now = time.time()
        for message in (m for batch in polled.values() for m in batch):
            document = json.loads(message.value)
            key = document["data"][id_of] if id_of else document["signal_id"]
            trace = sent.get(key)
            if trace is not None and key not in seen:
                seen.add(key)
                trace.published, trace.received = message.timestamp / 1000, now
                latencies.append(now - trace.produced)


async def scenario(settings: Settings, topic_out: str, id_of: str, steady: bool,
                   count: int, to_topic: str) -> tuple[list[float], dict[str, Trace]]:
    consumer = await kafka.reader_at_end(settings, topic_out, client_id="bench-e2e-reader")
    producer = kafka.producer(settings, client_id="bench-e2e-writer")
    await producer.start()
    signal_ids = [f"E-{uuid.uuid4().hex}" for _ in range(count)]
    sent: dict[str, Trace] = {}
    latencies: list[float] = []
    collector: asyncio.Task[None] | None = None
    try:
        for index, signal_id in enumerate(signal_ids):
            account = ACCOUNTS[index % len(ACCOUNTS)]
            sent[signal_id] = Trace(produced=time.time())
            if collector is None:
                collector = asyncio.create_task(_collect(consumer, sent, latencies, count, id_of))
            await producer.send(to_topic, signal_body(account, signal_id), key=account.encode())
            if steady:
                await asyncio.sleep(1 / STEADY_RATE_PER_S)
        await producer.flush()
        assert collector is not None
        await collector
    finally:
        if collector is not None:
            collector.cancel()
        await producer.stop()
        await consumer.stop()
    assert len(latencies) == count, (len(latencies), count)
    return latencies, sent


async def stage_medians(settings: Settings, traces: dict[str, Trace]) -> dict[str, float]:
    """Return the median of each hop, in ms: signal produced -> decision begun (the decision's
    `recorded_at`, its transaction's start) -> picked up by the relay (the order-intents
    record's timestamp) -> received by the router."""
    conn = await connect(settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT data->>'signal_id' AS signal_id, extract(epoch FROM recorded_at) AS at "
            "FROM events WHERE type = 'SignalEvaluated' AND data->>'signal_id' = ANY($1)",
            list(traces))
    finally:
        await conn.close()
    decided = {row["signal_id"]: float(row["at"]) for row in rows}
    hops: dict[str, list[float]] = {"to_decision": [], "decision_to_relay": [],
                                    "relay_to_router": []}
    for signal_id, trace in traces.items():
        at = decided.get(signal_id)
        if at is None or trace.published is None or trace.received is None:
            continue
        hops["to_decision"].append(at - trace.produced)
        hops["decision_to_relay"].append(trace.published - at)
        hops["relay_to_router"].append(trace.received - trace.published)
    return {name: round(percentile(values, 0.5) * 1000, 2) for name, values in hops.items()
            if values}


def _report(name: str, ours: list[float], bare: list[float], **params: object) -> None:
    report(name, percentile(ours, 0.5) * 1000, "ms p50", "bare aiokafka round trip p50",
           percentile(bare, 0.5) * 1000, p99_ms=percentile(ours, 0.99) * 1000,
           max_ms=max(ours) * 1000, baseline_p99_ms=percentile(bare, 0.99) * 1000,
           signals=len(ours), accounts=len(ACCOUNTS), **params)


async def run(quick: bool) -> None:
    steady_count = STEADY_RATE_PER_S * (5 if quick else 20)
    print(f"# e2e: accounts={len(ACCOUNTS)} steady={steady_count} at {STEADY_RATE_PER_S}/s "
          f"burst={BURST_SIZE}", flush=True)
    async with fresh_database() as base:
        settings = base.model_copy(update={"topic_prefix": f"e2e{uuid.uuid4().hex[:8]}."})
        topics = await ensure_topics(settings)
        conn = await connect(settings.database_url)
        try:
            for account in ACCOUNTS:
                await commands.add_account(settings, account, None)
                await store.append(conn, account, [limits(account, 10**6, "1000000000")])
        finally:
            await conn.close()
        echo = settings.topic("bench-echo")
        await ensure_extra_topic(settings, echo)
        system = _start_system(settings)
        try:
            await asyncio.sleep(5)  # the dispatchers join their groups
            bare, _ = await scenario(settings, echo, "", True, steady_count, echo)
            steady, traces = await scenario(settings, topics.order_intents, "signal_id", True,
                                            steady_count, topics.signals)
            _report("e2e_steady", steady, bare, rate_per_s=STEADY_RATE_PER_S,
                    stage_p50_ms=await stage_medians(settings, traces))
            burst, traces = await scenario(settings, topics.order_intents, "signal_id", False,
                                           BURST_SIZE, topics.signals)
            _report("e2e_burst", burst, bare, burst=BURST_SIZE,
                    stage_p50_ms=await stage_medians(settings, traces))
        finally:
            system.send_signal(signal.SIGTERM)
            system.wait(60)


def _start_system(settings: Settings) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(LEDGER_DATABASE_URL=settings.database_url,
               LEDGER_TOPIC_PREFIX=settings.topic_prefix,
               LEDGER_SECRETS_DIR=str(settings.secrets_dir),
               LEDGER_KAFKA_BOOTSTRAP=settings.kafka_bootstrap)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    log = (OUT_DIR / "e2e-run-all.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "console", "run", "all"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
