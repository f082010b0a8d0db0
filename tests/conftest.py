"""Shared fixtures: a fresh database per test session on the real local PostgreSQL, unique topics.

Goal: every integration test talks to the real servers that `make up` started, isolated from the
developer's own `ledger` database and from other tests. Method: one throw-away database per
session (migrated once; its roles are its own and dropped with it), unique account names per
test, and a unique topic per Kafka test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from console import commands
from ledger import kafka_admin, roles, secrets
from ledger.db import connect, dsn_for_database
from ledger.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
LEDGER_BIN = ROOT / ".venv" / "bin" / "ledger"
POLL_INTERVAL_S = 0.05
# Tests SIGKILL consumers; a short session lets the restarted one take its partitions back soon.
TEST_SESSION_TIMEOUT_MS = 2_000


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def secrets_dir(base_settings: Settings) -> Path:
    # Each test database's roles carry its name, so their password files never collide with
    # the developer's own ledger's.
    return base_settings.secrets_dir


async def _create_database(admin_dsn: str, name: str) -> None:
    conn = await connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(admin_dsn: str, name: str) -> None:
    conn = await connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _drop_ledger_roles(admin_dsn: str, database: str, secrets_dir: Path) -> None:
    """Drop the roles of a dropped test database's ledger (each carries its database's label)."""
    admin = await connect(admin_dsn)
    try:
        names = [row[0] for row in await admin.fetch(
            "SELECT rolname FROM pg_roles WHERE shobj_description(oid, 'pg_authid') = $1 "
            "ORDER BY rolname", roles.Roles(namespace="x", database=database).label)]
        for name in names:
            # Another session may still hold a grant from a test that failed midway.
            with contextlib.suppress(asyncpg.PostgresError):
                await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
            secrets.password_path(secrets_dir, name).unlink(missing_ok=True)
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def make_database(
    base_settings: Settings, secrets_dir: Path
) -> Iterator[Callable[..., Awaitable[Settings]]]:
    """Create fresh databases, migrated unless asked not to; all are dropped at session end."""
    created: list[Settings] = []
    admin_dsn = dsn_for_database(base_settings.database_url, "postgres")

    async def make(migrated: bool = True) -> Settings:
        name = f"ledger_test_{uuid.uuid4().hex[:10]}"
        await _create_database(admin_dsn, name)
        settings = load_settings(database_url=dsn_for_database(base_settings.database_url, name),
                                 secrets_dir=secrets_dir,
                                 kafka_session_timeout_ms=TEST_SESSION_TIMEOUT_MS)
        created.append(settings)
        if migrated:
            await commands.migrate(settings)
        return settings

    yield make

    async def cleanup() -> None:
        for settings in created:
            database = settings.database_url.rsplit("/", 1)[1]
            await _drop_database(admin_dsn, database)
            await _drop_ledger_roles(admin_dsn, database, secrets_dir)

    if created:
        asyncio.run(cleanup())


@pytest.fixture(scope="session")
async def settings(make_database: Callable[[], Awaitable[Settings]]) -> Settings:
    """The session's database, migrated."""
    return await make_database()


@pytest.fixture
async def admin(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(settings.database_url)
    await conn.execute("SET TIME ZONE 'UTC'")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def account_name() -> Callable[[str], str]:
    """Return unique account names: roles are shared by every database of the cluster."""
    suffix = uuid.uuid4().hex[:8]

    def name(base: str) -> str:
        return f"{base}_{suffix}"

    return name


def cli_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["LEDGER_DATABASE_URL"] = settings.database_url
    env["LEDGER_SECRETS_DIR"] = str(settings.secrets_dir)
    env["LEDGER_TOPIC_PREFIX"] = settings.topic_prefix
    env["LEDGER_KAFKA_SESSION_TIMEOUT_MS"] = str(settings.kafka_session_timeout_ms)
    env["LEDGER_METRICS_PORT"] = str(settings.metrics_port)
    env["LEDGER_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
    env.pop("LEDGER_DEBUG", None)
    return env


def run_cli(settings: Settings, *args: str, stdin: bytes | None = None,
            timeout_s: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the installed `ledger` entry point against the test database (`env` adds to it)."""
    return subprocess.run(
        [str(LEDGER_BIN), *args], env={**cli_env(settings), **(env or {})}, input=stdin,
        capture_output=True, timeout=timeout_s, check=False,
    )


def python_subprocess_args(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    """Wait until `check` is true, polling; fail the test at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout_s}s")
        await asyncio.sleep(POLL_INTERVAL_S)


@pytest.fixture
async def topic_prefix(base_settings: Settings) -> str:
    """A prefix that gives this test its own topics, created with the processes' grants (as
    `ledger migrate` does for a ledger's own prefix)."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    await kafka_admin.provision(with_topics(base_settings, prefix), users=False)
    return prefix


def with_topics(settings: Settings, prefix: str) -> Settings:
    return settings.model_copy(update={"topic_prefix": prefix})
