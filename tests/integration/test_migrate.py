"""`ledger migrate` against the real PostgreSQL: ordered, recorded, idempotent, edits refused.

Method: apply a throw-away migrations directory to a fresh database twice, then edit an applied
file; apply the real migrations through the CLI twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from ledger import migrate
from ledger.db import connect
from ledger.errors import MigrationError
from ledger.settings import Settings
from tests.conftest import run_cli

pytestmark = pytest.mark.pg


async def test_apply_when_run_twice_applies_each_file_once_in_order(
    make_database: Callable[..., Awaitable[Settings]], tmp_path: Path
) -> None:
    settings = await make_database(migrated=False)
    (tmp_path / "0002_second.sql").write_text("INSERT INTO probe VALUES (2);")
    (tmp_path / "0001_first.sql").write_text(
        "CREATE TABLE probe (n int); INSERT INTO probe VALUES (1);")
    conn = await connect(settings.database_url)
    try:
        first = await migrate.apply(conn, tmp_path)
        second = await migrate.apply(conn, tmp_path)
        values = [row[0] for row in await conn.fetch("SELECT n FROM probe ORDER BY n")]
    finally:
        await conn.close()

    assert [m.name for m in first] == ["first", "second"]
    assert second == []
    assert values == [1, 2]


async def test_apply_when_a_migration_fails_rolls_it_back_and_names_it(
    make_database: Callable[..., Awaitable[Settings]], tmp_path: Path
) -> None:
    settings = await make_database(migrated=False)
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE ok_table (n int);")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE half (n int); SELECT 1/0;")
    conn = await connect(settings.database_url)
    try:
        with pytest.raises(MigrationError, match="0002_broken failed: DivisionByZeroError"):
            await migrate.apply(conn, tmp_path)
        half = await conn.fetchval("SELECT to_regclass('half')")
        recorded = await conn.fetchval("SELECT max(version) FROM schema_migrations")
    finally:
        await conn.close()

    assert half is None
    assert recorded == 1


async def test_apply_when_an_applied_file_was_edited_refuses(
    make_database: Callable[..., Awaitable[Settings]], tmp_path: Path
) -> None:
    settings = await make_database(migrated=False)
    path = tmp_path / "0001_first.sql"
    path.write_text("CREATE TABLE edited (n int);")
    conn = await connect(settings.database_url)
    try:
        await migrate.apply(conn, tmp_path)
        path.write_text("CREATE TABLE edited (n bigint);")
        with pytest.raises(MigrationError, match="edited after it was applied"):
            await migrate.apply(conn, tmp_path)
    finally:
        await conn.close()


def test_discover_when_a_file_name_is_not_numbered_refuses(tmp_path: Path) -> None:
    (tmp_path / "first.sql").write_text("SELECT 1;")

    with pytest.raises(MigrationError, match=r"'first\.sql' does not match NNNN_name\.sql"):
        migrate.discover(tmp_path)


async def test_cli_migrate_when_run_twice_reports_up_to_date(
    make_database: Callable[..., Awaitable[Settings]], admin: asyncpg.Connection
) -> None:
    settings = await make_database()

    again = run_cli(settings, "migrate")

    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == b"schema is up to date"
    assert again.stdout.splitlines()[1].startswith(b"kafka: topics, users and grants of ")


async def test_apply_when_an_applied_file_had_a_known_comment_only_edit_accepts_and_records_it(
    make_database: Callable[..., Awaitable[Settings]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A database migrated before a comment of 0001 changed: accepted once, then recorded anew;
    # an edit not on the list is still refused.
    settings = await make_database(migrated=False)
    path = tmp_path / "0001_first.sql"
    path.write_text("-- before\nCREATE TABLE commented (n int);")
    conn = await connect(settings.database_url)
    try:
        await migrate.apply(conn, tmp_path)
        old = await conn.fetchval("SELECT checksum FROM schema_migrations WHERE version = 1")
        monkeypatch.setattr(migrate, "COMMENT_ONLY_EDITS", {(1, old): "comment"})
        path.write_text("-- after\nCREATE TABLE commented (n int);")
        applied = await migrate.apply(conn, tmp_path)
        recorded = await conn.fetchval("SELECT checksum FROM schema_migrations WHERE version = 1")
        edited = migrate.discover(tmp_path)[0].checksum
        path.write_text("-- after\nCREATE TABLE commented (n bigint);")
        with pytest.raises(MigrationError, match="edited after it was applied"):
            await migrate.apply(conn, tmp_path)
    finally:
        await conn.close()

    assert applied == []
    assert recorded == edited != old
