"""The controls desks expect, against the real database (and Kafka for the router's view).

Method: the order-rate limit under four racing `ledger dispatch` processes; an account moved to
`reducing`, where openings are blocked and an order that reduces a position passes and its
execution (a close naming the intent) closes it; `halt --all` with intents pending on several
accounts, every one cancelled in the store and announced on `order-intents` by the relay.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from dispatcher.decide import DispatcherConfig, decide
from ledger import kafka, store
from ledger.db import connect
from ledger.events import PositionClosed, build_event, decode_signal
from ledger.kafka_admin import ensure_topics
from ledger.logins import account_dsn
from ledger.settings import Settings
from projections import rebuild
from tests.conftest import LEDGER_BIN, cli_env, eventually, run_cli, with_topics
from tests.factories import fill
from tests.integration.test_dispatcher import new_account, signal_line, stream
from tests.integration.test_pipeline import read_to_end
from tests.processes import LedgerProcess

pytestmark = [pytest.mark.pg]

SETTLE_TIMEOUT_S = 90.0


@pytest.mark.slow
async def test_dispatch_when_four_processes_race_100_signals_under_a_rate_of_3_issues_exactly_3(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path,
    account_name: Callable[[str], str],
) -> None:
    account = await new_account(settings, admin, account_name("rate"), max_positions=1000,
                                max_exposure="100000000")
    assert run_cli(settings, "limits", "set", account, "--max-orders-per-minute", "3"
                   ).returncode == 0
    now = datetime.now(UTC).isoformat()
    lines = [signal_line(account, f"S-{index:03d}", price=f"{6 + index / 100:.2f}",
                         occurred_at=now) for index in range(100)]
    files = []
    for worker in range(4):
        shuffled = lines[:]
        random.Random(worker).shuffle(shuffled)
        path = tmp_path / f"signals-{worker}.jsonl"
        path.write_text("\n".join(shuffled) + "\n")
        files.append(path)

    processes = [await asyncio.create_subprocess_exec(
        str(LEDGER_BIN), "dispatch", account, "--signals", str(path), "--json",
        env=cli_env(settings), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        for path in files]
    outputs = await asyncio.gather(*(p.communicate() for p in processes))

    assert [p.returncode for p in processes] == [0, 0, 0, 0], [err for _, err in outputs]
    events = await stream(admin, account)
    assert sum(e.type == "SignalEvaluated" for e in events) == 100
    assert sum(e.type == "IntentIssued" for e in events) == 3
    blocked = [g for e in events if e.type == "SignalEvaluated" and not e.data.allowed
               for g in e.data.gates if not g.passed]
    assert {g.gate for g in blocked} == {"max_order_rate"}
    assert "Orders 3 in the last 60 s + 1 > 3" in {g.reason for g in blocked}


async def test_reducing_blocks_openings_and_lets_a_reduction_close_its_position(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str],
) -> None:
    account = await new_account(settings, admin, account_name("red"), max_positions=1,
                                max_exposure="2000")
    await store.append(admin, account, [fill(account, "F-1", position_id="P-1", quantity="3",
                                             price="6.00")])
    reduced = run_cli(settings, "reduce", account, "--reason", "broker mismatch")
    assert reduced.returncode == 0, reduced.stderr
    config = DispatcherConfig(account=account)
    now = datetime.now(UTC)
    opening = decode_signal(signal_line(account, "OPEN", quantity="1", price="1.00",
                                        occurred_at=now.isoformat()))
    reducing = decode_signal(json.dumps({
        **json.loads(signal_line(account, "REDUCE", quantity="3", price="5.50",
                                 occurred_at=now.isoformat())),
        "side": "short", "position_id": "P-1"}))
    conn = await connect(account_dsn(settings, account))
    try:
        blocked = await decide(conn, config, opening, now)
        passed = await decide(conn, config, reducing, now)
    finally:
        await conn.close()

    assert (blocked.allowed, blocked.code) == (False, "trading_reducing")
    # Positions are at their limit of 1: a reduction adds none, so it passes all the same.
    assert passed.allowed, passed
    assert passed.intent_id is not None
    state = await rebuild.fold_stream(admin, account)
    assert state.trading_state == "reducing"
    assert state.pending[passed.intent_id].position_id == "P-1"
    close = build_event(account, now, PositionClosed(
        close_id="C-1", position_id="P-1", price=reducing.limit_price,
        intent_id=passed.intent_id, reason="reduce"))
    await store.append(admin, account, [close])
    state = await rebuild.fold_stream(admin, account)
    assert state.positions == {}
    assert dict(state.pending) == {}
    document = json.loads(run_cli(settings, "positions", account, "--json").stdout)
    assert document["trading_state"] == "reducing"


@pytest.mark.slow
async def test_halt_all_cancels_every_pending_intent_and_tells_the_router(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path, topic_prefix: str,
    account_name: Callable[[str], str],
) -> None:
    test_settings = with_topics(settings, topic_prefix)
    topics = await ensure_topics(test_settings)
    accounts = [await new_account(test_settings, admin, account_name(f"h{n}")) for n in range(3)]
    now = datetime.now(UTC)
    for account in accounts:
        conn = await connect(account_dsn(test_settings, account))
        try:
            for n in range(2):
                outcome = await decide(conn, DispatcherConfig(account=account), decode_signal(
                    signal_line(account, f"S-{n}", quantity="1", occurred_at=now.isoformat())),
                    now)
                assert outcome.allowed
        finally:
            await conn.close()

    halted = run_cli(test_settings, "halt", "--all", "--reason", "desk-wide stop")
    assert halted.returncode == 0, halted.stderr

    pending_ids: dict[str, set[str]] = {}
    for account in accounts:
        events = await stream(admin, account)
        issued = {e.data.intent_id for e in events if e.type == "IntentIssued"}
        cancelled = {e.data.intent_id for e in events if e.type == "IntentCancelled"}
        assert issued == cancelled, account
        assert len(issued) == 2, account
        state = await rebuild.fold_stream(admin, account)
        assert state.trading_state == "halted"
        assert dict(state.pending) == {}
        pending_ids[account] = cancelled
    status = json.loads(run_cli(test_settings, "status", "--json").stdout)
    states = {row["account"]: row["trading_state"] for row in status["accounts"]}
    assert all(states[account] == "halted" for account in accounts)

    relay = LedgerProcess(test_settings, tmp_path, "relay").start()
    try:
        async def cancels_routed() -> bool:
            messages = await read_to_end(test_settings, topics.order_intents)
            seen: dict[str, set[str]] = {}
            for message in messages:
                if kafka.header(message.headers, "type") == "IntentCancelled":
                    data = json.loads(message.value)["data"]
                    seen.setdefault(message.key.decode(), set()).add(data["intent_id"])
            return all(seen.get(account) == pending_ids[account] for account in accounts)

        await eventually(cancels_routed, SETTLE_TIMEOUT_S)
    finally:
        relay.stop()

    resumed = run_cli(test_settings, "resume", "--all")
    assert resumed.returncode == 0, resumed.stderr
    for account in accounts:
        assert (await rebuild.fold_stream(admin, account)).trading_state == "active"


def test_halt_without_a_name_or_all_is_a_usage_error(settings: Settings) -> None:
    result = run_cli(settings, "halt", "--reason", "x")
    assert result.returncode == 2
    both = run_cli(settings, "halt", "acct", "--all", "--reason", "x")
    assert both.returncode == 2
