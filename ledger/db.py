"""Connections to PostgreSQL: the one place where driver connection errors become ledger errors.

Owns DSN handling (the administrative DSN, and the same host and database as another role) and
opening pools. Must not import the CLI or Kafka clients.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # A connection of its own or one lent by a pool: the store works with either.
    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

from ledger.errors import StoreUnavailable
from ledger.settings import mask_password

CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 60.0
POOL_SIZE_MAX = 8

# Connection failures are operating errors (retry or fix the DSN), not programmer errors.
_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.TooManyConnectionsError,
)


def dsn_for_role(dsn: str, role: str, password: str) -> str:
    """Return a DSN for the same host and database as `dsn`, logging in as `role`."""
    parts = urlsplit(dsn)
    host = parts.hostname or "127.0.0.1"
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{quote(role, safe='')}:{quote(password, safe='')}@{host}{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def dsn_for_database(dsn: str, database: str) -> str:
    """Return the same DSN pointing at another database."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


def database_name(dsn: str) -> str:
    """Return the database a DSN names."""
    return urlsplit(dsn).path.lstrip("/") or os.environ.get("PGDATABASE", "postgres")


async def connect(dsn: str) -> asyncpg.Connection:
    """Open one connection.

    Raises:
        StoreUnavailable: the server cannot be reached or refused the login.
    """
    try:
        return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S,
                                     command_timeout=COMMAND_TIMEOUT_S)
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(mask_password(dsn), describe(exc)) from None


async def create_pool(dsn: str, size_max: int = POOL_SIZE_MAX,
                      synchronous_commit: bool = True) -> asyncpg.Pool:
    """Open a pool of connections.

    `synchronous_commit=False` is for writers of derived data only (the projection): a commit
    lost in a database crash is re-derived from the store, never lost for good.

    Raises:
        StoreUnavailable: the server cannot be reached or refused the login.
    """
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=size_max,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=COMMAND_TIMEOUT_S,
            # Appends check idempotency by index lookups; a generic plan cached while the table
            # was small can turn them into scans as the store grows (see docs/design.md pitfalls).
            server_settings={"plan_cache_mode": "force_custom_plan",
                             "synchronous_commit": "on" if synchronous_commit else "off"},
            reset=_keep_session,
        )
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(mask_password(dsn), describe(exc)) from None
    assert pool is not None
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a pooled connection without a round trip.

    asyncpg's default reset sends `RESET ALL; UNLISTEN *; ...` on every release: one more
    round trip per decision, a fifth of its time on a loaded machine. Pooled connections carry
    no session state here (no SET, LISTEN or session advisory lock is ever taken on one: those
    use a connection of their own, `connect`), and an open transaction is still rolled back by
    the pool before this runs.
    """


def describe(exc: BaseException) -> str:
    """Return a one-line description of a driver or socket error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
