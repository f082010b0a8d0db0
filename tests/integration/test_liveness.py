"""Only live orders reach the router, and no process outlives its supervisor.

Goal: a relay that was down longer than the intents' TTL sends the order router no backlog of
dead orders, nor orders of an account halted since they were decided; every event still reaches
`ledger-events`. `kill -9` of `ledger run all` leaves no child running. Method: decide signals
with `ledger dispatch` while no relay runs, let the intents expire (or halt the account), start
the relay, and read `order-intents` and `ledger-events` back from real Kafka. For the
supervisor, start `ledger run all`, find its children by parent PID, SIGKILL it and watch them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from console import commands
from ledger import kafka
from ledger.kafka_admin import ensure_topics
from ledger.settings import Settings
from tests.conftest import eventually, run_cli, with_topics
from tests.integration.test_dispatcher import new_account, signal_line
from tests.integration.test_pipeline import read_to_end
from tests.processes import LedgerProcess

pytestmark = [pytest.mark.pg, pytest.mark.kafka, pytest.mark.slow]

SETTLE_TIMEOUT_S = 60.0
ORPHAN_DEADLINE_S = 1.0


async def _decide(settings: Settings, account: str, tmp_path: Path, count: int,
                  ttl_s: str) -> None:
    path = tmp_path / f"signals-{account}.jsonl"
    path.write_text("".join(signal_line(account, f"S-{i}", quantity="1") + "\n"
                            for i in range(count)))
    result = run_cli(settings, "dispatch", account, "--signals", str(path),
                     env={"LEDGER_INTENT_TTL_S": ttl_s})
    assert result.returncode == 0, result.stderr


async def _published(admin: asyncpg.Connection, account: str) -> int:
    value = await admin.fetchval(
        "SELECT published_sequence FROM relay_positions WHERE account = $1", account)
    return int(value or 0)


async def _relay_until_published(settings: Settings, admin: asyncpg.Connection,
                                 tmp_path: Path, accounts: list[str]) -> None:
    heads = {a: int(await admin.fetchval("SELECT head FROM streams WHERE account = $1", a))
             for a in accounts}
    relay = LedgerProcess(settings, tmp_path, "relay").start()
    try:
        for account, head in heads.items():
            async def done(account: str = account, head: int = head) -> bool:
                return await _published(admin, account) == head

            await eventually(done, SETTLE_TIMEOUT_S)
    finally:
        relay.stop()


async def test_relay_down_past_the_ttl_or_a_halt_sends_no_dead_order_to_the_router(
        settings: Settings, admin: asyncpg.Connection, tmp_path: Path, topic_prefix: str,
        account_name: Callable[[str], str]) -> None:
    test_settings = with_topics(settings, topic_prefix)
    topics = await ensure_topics(test_settings)
    expired = await new_account(test_settings, admin, account_name("exp"))
    halted = await new_account(test_settings, admin, account_name("hlt"))
    live = await new_account(test_settings, admin, account_name("live"))
    await _decide(test_settings, expired, tmp_path, 3, ttl_s="1")
    await _decide(test_settings, halted, tmp_path, 3, ttl_s="600")
    await _decide(test_settings, live, tmp_path, 2, ttl_s="600")
    assert run_cli(test_settings, "halt", halted, "--reason", "risk review").returncode == 0

    async def all_expired() -> bool:
        return bool(await admin.fetchval(
            "SELECT bool_and((data->>'expires_at')::timestamptz < now()) FROM events "
            "WHERE account = $1 AND type = 'IntentIssued'", expired))

    await eventually(all_expired, SETTLE_TIMEOUT_S)
    await _relay_until_published(test_settings, admin, tmp_path, [expired, halted, live])
    # The relay publishes every account of the shared database: look at this test's three only.
    ours = {expired, halted, live}
    routed_messages = [m for m in await read_to_end(test_settings, topics.order_intents)
                       if m.key.decode() in ours]
    orders = [m for m in routed_messages if kafka.header(m.headers, "type") == "IntentIssued"]
    cancels = [m for m in routed_messages if kafka.header(m.headers, "type") == "IntentCancelled"]
    events = [m for m in await read_to_end(test_settings, topics.ledger_events)
              if m.key.decode() in ours]

    routed = [(m.key.decode(), json.loads(m.value)["data"]["intent_id"]) for m in orders]
    assert {account for account, _ in routed} == {live}
    # The halt cancelled the halted account's three pending intents, and the router heard it.
    assert {m.key.decode() for m in cancels} == {halted}
    assert len({json.loads(m.value)["data"]["intent_id"] for m in cancels}) == 3
    assert len({intent for _, intent in routed}) == 2
    assert all(kafka.header(m.headers, "expires_at") for m in orders)
    assert all(int(kafka.header(m.headers, "checked_head") or 0)
               >= int(kafka.header(m.headers, "sequence") or 0) > 0 for m in orders)
    issued = {json.loads(m.value)["data"]["intent_id"] for m in events
              if kafka.header(m.headers, "type") == "IntentIssued"}
    assert len(issued) == 3 + 3 + 2  # every intent still went to ledger-events


def _children(parent: int) -> list[int]:
    listed = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True,
                            text=True, check=False)
    return [int(pid) for pid in listed.stdout.split()]


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def test_run_all_when_killed_with_sigkill_leaves_no_child_running(
        make_database: Callable[[], Awaitable[Settings]], tmp_path: Path, topic_prefix: str,
        account_name: Callable[[str], str]) -> None:
    # A database of its own: `run all` starts a dispatcher for every account with limits.
    test_settings = with_topics(await make_database(), topic_prefix)
    await ensure_topics(test_settings)
    account = account_name("sup")
    await commands.add_account(test_settings, account, None)
    assert run_cli(test_settings, "limits", "set", account, "--max-positions", "1",
                   "--max-exposure", "100").returncode == 0
    supervisor = LedgerProcess(test_settings, tmp_path, "all").start()
    assert supervisor.process is not None
    pid = supervisor.process.pid
    children: list[int] = []
    try:
        async def started() -> bool:
            return len(_children(pid)) == 4  # ingest, relay, projector, one dispatcher

        await eventually(started, SETTLE_TIMEOUT_S)
        children = _children(pid)
        supervisor.kill()

        async def orphans_gone() -> bool:
            return not any(_running(child) for child in children)

        # The promise itself is about time: within a second, checked by PID.
        await eventually(orphans_gone, ORPHAN_DEADLINE_S)
    finally:
        for child in children:
            if _running(child):
                os.kill(child, signal.SIGKILL)
    assert len(children) == 4
