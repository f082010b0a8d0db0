"""What the broker reports is recorded against the account's state at its head.

Goal: a fill that reuses an open position's id for another instrument is refused (it would be
merged into the first position at its multiplier), closes are keyed by the broker's execution id
(two partial closes in one instant both count, one close sent twice counts once). Method: call
ingest's `record` (what `ledger run ingest` does per account and batch) as the ingest role
against real PostgreSQL, and read the store and a fold of it.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import asyncpg
import pytest

from console import commands
from ledger import roles
from ledger.db import connect
from ledger.events import Event
from ledger.logins import job_dsn
from ledger.settings import Settings
from projections import rebuild
from services import ingest
from tests.factories import close, fill

pytestmark = pytest.mark.pg


@pytest.fixture
async def account(settings: Settings, account_name: Callable[[str], str]) -> str:
    name = account_name("exe")
    await commands.add_account(settings, name, None)
    return name


async def _record(settings: Settings, account: str, events: list[Event]) -> ingest.Recorded:
    conn = await connect(job_dsn(settings, roles.Job.ingest))
    try:
        async with conn.transaction():
            recorded, _ = await ingest.record(conn, account, events)
    finally:
        await conn.close()
    return recorded


@pytest.mark.parametrize(("field", "changes", "given", "held"), [
    ("symbol", {"symbol": "AAPL 260220P00200000"}, "AAPL 260220P00200000",
     "MSFT 260220P00400000"),
    ("multiplier", {"multiplier": "10"}, "10", "100"),
])
async def test_record_when_a_fill_reuses_an_open_positions_id_refuses_it_naming_the_field(
        settings: Settings, admin: asyncpg.Connection, account: str, field: str,
        changes: dict[str, str], given: str, held: str) -> None:
    first = fill(account, "F-1", position_id="P-1", quantity="3")
    reused = fill(account, "F-2", position_id="P-1", quantity="3", **changes)
    later = fill(account, "F-3", position_id="P-1", quantity="1")

    recorded = await _record(settings, account, [first, reused, later])

    assert [(index, str(problem)) for index, problem in recorded.refused] == [
        (1, f"data.{field}: {given!r} is not the {field} of open position 'P-1' ({held!r}): "
            "a fill adds to a position of the same instrument and side; use another "
            "position_id")]
    state = await rebuild.fold_stream(admin, account)
    assert state.positions["P-1"].quantity == Decimal(4)
    assert state.sequence == 2


async def test_record_when_a_closed_positions_id_is_reused_opens_a_new_position(
        settings: Settings, admin: asyncpg.Connection, account: str) -> None:
    events = [fill(account, "F-1", position_id="P-1", quantity="3"),
              close(account, "P-1", occurred_at="2026-02-03T17:40:00Z"),
              fill(account, "F-2", position_id="P-1", quantity="2", symbol="KO EQUITY")]

    recorded = await _record(settings, account, events)

    assert recorded.refused == []
    assert (await rebuild.fold_stream(admin, account)).positions["P-1"].symbol == "KO EQUITY"


async def test_record_when_two_partial_closes_share_an_instant_counts_both_and_a_repeat_once(
        settings: Settings, admin: asyncpg.Connection, account: str) -> None:
    at = "2026-02-03T17:40:00Z"
    opened = fill(account, "F-1", position_id="P-1", quantity="10")
    first = close(account, "P-1", occurred_at=at, close_id="EX-1", quantity="2")
    second = close(account, "P-1", occurred_at=at, close_id="EX-2", quantity="3")
    again = close(account, "P-1", occurred_at="2026-02-03T17:41:00Z", close_id="EX-2",
                  quantity="3")

    recorded = await _record(settings, account, [opened, first, second])
    retried = await _record(settings, account, [again])

    assert len(recorded.result.appended) == 3
    assert (len(retried.result.appended), len(retried.result.duplicates)) == (0, 1)
    assert (await rebuild.fold_stream(admin, account)).positions["P-1"].quantity == Decimal(5)
