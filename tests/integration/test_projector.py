"""The projector against real Kafka and PostgreSQL: exactly once in effect, crash-safe.

Method: events are appended to the store, then messages are produced straight to this test's
`ledger-events` (duplicated, reordered, missing, forged, beyond the head, malformed) and
`ledger run projector` runs as an OS process. The projection must equal a rebuild from the store,
row for row (`rebuild --verify` exits 0). The crash test SIGKILLs the projector at seeded random
moments mid-batch, restarts it, and checks the same; it prints its seed.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from console import commands
from ledger import kafka, store
from ledger.events import Event, encode_event
from ledger.kafka_admin import ensure_topics
from ledger.settings import Settings
from ledger.topics import Topics
from projections import rebuild, tables
from tests.conftest import eventually, run_cli, with_topics
from tests.factories import close, fill, limits
from tests.integration.test_pipeline import read_topic
from tests.processes import LedgerProcess

pytestmark = [pytest.mark.pg, pytest.mark.kafka, pytest.mark.slow]

SETTLE_TIMEOUT_S = 90.0
CRASH_POINTS = 20


def history(account: str, rng: random.Random, count: int) -> list[Event]:
    """A trading day: limits, then fills and closes over a handful of positions."""
    events: list[Event] = [limits(account, 5, "10000")]
    open_ids: list[str] = []
    for index in range(count):
        if open_ids and rng.random() < 0.3:
            position = open_ids.pop(rng.randrange(len(open_ids)))
            events.append(close(account, position, price=f"{rng.randint(100, 900) / 100:.2f}",
                                occurred_at=f"2026-02-03T{9 + index // 3600:02d}:"
                                            f"{index // 60 % 60:02d}:{index % 60:02d}Z"))
        else:
            position = f"P-{rng.randint(0, 30)}"
            if position not in open_ids:
                open_ids.append(position)
            events.append(fill(account, f"F{index}", position_id=position,
                               quantity=str(rng.randint(1, 9)),
                               price=f"{rng.randint(100, 900) / 100:.2f}"))
    return events


async def produce_raw(settings: Settings, topic: str, key: str, values: list[bytes]) -> None:
    producer = kafka.producer(settings, client_id="test-hostile")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


async def projected(admin: asyncpg.Connection, account: str) -> int:
    return await tables.applied_sequence(admin, account, lock=False)


@pytest.fixture
async def setup(settings: Settings, topic_prefix: str,
                account_name: Callable[[str], str]) -> tuple[Settings, Topics, str]:
    test_settings = with_topics(settings, topic_prefix)
    topics = await ensure_topics(test_settings)
    account = account_name("proj")
    await commands.add_account(test_settings, account, None)
    return test_settings, topics, account


async def test_projector_when_messages_repeat_reorder_vanish_and_lie_projects_the_store_exactly(
    setup: tuple[Settings, Topics, str], admin: asyncpg.Connection, tmp_path: Path,
) -> None:
    settings, topics, account = setup
    rng = random.Random(7)
    await store.append(admin, account, history(account, rng, 60))
    stored = await store.read_stream(admin, account)
    wire = [encode_event(e) for e in stored]
    messages = wire[:10] + wire[5:15] + wire[30:40] + wire[20:30]   # repeats, reorder, holes
    forged = json.loads(wire[40])
    forged["event_id"] = str(uuid.uuid4())
    forged["data"]["quantity"] = "999"
    future = json.loads(wire[-1])
    future["sequence"] = len(stored) + 5
    messages += [json.dumps(forged).encode(), b"{not json", json.dumps(future).encode(),
                 wire[-1]]
    await produce_raw(settings, topics.ledger_events, account, messages)
    projector = LedgerProcess(settings, tmp_path, "projector").start()
    try:
        await eventually(lambda: _equals(projected(admin, account), len(stored)),
                         SETTLE_TIMEOUT_S)
        dead = await read_topic(settings, topics.dead_letters, 3)
    finally:
        projector.stop()

    assert await rebuild.verify_account(admin, account) == []
    live = await tables.load_state(admin, account)
    assert live == await rebuild.fold_stream(admin, account)
    reasons = sorted(kafka.header(m.headers, "dlq.reason") or "" for m in dead)
    assert len(reasons) == 3, reasons
    assert reasons[0].startswith("event_id: ")
    assert reasons[1].startswith("json: ")
    assert reasons[2].startswith(f"sequence: {len(stored) + 5} is beyond the head")
    assert all(kafka.header(m.headers, "dlq.consumer") == "ledger-projector" for m in dead)


async def test_projector_when_a_forged_message_fills_an_otherwise_complete_run_uses_the_store(
    setup: tuple[Settings, Topics, str], admin: asyncpg.Connection, tmp_path: Path,
) -> None:
    settings, topics, account = setup
    await store.append(admin, account, history(account, random.Random(11), 20))
    stored = await store.read_stream(admin, account)
    wire = [encode_event(e) for e in stored]
    forged = json.loads(wire[5])
    forged["event_id"] = str(uuid.uuid4())
    forged["type"], forged["data"] = "TradingHalted", {"reason": "forged"}
    # Every sequence is on the topic exactly once; one of them carries a lie.
    await produce_raw(settings, topics.ledger_events, account,
                      [*wire[:5], json.dumps(forged).encode(), *wire[6:]])
    projector = LedgerProcess(settings, tmp_path, "projector").start()
    try:
        await eventually(lambda: _equals(projected(admin, account), len(stored)),
                         SETTLE_TIMEOUT_S)
        dead = await read_topic(settings, topics.dead_letters, 1)
    finally:
        projector.stop()

    live = await tables.load_state(admin, account)
    assert live.halted is False
    assert live == await rebuild.fold_stream(admin, account)
    reasons = [kafka.header(m.headers, "dlq.reason") or "" for m in dead]
    assert len(reasons) == 1
    assert reasons[0].startswith("event_id: ")


async def _equals(value: asyncio.Future[int] | object, target: int) -> bool:
    return bool(await value == target)  # type: ignore[misc]


@pytest.mark.timeout(600)
async def test_projector_when_killed_at_random_points_mid_batch_equals_a_rebuild(
    setup: tuple[Settings, Topics, str], admin: asyncpg.Connection, tmp_path: Path,
    account_name: Callable[[str], str],
) -> None:
    settings, _, first = setup
    seed = random.randrange(1 << 30)
    print(f"seed={seed} crash_points={CRASH_POINTS}")
    rng = random.Random(seed)
    relay = LedgerProcess(settings, tmp_path, "relay").start()
    projector = LedgerProcess(settings, tmp_path, "projector").start()
    accounts: list[tuple[str, int]] = []
    mid_batch = 0
    try:
        # Each round gives the projector fresh work, then kills it at a random instant of it.
        for round_number in range(CRASH_POINTS):
            account = first if round_number == 0 else account_name(f"crash{round_number}")
            if round_number:
                await commands.add_account(settings, account, None)
            events = history(account, rng, rng.randint(2000, 6000))
            head = (await store.append(admin, account, events)).head
            accounts.append((account, head))
            await eventually(lambda account=account: _started(admin, account),  # type: ignore[misc]
                             SETTLE_TIMEOUT_S)
            await asyncio.sleep(rng.uniform(0.0, 0.1))
            projector.kill()
            mid_batch += await projected(admin, account) < head
            for done, _ in accounts:
                assert await rebuild.verify_account(admin, done) == [], f"seed={seed} {done}"
            projector.start()
        for account, count in accounts:
            await eventually(lambda a=account, c=count: _equals(projected(admin, a), c),  # type: ignore[misc]
                             SETTLE_TIMEOUT_S)
    finally:
        projector.stop()
        relay.stop()

    print(f"seed={seed} kills={CRASH_POINTS} mid_batch={mid_batch}")
    assert mid_batch >= CRASH_POINTS // 4, f"seed={seed}: only {mid_batch} kills landed mid-stream"
    for account, _ in accounts:
        assert await rebuild.verify_account(admin, account) == [], f"seed={seed} {account}"
        verify = run_cli(settings, "rebuild", "--verify", "--account", account)
        assert verify.returncode == 0, verify.stdout + verify.stderr


async def _started(admin: asyncpg.Connection, account: str) -> bool:
    return await projected(admin, account) > 0


async def test_rebuild_verify_when_a_row_was_tampered_exits_3_and_rebuild_repairs_it(
    setup: tuple[Settings, Topics, str], admin: asyncpg.Connection,
) -> None:
    settings, _, account = setup
    await store.append(admin, account, history(account, random.Random(3), 30))
    assert run_cli(settings, "rebuild", "--account", account).returncode == 0
    await admin.execute("UPDATE projection_positions SET quantity = quantity + 1 "
                        "WHERE account = $1 AND position_id = (SELECT min(position_id) FROM "
                        "projection_positions WHERE account = $1)", account)

    verify = run_cli(settings, "rebuild", "--verify", "--account", account)
    repair = run_cli(settings, "rebuild", "--account", account)
    again = run_cli(settings, "rebuild", "--verify", "--account", account)

    assert verify.returncode == 3
    assert f"{account} projection_positions P-" in verify.stdout.decode()
    assert repair.returncode == 0
    assert again.returncode == 0, again.stdout


async def test_positions_json_when_as_of_replays_the_store_up_to_that_moment(
    setup: tuple[Settings, Topics, str], admin: asyncpg.Connection,
) -> None:
    settings, _, account = setup
    await store.append(admin, account, [
        limits(account, 5, "10000", occurred_at="2026-02-03T17:00:00Z"),
        fill(account, "X-1", position_id="P-1", quantity="12", price="6.00",
             occurred_at="2026-02-03T17:29:04Z"),
        fill(account, "X-2", position_id="P-2", quantity="3", price="5.47",
             occurred_at="2026-02-03T17:35:00Z"),
        close(account, "P-1", price="7.00", occurred_at="2026-02-03T17:50:00Z"),
    ])
    assert run_cli(settings, "rebuild", "--account", account).returncode == 0

    live = json.loads(run_cli(settings, "positions", account, "--json").stdout)
    past = json.loads(run_cli(settings, "positions", account, "--json",
                              "--as-of", "2026-02-03T17:40:00Z").stdout)

    assert live["as_of_sequence"] == 4
    assert [p["position_id"] for p in live["open_positions"]] == ["P-2"]
    assert live["open_exposure"] == "1641.00"
    assert past == {
        "account": account, "as_of_sequence": 3, "projected_sequence": None, "halted": False,
        "trading_state": "active", "reconciled_as_of": None,
        "limits": {"max_open_positions": 5, "max_exposure": "10000",
                   "max_order_notional": None, "daily_loss_limit": None,
                   "max_orders_per_minute": None, "max_underlying_exposure": None,
                   "duplicate_window_s": None, "max_reconcile_age_s": None},
        "open_positions": [
            {"position_id": "P-1", "symbol": "MSFT 260220P00400000", "side": "long",
             "quantity": "12", "average_price": "6.00", "multiplier": "100",
             "notional": "7200.00"},
            {"position_id": "P-2", "symbol": "MSFT 260220P00400000", "side": "long",
             "quantity": "3", "average_price": "5.47", "multiplier": "100",
             "notional": "1641.00"}],
        "pending_intents": [], "open_exposure": "8841.00", "pending_exposure": "0.00",
        "exposure": "8841.00"}


def test_positions_when_account_is_unknown_exits_1(settings: Settings) -> None:
    result = run_cli(settings, "positions", "nobody_at_all", "--json")

    assert result.returncode == 1
    assert "account 'nobody_at_all' does not exist" in result.stderr.decode()





async def test_rebuild_with_two_jobs_when_one_account_was_tampered_finds_and_repairs_it(
    setup: tuple[Settings, Topics, str], admin: asyncpg.Connection,
    account_name: Callable[[str], str],
) -> None:
    settings, _, first = setup
    accounts = [first, account_name("jobs_b"), account_name("jobs_c")]
    for index, account in enumerate(accounts):
        if index:
            await commands.add_account(settings, account, None)
        await store.append(admin, account, history(account, random.Random(index), 40))
    assert run_cli(settings, "rebuild", "--jobs", "2").returncode == 0
    await admin.execute("UPDATE projection_accounts SET realized_pnl_total = 12345 "
                        "WHERE account = $1", accounts[1])

    verify = run_cli(settings, "rebuild", "--verify", "--jobs", "2")
    repair = run_cli(settings, "rebuild", "--jobs", "2")
    again = run_cli(settings, "rebuild", "--verify", "--jobs", "2")

    assert verify.returncode == 3, verify.stdout + verify.stderr
    lines = verify.stdout.decode().splitlines()
    expected = (await rebuild.fold_stream(admin, accounts[1])).realized_pnl_total
    assert lines[0] == (f"{accounts[1]} projection_accounts realized_pnl_total: live 12345, "
                        f"rebuilt {expected}")
    assert repair.returncode == 0, repair.stderr
    assert again.returncode == 0, again.stdout + again.stderr
    for account in accounts:
        assert await tables.load_state(admin, account) == \
            await rebuild.fold_stream(admin, account)


async def test_projector_when_its_last_commits_are_lost_catches_up_from_the_store_unprompted(
    setup: tuple[Settings, Topics, str], admin: asyncpg.Connection, tmp_path: Path,
) -> None:
    """A database crash can take the projector's last (asynchronous) commits after Kafka offsets
    were committed: no message will come again, and the store must still be reached."""
    settings, topics, account = setup
    await store.append(admin, account, history(account, random.Random(11), 40))
    stored = await store.read_stream(admin, account)
    await produce_raw(settings, topics.ledger_events, account,
                      [encode_event(e) for e in stored])
    projector = LedgerProcess(settings, tmp_path, "projector").start()
    try:
        await eventually(lambda: _equals(projected(admin, account), len(stored)),
                         SETTLE_TIMEOUT_S)
        rewound = await rebuild.fold_stream(admin, account, up_to_sequence=10)
        async with admin.transaction():
            await tables.replace_state(admin, rewound)
        assert await projected(admin, account) == 10
        await eventually(lambda: _equals(projected(admin, account), len(stored)),
                         SETTLE_TIMEOUT_S)
    finally:
        projector.stop()

    assert await rebuild.verify_account(admin, account) == []
