"""Reconciliation through Kafka: discrepancies on `executions`, broker views on
`broker-positions`, with ingest, the relay and the projector running as processes.

Goal: each kind of discrepancy the broker can report is recorded with its figures beside the
execution (kept as reported), the account goes to reducing, nothing is lost and the projection
equals a rebuild; a broker view is judged only after the executions sent before it are in the
store (so an honest view sent right after its fills matches), a view that differs is recorded
with its differences and reduces the account, a repeat of an `as_of` is judged once, and a
malformed view is dead-lettered with its reason while the next one still goes through.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from console import commands
from ledger import kafka, store
from ledger.events import DiscrepancyFound, Event, ReconciliationFailed, decode_event
from ledger.kafka_admin import ensure_topics
from ledger.settings import Settings
from ledger.topics import Topics
from projections import rebuild
from tests.conftest import eventually, run_cli, with_topics
from tests.integration.test_pipeline import read_to_end
from tests.processes import LedgerProcess

pytestmark = [pytest.mark.pg]

MSFT = "MSFT 260220P00400000"
SETTLE_S = 60.0


@dataclass
class Running:
    settings: Settings
    topics: Topics
    account: str
    processes: list[LedgerProcess]


@pytest.fixture
async def running(settings: Settings, topic_prefix: str, tmp_path: Path,
                  account_name: Callable[[str], str]) -> AsyncIterator[Running]:
    test_settings = with_topics(settings, topic_prefix)
    topics = await ensure_topics(test_settings)
    account = account_name("rck")
    await commands.add_account(test_settings, account, None)
    assert run_cli(test_settings, "limits", "set", account, "--max-positions", "100",
                   "--max-exposure", "10000000").returncode == 0
    processes = [LedgerProcess(test_settings, tmp_path, name).start()
                 for name in ("ingest", "relay", "projector")]
    try:
        yield Running(test_settings, topics, account, processes)
    finally:
        for process in processes:
            process.stop()


def fill(account: str, fill_id: str, *, quantity: str = "5", price: str = "6.00",
         position_id: str = "P-1", intent_id: str | None = None,
         occurred_at: str = "2026-02-03T17:30:00Z") -> dict[str, Any]:
    data: dict[str, Any] = {"fill_id": fill_id, "position_id": position_id, "symbol": MSFT,
                            "instrument": "option", "side": "long", "quantity": quantity,
                            "price": price, "multiplier": "100"}
    if intent_id is not None:
        data["intent_id"] = intent_id
    return {"account": account, "type": "OrderFilled", "occurred_at": occurred_at, "data": data}


def close(account: str, close_id: str, position_id: str, quantity: str) -> dict[str, Any]:
    return {"account": account, "type": "PositionClosed", "occurred_at": "2026-02-03T17:31:00Z",
            "data": {"close_id": close_id, "position_id": position_id, "price": "7.00",
                     "quantity": quantity}}


async def send(settings: Settings, topic: str, account: str, *values: bytes) -> None:
    producer = kafka.producer(settings, client_id="test-reconcile")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=account.encode())
    finally:
        await producer.stop()


def encoded(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


async def events_of(admin: asyncpg.Connection, account: str) -> list[Event]:
    return await store.read_stream(admin, account, batch_size=100_000)


async def projected(admin: asyncpg.Connection, account: str) -> bool:
    head = await admin.fetchval("SELECT head FROM streams WHERE account = $1", account)
    applied = await admin.fetchval(
        "SELECT applied_sequence FROM projection_accounts WHERE account = $1", account)
    return bool(head and applied == head)


async def issue_intents(admin: asyncpg.Connection, account: str) -> None:
    """Intents I-live (5 at 6.00, long), I-exp (expired), I-rej (rejected), I-can (cancelled)."""
    def intent(intent_id: str) -> dict[str, Any]:
        return {"account": account, "type": "IntentIssued", "occurred_at": "2026-02-03T17:29:00Z",
                "data": {"intent_id": intent_id, "signal_id": f"S-{intent_id}",
                         "position_id": f"P-{intent_id}", "symbol": MSFT,
                         "instrument": "option", "side": "long", "quantity": "5",
                         "limit_price": "6.00", "multiplier": "100",
                         "expires_at": "2026-02-03T17:34:00Z"}}

    def ended(event_type: str, intent_id: str) -> dict[str, Any]:
        return {"account": account, "type": event_type, "occurred_at": "2026-02-03T17:29:30Z",
                "data": {"intent_id": intent_id, "reason": "ended"}}

    documents = [intent(i) for i in ("I-live", "I-exp", "I-rej", "I-can")] + [
        ended("IntentExpired", "I-exp"), ended("IntentRejected", "I-rej"),
        ended("IntentCancelled", "I-can")]
    await store.append(admin, account, [decode_event(json.dumps(d)) for d in documents])


async def test_each_discrepancy_on_executions_is_recorded_with_figures_and_reduces_the_account(
    running: Running, admin: asyncpg.Connection,
) -> None:
    account = running.account
    await issue_intents(admin, account)
    executions = [
        fill(account, "X-open", quantity="10", position_id="P-1"),
        close(account, "C-beyond", "P-1", "50"),
        close(account, "C-unknown", "P-never", "1"),
        fill(account, "X-exp", position_id="P-2", intent_id="I-exp"),
        fill(account, "X-rej", position_id="P-3", intent_id="I-rej"),
        fill(account, "X-can", position_id="P-4", intent_id="I-can"),
        fill(account, "X-big", quantity="6", price="6.50", position_id="P-5",
             intent_id="I-live"),
    ]

    await send(running.settings, running.topics.executions, account,
               *(encoded(e) for e in executions))

    async def recorded() -> bool:
        found = await admin.fetchval("SELECT count(*) FROM events WHERE account = $1 "
                                     "AND type = 'DiscrepancyFound'", account)
        return bool(found == 7) and await projected(admin, account)

    await eventually(recorded, SETTLE_S)
    events = await events_of(admin, account)
    found = [(e.data.kind, e.data.execution, e.data.reported, e.data.ledger)
             for e in events if isinstance(e.data, DiscrepancyFound)]
    assert [(kind, execution, None if r is None else f"{r:f}", None if m is None else f"{m:f}")
            for kind, execution, r, m in found] == [
        ("close_beyond_open", 'PositionClosed:close_id="C-beyond"', "50", "10"),
        ("close_of_unknown_position", 'PositionClosed:close_id="C-unknown"', "1", "0"),
        ("fill_after_expiry", 'OrderFilled:fill_id="X-exp"', None, None),
        ("fill_after_rejection", 'OrderFilled:fill_id="X-rej"', None, None),
        ("fill_after_cancel", 'OrderFilled:fill_id="X-can"', None, None),
        ("fill_beyond_quantity", 'OrderFilled:fill_id="X-big"', "6", "5"),
        ("fill_beyond_price", 'OrderFilled:fill_id="X-big"', "6.50", "6.00"),
    ]
    # Every execution is kept as the broker reported it, each discrepancy right after it.
    types = [e.type for e in events[7:]]
    assert types.count("OrderFilled") == 5
    assert types.count("PositionClosed") == 2
    positions = json.loads(run_cli(running.settings, "positions", account, "--json").stdout)
    assert positions["trading_state"] == "reducing"
    assert await rebuild.verify_account(admin, account) == []


async def test_broker_views_on_kafka_are_judged_after_their_executions_once_per_as_of(
    running: Running, admin: asyncpg.Connection,
) -> None:
    account = running.account
    honest = {"account": account, "as_of": "2026-02-03T17:45:00Z",
              "positions": [{"symbol": MSFT, "side": "long", "quantity": "12"}]}
    lying = {"account": account, "as_of": "2026-02-03T17:46:00Z",
             "positions": [{"symbol": MSFT, "side": "long", "quantity": "13"}]}
    malformed = {"account": account, "as_of": "yesterday", "positions": []}

    # The fills and, right behind them, the broker's view that includes them.
    await send(running.settings, running.topics.executions, account,
               encoded(fill(account, "X-1", quantity="5", position_id="P-1")),
               encoded(fill(account, "X-2", quantity="7", position_id="P-2")))
    await send(running.settings, running.topics.broker_positions, account,
               encoded(honest), encoded(honest), b"{not json", encoded(malformed),
               encoded(lying))

    async def judged() -> bool:
        found = await admin.fetchval(
            "SELECT count(*) FROM events WHERE account = $1 "
            "AND type IN ('PositionsReconciled', 'ReconciliationFailed')", account)
        return bool(found == 2) and await projected(admin, account)

    await eventually(judged, SETTLE_S)
    events = await events_of(admin, account)
    outcomes = [e for e in events if e.type in ("PositionsReconciled", "ReconciliationFailed")]
    assert [e.type for e in outcomes] == ["PositionsReconciled", "ReconciliationFailed"]
    failed = outcomes[1].data
    assert isinstance(failed, ReconciliationFailed)
    assert [(d.symbol, d.side, f"{d.broker:f}", f"{d.ledger:f}") for d in failed.differences] == [
        (MSFT, "long", "13", "12")]
    positions = json.loads(run_cli(running.settings, "positions", account, "--json").stdout)
    assert positions["trading_state"] == "reducing"
    assert await rebuild.verify_account(admin, account) == []

    async def dead_lettered() -> bool:
        letters = await read_to_end(running.settings, running.topics.dead_letters)
        return len(letters) >= 2

    await eventually(dead_lettered, SETTLE_S)
    letters = await read_to_end(running.settings, running.topics.dead_letters)
    reasons = sorted(kafka.header(letter.headers, "dlq.reason") or "" for letter in letters)
    assert len(reasons) == 2
    assert reasons[0].startswith("as_of: 'yesterday'")
    assert reasons[1].startswith("json:")
