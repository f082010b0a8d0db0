"""The event store against the real PostgreSQL: gap-free sequences, idempotency, append-only.

Method: appends from several OS processes race on one account and the stored sequences must be
exactly 1..N; duplicates by event_id and by natural key are stored once; every role, the table
owner included, is refused UPDATE, DELETE and TRUNCATE.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import asyncpg
import pytest

from console import commands
from ledger import store
from ledger.errors import ConcurrencyConflict, UnknownAccount
from ledger.settings import Settings
from tests.factories import fill, limits

pytestmark = pytest.mark.pg

WRITER_PROCESSES = 8
APPENDS_PER_PROCESS = 40


async def _new_account(settings: Settings, name: str) -> str:
    await commands.add_account(settings, name, None)
    return name


async def _sequences(conn: asyncpg.Connection, account: str) -> list[int]:
    rows = await conn.fetch("SELECT sequence FROM events WHERE account = $1 ORDER BY sequence",
                            account)
    return [int(row[0]) for row in rows]


@pytest.mark.slow
async def test_append_when_eight_processes_race_on_one_account_sequence_is_exactly_1_to_n(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str]
) -> None:
    # Arrange
    account = await _new_account(settings, account_name("race"))
    # Act
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.integration.append_worker", settings.database_url,
            account, str(worker), str(APPENDS_PER_PROCESS),
        )
        for worker in range(WRITER_PROCESSES)
    ]
    codes = await asyncio.gather(*(worker.wait() for worker in workers))
    # Assert
    assert codes == [0] * WRITER_PROCESSES
    total = WRITER_PROCESSES * APPENDS_PER_PROCESS
    assert await _sequences(admin, account) == list(range(1, total + 1))
    assert await admin.fetchval("SELECT head FROM streams WHERE account = $1", account) == total


async def test_append_when_event_id_repeats_stores_once_and_reports_duplicate(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str]
) -> None:
    account = await _new_account(settings, account_name("dup"))
    event = limits(account, event_id="7b1c0000-0000-4000-8000-000000000001")

    first = await store.append(admin, account, [event])
    second = await store.append(admin, account, [event, event])

    assert list(first.appended.values()) == [1]
    assert second.appended == {}
    assert second.duplicates == [event.event_id, event.event_id]
    assert await _sequences(admin, account) == [1]


async def test_append_when_fill_id_repeats_under_another_event_id_stores_once(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str]
) -> None:
    account = await _new_account(settings, account_name("fill"))
    original = fill(account, "X-1001")
    same_fill_new_id = original.model_copy(
        update={"event_id": limits(account, event_id="7b1c0000-0000-4000-8000-0000000000ff")
                .event_id})

    await store.append(admin, account, [original])
    result = await store.append(admin, account, [same_fill_new_id, fill(account, "X-1002")])

    assert result.duplicates == [same_fill_new_id.event_id]
    assert await _sequences(admin, account) == [1, 2]


async def test_append_when_a_whole_batch_is_duplicate_changes_nothing(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str]
) -> None:
    account = await _new_account(settings, account_name("batch"))
    batch = [fill(account, f"F-{index}") for index in range(50)]
    await store.append(admin, account, batch)
    head_before = await admin.fetchval("SELECT head FROM streams WHERE account = $1", account)

    result = await store.append(admin, account, batch)

    assert result.appended == {}
    assert len(result.duplicates) == 50
    assert await admin.fetchval("SELECT head FROM streams WHERE account = $1", account) \
        == head_before == 50


async def test_append_when_expected_sequence_is_stale_raises_conflict_and_stores_nothing(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str]
) -> None:
    account = await _new_account(settings, account_name("occ"))
    await store.append(admin, account, [fill(account, "A")])

    with pytest.raises(ConcurrencyConflict) as caught:
        await store.append(admin, account, [fill(account, "B")], expected_sequence=0)

    assert str(caught.value) == f"expected_sequence=0 but stream {account} is at sequence=1"
    assert await _sequences(admin, account) == [1]
    ok = await store.append(admin, account, [fill(account, "B")], expected_sequence=1)
    assert list(ok.appended.values()) == [2]


async def test_append_when_account_does_not_exist_raises_unknown_account(
    admin: asyncpg.Connection,
) -> None:
    with pytest.raises(UnknownAccount, match="accounts add nobody_here"):
        await store.append(admin, "nobody_here", [fill("nobody_here", "A")])


async def test_read_stream_returns_the_events_as_appended_with_ledger_fields(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str]
) -> None:
    account = await _new_account(settings, account_name("read"))
    written = [fill(account, f"R-{index}", price="6.05") for index in range(3)]
    await store.append(admin, account, written)

    read = await store.read_stream(admin, account, after_sequence=1)

    assert [event.sequence for event in read] == [2, 3]
    assert [event.data for event in read] == [event.data for event in written[1:]]
    assert all(event.recorded_at is not None and event.global_position for event in read)


@pytest.mark.parametrize("statement", [
    "UPDATE events SET type = 'Tampered'",
    "DELETE FROM events",
    "TRUNCATE events",
    "TRUNCATE events CASCADE",
])
async def test_events_when_admin_changes_or_removes_rows_database_refuses(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str],
    statement: str,
) -> None:
    account = await _new_account(settings, account_name("ro"))
    await store.append(admin, account, [fill(account, "A")])

    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await admin.execute(statement)

    assert await _sequences(admin, account) == [1]


async def test_append_when_batch_mixes_new_stored_and_repeated_keeps_sequences_gap_free(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str]
) -> None:
    account = await _new_account(settings, account_name("mixed"))
    stored = fill(account, "S")
    await store.append(admin, account, [stored])
    first, second = fill(account, "N1"), fill(account, "N2")

    result = await store.append(admin, account, [first, stored, second, first])

    assert result.appended == {first.event_id: 2, second.event_id: 3}
    assert result.duplicates == [stored.event_id, first.event_id]
    assert await _sequences(admin, account) == [1, 2, 3]
    read = await store.read_stream(admin, account)
    assert [event.event_id for event in read] == [stored.event_id, first.event_id,
                                                  second.event_id]
