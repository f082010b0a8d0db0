"""Following one account live: `follow()` and `ledger follow` against the real stack.

Method: events are appended before and while a follower runs (with the relay as a subprocess),
and messages are also produced straight to `ledger-events` (a repeat, and one past a gap) to check
the hand-over from store to topic yields every sequence exactly once, in order.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from console import commands
from ledger import kafka, store
from ledger.events import Event, encode_event
from ledger.kafka_admin import ensure_topics
from ledger.settings import Settings
from services.follow import follow
from tests.conftest import LEDGER_BIN, cli_env, eventually, with_topics
from tests.factories import fill
from tests.processes import LedgerProcess

pytestmark = [pytest.mark.pg, pytest.mark.kafka, pytest.mark.slow]

FOLLOW_TIMEOUT_S = 60.0


LINGER_S = 1.5


async def _collect(settings: Settings, account: str, count: int, stop: asyncio.Event,
                   from_sequence: int = 1) -> list[Event]:
    """Follow until `count` events arrived, then a little longer to catch any repeat."""
    seen: list[Event] = []
    loop = asyncio.get_running_loop()
    async for event in follow(settings, account, from_sequence, stop=stop):
        seen.append(event)
        if len(seen) == count:
            loop.call_later(LINGER_S, stop.set)
    return seen


async def test_follow_when_events_arrive_during_catch_up_yields_each_sequence_once_in_order(
    settings: Settings, admin: asyncpg.Connection, topic_prefix: str, tmp_path: Path,
    account_name: Callable[[str], str],
) -> None:
    test_settings = with_topics(settings, topic_prefix)
    await ensure_topics(test_settings)
    account = account_name("fol")
    await commands.add_account(test_settings, account, None)
    await store.append(admin, account, [fill(account, f"B{i}") for i in range(30)])
    relay = LedgerProcess(test_settings, tmp_path, "relay").start()
    stop = asyncio.Event()
    try:
        follower = asyncio.create_task(_collect(test_settings, account, 60, stop))
        for index in range(30):
            await store.append(admin, account, [fill(account, f"L{index}")])
        seen = await asyncio.wait_for(follower, FOLLOW_TIMEOUT_S)
    finally:
        stop.set()
        relay.stop()

    assert [event.sequence for event in seen] == list(range(1, 61))
    stored_ids = [event.event_id for event in await store.read_stream(admin, account)]
    assert [event.event_id for event in seen] == stored_ids


async def test_follow_when_topic_repeats_and_skips_fills_gaps_from_the_store(
    settings: Settings, admin: asyncpg.Connection, topic_prefix: str,
    account_name: Callable[[str], str],
) -> None:
    test_settings = with_topics(settings, topic_prefix)
    topics = await ensure_topics(test_settings)
    account = account_name("gap")
    await commands.add_account(test_settings, account, None)
    await store.append(admin, account, [fill(account, f"G{i}") for i in range(5)])
    producer = kafka.producer(test_settings, client_id="test-hostile")
    await producer.start()
    stop = asyncio.Event()
    try:
        follower = asyncio.create_task(_collect(test_settings, account, 10, stop,
                                                from_sequence=3))
        await store.append(admin, account, [fill(account, f"G{i}") for i in range(5, 12)])
        events = await store.read_stream(admin, account)
        # No relay runs: the topic carries only a repeat (3) and a message past a gap (12).
        for event in (events[2], events[11], events[2]):
            await producer.send_and_wait(topics.ledger_events, encode_event(event),
                                         key=account.encode())
        seen = await asyncio.wait_for(follower, FOLLOW_TIMEOUT_S)
    finally:
        stop.set()
        await producer.stop()

    assert [event.sequence for event in seen] == list(range(3, 13))
    assert [event.event_id for event in seen] == [event.event_id for event in events[2:]]


async def test_cli_follow_prints_json_lines_from_a_sequence_and_stops_on_sigterm(
    settings: Settings, admin: asyncpg.Connection, topic_prefix: str,
    account_name: Callable[[str], str],
) -> None:
    test_settings = with_topics(settings, topic_prefix)
    account = account_name("cli")
    await commands.add_account(test_settings, account, None)
    await store.append(admin, account, [fill(account, f"C{i}") for i in range(5)])
    env = cli_env(test_settings)
    env["LEDGER_TOPIC_PREFIX"] = topic_prefix
    process = subprocess.Popen(  # noqa: ASYNC220 - a real child that the test reads line by line
        [str(LEDGER_BIN), "follow", account, "--from-sequence", "4"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list[bytes] = []
    try:
        assert process.stdout is not None
        loop = asyncio.get_running_loop()
        for _ in range(2):
            lines.append(await asyncio.wait_for(
                loop.run_in_executor(None, process.stdout.readline), FOLLOW_TIMEOUT_S))

        process.send_signal(signal.SIGTERM)

        async def finished() -> bool:
            return process.poll() is not None

        await eventually(finished, FOLLOW_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()

    assert [json.loads(line)["sequence"] for line in lines] == [4, 5]
    assert json.loads(lines[0])["data"]["fill_id"] == "C3"
    assert process.returncode == 0, process.stderr.read() if process.stderr else b""
