"""The Kafka pipeline against the real broker and database: ingest, relay, dead letters, crashes.

Method: each test gets its own topics (a unique prefix) and runs `ledger run ingest` and
`ledger run relay` as OS processes, produces executions straight to the topic (duplicates and
malformed messages included), then compares the store and `ledger-events` (deduplicated by
account + sequence) with what was sent. Crashes are SIGKILL mid-batch, followed by a restart.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner

from console import commands
from ledger import kafka, store
from ledger.db import connect
from ledger.kafka_admin import ensure_topics
from ledger.logins import job_dsn
from ledger.roles import Job
from ledger.settings import Settings
from ledger.topics import Topics
from services import relay
from tests.conftest import eventually, with_topics
from tests.factories import fill
from tests.processes import LedgerProcess
from tests.stack import kafka_kill, kafka_start

pytestmark = [pytest.mark.pg, pytest.mark.kafka, pytest.mark.slow]

SETTLE_TIMEOUT_S = 90.0


def execution(account: str, fill_id: str, quantity: str = "1") -> bytes:
    return json.dumps({
        "account": account, "type": "OrderFilled", "occurred_at": "2026-02-03T17:29:04Z",
        "data": {"fill_id": fill_id, "position_id": f"P-{fill_id}", "symbol": "MSFT",
                 "instrument": "equity", "side": "long", "quantity": quantity,
                 "price": "410.25"},
    }).encode()


async def produce(settings: Settings, topic: str,
                  messages: Sequence[tuple[bytes | None, bytes]]) -> None:
    producer = kafka.producer(settings, client_id="test-producer")
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(settings: Settings, topic: str, count_min: int,
                     timeout_s: float = SETTLE_TIMEOUT_S) -> list[Any]:
    """Read a topic from the beginning until at least count_min messages arrived."""
    consumer: AIOKafkaConsumer = kafka.consumer(settings, topic, group_id=None,
                                                client_id="test-reader")
    await consumer.start()
    messages: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(messages) < count_min and asyncio.get_running_loop().time() < deadline:
            polled = await consumer.getmany(timeout_ms=500)
            messages.extend(m for batch in polled.values() for m in batch)
        # A little longer, to catch anything past what was expected (duplicates, extras).
        polled = await consumer.getmany(timeout_ms=1000)
        messages.extend(m for batch in polled.values() for m in batch)
    finally:
        await consumer.stop()
    return messages


async def read_to_end(settings: Settings, topic: str,
                      timeout_s: float = SETTLE_TIMEOUT_S) -> list[Any]:
    """Read a topic from its beginning up to its end as it is now: every message so far."""
    consumer: AIOKafkaConsumer = kafka.consumer(settings, topic, group_id=None,
                                                client_id="test-reader")
    await consumer.start()
    messages: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not consumer.assignment() and loop.time() < deadline:
            await consumer.getmany(timeout_ms=100)
        ends = await consumer.end_offsets(list(consumer.assignment()))
        for partition in consumer.assignment():
            consumer.seek(partition, 0)
        while loop.time() < deadline:
            behind = [await consumer.position(p) < end for p, end in ends.items()]
            if not any(behind):
                break
            polled = await consumer.getmany(timeout_ms=200)
            messages.extend(m for batch in polled.values() for m in batch)
    finally:
        await consumer.stop()
    return messages


async def stored(admin: asyncpg.Connection, account: str) -> list[tuple[int, str]]:
    rows = await admin.fetch(
        "SELECT sequence, data->>'fill_id' FROM events WHERE account = $1 ORDER BY sequence",
        account)
    return [(int(row[0]), str(row[1])) for row in rows]


def by_account_sequence(messages: list[Any]) -> dict[str, dict[int, str]]:
    """Deduplicate ledger-events by (account, sequence), checking repeats are identical."""
    seen: dict[str, dict[int, str]] = {}
    for message in messages:
        event = json.loads(message.value)
        account_events = seen.setdefault(event["account"], {})
        previous = account_events.setdefault(event["sequence"], event["event_id"])
        assert previous == event["event_id"], "one sequence carried two different events"
    return seen


def in_order_per_account(messages: list[Any]) -> bool:
    """Per account, the first delivery of each sequence comes in ascending order."""
    last: dict[str, int] = {}
    for message in messages:
        event = json.loads(message.value)
        if event["sequence"] > last.get(event["account"], 0):
            if event["sequence"] != last.get(event["account"], 0) + 1:
                return False
            last[event["account"]] = event["sequence"]
    return True


@pytest.fixture
async def pipeline(settings: Settings, topic_prefix: str,
                   account_name: Callable[[str], str]) -> tuple[Settings, Topics, list[str]]:
    test_settings = with_topics(settings, topic_prefix)
    topics = await ensure_topics(test_settings)
    accounts = [account_name("alpha"), account_name("beta")]
    for account in accounts:
        await commands.add_account(test_settings, account, None)
    return test_settings, topics, accounts


async def test_pipeline_when_fills_duplicates_and_bad_messages_arrive_stores_each_once(
    pipeline: tuple[Settings, Topics, list[str]], admin: asyncpg.Connection, tmp_path: Path,
) -> None:
    settings, topics, (alpha, beta) = pipeline
    messages: list[tuple[bytes | None, bytes]] = []
    for index in range(20):
        messages.append((alpha.encode(), execution(alpha, f"A{index}")))
        messages.append((beta.encode(), execution(beta, f"B{index}")))
        if index == 10:
            messages.append((alpha.encode(), b'{"account": "' + alpha.encode() + b'", oops'))
            messages.append((alpha.encode(), execution(alpha, "A-bad", quantity="twelve")))
            messages.append((b"ghost", execution("ghost", "G1")))
            messages.append((beta.encode(), execution(alpha, "A-wrong-key")))
    messages.extend(messages[:10])  # redelivered: must change nothing
    processes = [LedgerProcess(settings, tmp_path, name).start() for name in ("ingest", "relay")]
    try:
        await produce(settings, topics.executions, messages)

        async def settled() -> bool:
            return (len(await stored(admin, alpha)) == 20 and len(await stored(admin, beta)) == 20
                    and await admin.fetchval(
                        "SELECT count(*) FROM relay_positions WHERE account = ANY($1) "
                        "AND published_sequence = 20", [alpha, beta]) == 2)

        await eventually(settled, SETTLE_TIMEOUT_S)
        published = await read_topic(settings, topics.ledger_events, 40)
        dead = await read_topic(settings, topics.dead_letters, 4)
    finally:
        for process in processes:
            process.stop()

    assert await stored(admin, alpha) == [(i + 1, f"A{i}") for i in range(20)]
    assert await stored(admin, beta) == [(i + 1, f"B{i}") for i in range(20)]
    sequences = by_account_sequence(published)
    assert sorted(sequences[alpha]) == list(range(1, 21))
    assert sorted(sequences[beta]) == list(range(1, 21))
    assert in_order_per_account(published)
    reasons = sorted(kafka.header(m.headers, "dlq.reason") or "" for m in dead)
    assert len(dead) == 4, reasons
    assert any(r.startswith("json:") for r in reasons), reasons
    assert any("data.quantity: 'twelve'" in r for r in reasons), reasons
    assert any("account 'ghost' does not exist" in r for r in reasons), reasons
    assert any(r.startswith(f"key: '{beta}' does not match account") for r in reasons), reasons
    original = next(m for m in dead if (kafka.header(m.headers, "dlq.reason") or "")
                    .startswith("json:"))
    assert original.value == b'{"account": "' + alpha.encode() + b'", oops'
    assert kafka.header(original.headers, "dlq.topic") == topics.executions


async def test_ingest_and_relay_when_killed_mid_batch_restart_without_loss_or_duplicates(
    pipeline: tuple[Settings, Topics, list[str]], admin: asyncpg.Connection, tmp_path: Path,
) -> None:
    settings, topics, (alpha, beta) = pipeline
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    total = 1500
    messages = [((account := rng.choice([alpha, beta])).encode(), execution(account, f"K{i}"))
                for i in range(total)]
    await produce(settings, topics.executions, messages)
    ingest = LedgerProcess(settings, tmp_path, "ingest").start()
    relay = LedgerProcess(settings, tmp_path, "relay").start()

    async def count() -> int:
        return int(await admin.fetchval(
            "SELECT count(*) FROM events WHERE account = ANY($1)", [alpha, beta]))

    async def published() -> int:
        return int(await admin.fetchval(
            "SELECT coalesce(sum(published_sequence), 0) FROM relay_positions "
            "WHERE account = ANY($1)", [alpha, beta]))

    try:
        for _ in range(3):
            target = min(await count() + rng.randint(1, 200), total)
            await eventually(lambda target=target: _at_least(count, target),  # type: ignore[misc]
                             SETTLE_TIMEOUT_S)
            ingest.kill()
            relay.kill()
            ingest.start()
            relay.start()
        await eventually(lambda: _equals(count, total), SETTLE_TIMEOUT_S)
        await eventually(lambda: _equals(published, total), SETTLE_TIMEOUT_S)
        # Everything up to the end: a relay killed mid-send republishes, and duplicates would
        # otherwise fill a read that stops at `total` messages.
        events = await read_to_end(settings, topics.ledger_events)
    finally:
        ingest.stop()
        relay.stop()

    fills = [fill for account in (alpha, beta) for _, fill in await stored(admin, account)]
    assert sorted(fills) == sorted(f"K{i}" for i in range(total))
    for account in (alpha, beta):
        sequences = [sequence for sequence, _ in await stored(admin, account)]
        assert sequences == list(range(1, len(sequences) + 1))
    per_account = by_account_sequence(events)
    assert sum(len(s) for s in per_account.values()) == total
    assert in_order_per_account(events)


async def _at_least(count: Callable[[], Any], target: int) -> bool:
    return bool(await count() >= target)


async def _equals(count: Callable[[], Any], target: int) -> bool:
    return bool(await count() == target)


async def test_pipeline_when_broker_restarts_reconnects_and_loses_nothing(
    pipeline: tuple[Settings, Topics, list[str]], admin: asyncpg.Connection, tmp_path: Path,
) -> None:
    settings, topics, (alpha, _) = pipeline
    processes = [LedgerProcess(settings, tmp_path, name).start() for name in ("ingest", "relay")]
    try:
        await produce(settings, topics.executions,
                      [(alpha.encode(), execution(alpha, f"R{i}")) for i in range(50)])
        await eventually(lambda: _equals(lambda: _head(admin, alpha), 50), SETTLE_TIMEOUT_S)
        kafka_kill()
        kafka_start()
        await produce(settings, topics.executions,
                      [(alpha.encode(), execution(alpha, f"R{i}")) for i in range(50, 100)])
        await eventually(lambda: _equals(lambda: _head(admin, alpha), 100), SETTLE_TIMEOUT_S)

        async def all_published() -> bool:
            value = await admin.fetchval(
                "SELECT published_sequence FROM relay_positions WHERE account = $1", alpha)
            return bool(value == 100)

        await eventually(all_published, SETTLE_TIMEOUT_S)
        events = await read_topic(settings, topics.ledger_events, 100)
    finally:
        for process in processes:
            process.stop()

    assert [fill for _, fill in await stored(admin, alpha)] == [f"R{i}" for i in range(100)]
    assert sorted(by_account_sequence(events)[alpha]) == list(range(1, 101))


async def _head(admin: asyncpg.Connection, account: str) -> int:
    return int(await admin.fetchval("SELECT head FROM streams WHERE account = $1", account))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_ingest_metrics_count_appended_events_and_dead_letters(
    pipeline: tuple[Settings, Topics, list[str]], admin: asyncpg.Connection, tmp_path: Path,
) -> None:
    settings, topics, (alpha, _) = pipeline
    port = _free_port()
    ingest = LedgerProcess(settings.model_copy(update={"metrics_port": port}), tmp_path,
                           "ingest")
    ingest.start()
    try:
        await produce(settings, topics.executions, [
            (alpha.encode(), execution(alpha, "M1")), (alpha.encode(), execution(alpha, "M2")),
            (alpha.encode(), b"{broken")])
        await eventually(lambda: _equals(lambda: _head(admin, alpha), 2), SETTLE_TIMEOUT_S)

        async def scraped() -> bool:
            text = await asyncio.to_thread(_scrape, port)
            return ('ledger_events_appended_total{process="ingest"} 2.0' in text
                    and 'ledger_dead_letters_total{consumer="ledger-ingest"} 1.0' in text)

        await eventually(scraped, SETTLE_TIMEOUT_S)
    finally:
        ingest.stop()


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


async def test_relay_round_when_accounts_are_behind_by_different_amounts_sends_each_in_order(
    pipeline: tuple[Settings, Topics, list[str]], admin: asyncpg.Connection,
    account_name: Callable[[str], str],
) -> None:
    """One round serves every account behind; an account beyond a page takes more rounds, and
    the others are not held up or repeated meanwhile."""
    settings, topics, (alpha, beta) = pipeline
    gamma = account_name("gamma")
    await commands.add_account(settings, gamma, None)
    backlog = {alpha: relay.PUBLISH_BATCH_SIZE * 2 + 17, beta: 3, gamma: 1}
    for account, count in backlog.items():
        await store.append(admin, account, [fill(account, f"X-{index}", position_id=f"P-{index}")
                                            for index in range(count)])
    conn = await connect(job_dsn(settings, Job.relay))
    producer = kafka.producer(settings, client_id="test-relay")
    await producer.start()
    try:
        counters = relay.RelayCounters()
        sent = await relay.publish_pending(conn, producer, topics, counters)
        again = await relay.publish_pending(conn, producer, topics, counters)
    finally:
        await producer.stop()
        await conn.close()

    # The session's database may hold other tests' accounts not yet published: sent with ours.
    assert sent >= sum(backlog.values())
    assert again == 0
    messages = [m for m in await read_to_end(settings, topics.ledger_events)
                if json.loads(m.value)["account"] in backlog]
    assert len(messages) == sum(backlog.values())
    assert in_order_per_account(messages)
    # Placed where any producer keyed by the account would place it (the relay hashes the key
    # once per page, not per message).
    partitions = list(range(settings.topic_partitions))
    assert {(m.key, m.partition) for m in messages} == {
        (account.encode(), DefaultPartitioner()(account.encode(), partitions, partitions))
        for account in backlog}
    assert {account: sorted(events) for account, events in by_account_sequence(messages).items()
            } == {account: list(range(1, count + 1)) for account, count in backlog.items()}
    marks = {row["account"]: row["published_sequence"] for row in await admin.fetch(
        "SELECT account, published_sequence FROM relay_positions")}
    assert {account: marks[account] for account in backlog} == backlog
