"""Invariant 1 (isolation) and 7 (append-only) enforced by PostgreSQL itself, per role.

Method: log in as account role `ledger_a` and the service role, then try to read and write
account `b`'s rows in every table that has an `account` column; check the catalog too
(rolsuper, rolbypassrls, relforcerowsecurity, table owners), not only query results.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import pytest

from ledger import commands, roles, secrets, store
from ledger.db import connect, dsn_for_role
from ledger.settings import Settings
from tests.conftest import run_cli
from tests.factories import fill

pytestmark = pytest.mark.pg


async def _login(settings: Settings, role: str) -> asyncpg.Connection:
    password = secrets.load_or_create_password(settings.secrets_dir, role)
    return await connect(dsn_for_role(settings.database_url, role, password))


@pytest.fixture
async def two_accounts(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str]
) -> tuple[str, str]:
    a, b = account_name("a"), account_name("b")
    for name in (a, b):
        await commands.add_account(settings, name, None)
        await store.append(admin, name, [fill(name, f"{name}-F1"), fill(name, f"{name}-F2")])
    return a, b


async def _account_tables(admin: asyncpg.Connection) -> list[str]:
    rows = await admin.fetch(
        """SELECT c.table_name FROM information_schema.columns c
           JOIN information_schema.tables t USING (table_schema, table_name)
           WHERE c.table_schema = 'public' AND c.column_name = 'account'
             AND t.table_type = 'BASE TABLE' ORDER BY 1"""
    )
    return [row[0] for row in rows]


async def test_account_role_when_reading_any_table_sees_only_its_own_rows(
    settings: Settings, admin: asyncpg.Connection, two_accounts: tuple[str, str]
) -> None:
    a, b = two_accounts
    conn = await _login(settings, roles.account_role(a))
    try:
        for table in await _account_tables(admin):
            seen = {row[0] for row in await conn.fetch(f"SELECT DISTINCT account FROM {table}")}
            assert b not in seen, table
            assert seen <= {a}, table
        assert await conn.fetchval("SELECT count(*) FROM events WHERE account = $1", b) == 0
        assert await conn.fetchval("SELECT count(*) FROM events") == 2
    finally:
        await conn.close()


async def test_account_role_when_writing_another_account_is_refused(
    settings: Settings, admin: asyncpg.Connection, two_accounts: tuple[str, str]
) -> None:
    a, b = two_accounts
    conn = await _login(settings, roles.account_role(a))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                """INSERT INTO events (account, sequence, event_id, type, occurred_at, data)
                   VALUES ($1, 99, gen_random_uuid(), 'TradingHalted', now(), '{}')""", b)
        # Other accounts' heads are invisible, so an UPDATE finds nothing to change.
        assert await conn.execute("UPDATE streams SET head = 0 WHERE account = $1", b) \
            == "UPDATE 0"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE events SET type = 'x' WHERE account = $1", a)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM events WHERE account = $1", a)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("TRUNCATE events")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SET ROLE ledger__service")
    finally:
        await conn.close()
    assert await admin.fetchval("SELECT head FROM streams WHERE account = $1", b) == 2


async def test_account_role_can_append_to_its_own_stream_through_the_store(
    settings: Settings, admin: asyncpg.Connection, two_accounts: tuple[str, str]
) -> None:
    a, b = two_accounts
    conn = await _login(settings, roles.account_role(a))
    try:
        result = await store.append(conn, a, [fill(a, f"{a}-F3")])
        with pytest.raises(Exception, match="does not exist"):
            await store.append(conn, b, [fill(b, f"{b}-F3")])
    finally:
        await conn.close()
    assert list(result.appended.values()) == [3]
    assert await admin.fetchval("SELECT head FROM streams WHERE account = $1", b) == 2


async def test_service_role_when_changing_events_is_refused(
    settings: Settings, two_accounts: tuple[str, str]
) -> None:
    conn = await _login(settings, roles.SERVICE_ROLE)
    try:
        assert await conn.fetchval("SELECT count(DISTINCT account) FROM events") >= 2
        for statement in ("UPDATE events SET type = 'x'", "DELETE FROM events",
                          "TRUNCATE events"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()


async def test_catalog_when_inspected_shows_no_role_bypasses_row_level_security(
    settings: Settings, admin: asyncpg.Connection, two_accounts: tuple[str, str]
) -> None:
    a, _ = two_accounts
    tables = await _account_tables(admin)
    assert {"events", "streams"} <= set(tables)
    for table in tables:
        row = await admin.fetchrow(
            "SELECT relrowsecurity, relforcerowsecurity, pg_get_userbyid(relowner) AS owner "
            "FROM pg_class WHERE oid = $1::regclass", table)
        assert row is not None, table
        assert row["relrowsecurity"] is True, table
        assert row["relforcerowsecurity"] is True, table
        assert row["owner"] not in (roles.account_role(a), roles.SERVICE_ROLE), table
    for role in (roles.account_role(a), roles.SERVICE_ROLE, roles.ACCOUNTS_GROUP):
        flags = await admin.fetchrow(
            "SELECT rolsuper, rolbypassrls, rolcreaterole FROM pg_roles WHERE rolname = $1", role)
        assert flags is not None, role
        assert (flags["rolsuper"], flags["rolbypassrls"], flags["rolcreaterole"]) \
            == (False, False, False), role
        owned = await admin.fetchval(
            "SELECT count(*) FROM pg_class WHERE relowner = "
            "(SELECT oid FROM pg_roles WHERE rolname = $1)", role)
        assert owned == 0, role


def test_accounts_add_when_run_twice_is_idempotent_and_keeps_one_stream(
    settings: Settings, account_name: Callable[[str], str]
) -> None:
    name = account_name("twice")

    first = run_cli(settings, "accounts", "add", name)
    second = run_cli(settings, "accounts", "add", name)

    assert first.returncode == 0, first.stderr
    assert b"created" in first.stdout
    assert second.returncode == 0, second.stderr
    assert b"already exists" in second.stdout
    path = secrets.password_path(settings.secrets_dir, roles.account_role(name))
    assert path.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("bad_name", ["Large", "1st", "a-b", "a b", "ledger;drop", "x" * 60, "_a"])
def test_accounts_add_when_name_is_unsafe_exits_1_with_one_line(
    settings: Settings, bad_name: str
) -> None:
    result = run_cli(settings, "accounts", "add", bad_name)

    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert repr(bad_name) in lines[0]
    assert "Traceback" not in result.stderr.decode()
