"""Rebuild and verify projections from the store, through the same fold as the projector.

Rebuild folds an account's stream page by page (never the whole store in memory), then swaps the
result in with one short transaction per account: lock the account's projection row, fold the
tail appended meanwhile, replace the rows. Other accounts, and the projector on them, never wait.
Verify reads the live rows and the store in one snapshot and compares them row for row. Time
travel folds the stream up to a moment. Must not import Kafka clients or the CLI.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from itertools import takewhile
from typing import TYPE_CHECKING

from ledger import store
from ledger.db import connect
from projections import replay, tables
from projections.fold import AccountState, fold, initial_state

if TYPE_CHECKING:
    from ledger.db import Conn

Progress = Callable[[int], None]


@dataclass(frozen=True, kw_only=True)
class Rebuilt:
    account: str
    sequence: int


async def fold_stream(conn: Conn, account: str, *, up_to_sequence: int | None = None,
                      progress: Progress | None = None) -> AccountState:
    """Fold an account's stored events (up to a sequence), page by page."""
    state = initial_state(account)
    async for page in store.pages(conn, account, up_to_sequence=up_to_sequence):
        state = fold(page, state)
        if progress is not None:
            progress(len(page))
    return state


async def rebuild_account(conn: Conn, account: str,
                          progress: Progress | None = None) -> Rebuilt:
    """Recompute one account's projection from the store and swap it in."""
    state = await fold_stream(conn, account, progress=progress)
    async with conn.transaction():
        await tables.applied_sequence(conn, account, lock=True)
        tail = [e async for e in store.iterate_stream(conn, account, state.sequence)]
        state = fold(tail, state)
        await tables.replace_state(conn, state)
    if progress is not None:
        progress(len(tail))
    return Rebuilt(account=account, sequence=state.sequence)


async def verify_account(conn: Conn, account: str) -> list[tables.Difference]:
    """Compare the live projection of an account with a rebuild at the same sequence."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        live = await tables.load_state(conn, account)
        head = int(await conn.fetchval("SELECT head FROM streams WHERE account = $1", account)
                   or 0)
        # The projector may trail the head; compare what it has applied with the same prefix.
        rebuilt = await fold_stream(conn, account, up_to_sequence=live.sequence)
        found = tables.differences(live, rebuilt)
    if live.sequence > head:
        found.append(tables.Difference(account=account, table="projection_accounts",
                                       key="applied_sequence", live=str(live.sequence),
                                       rebuilt=f"at most the head {head}"))
    return found


async def state_as_of(conn: Conn, account: str, moment: datetime) -> AccountState:
    """Fold the account's stream up to the first event that occurred after `moment`."""
    state = initial_state(account)
    async for page in store.pages(conn, account):
        prefix = list(takewhile(lambda event: event.occurred_at <= moment, page))
        state = fold(prefix, state)
        if len(prefix) < len(page):
            break
    return state


async def accounts(conn: Conn) -> list[tuple[str, int]]:
    """Return every account with its head, in name order."""
    return list((await store.read_heads(conn)).items())


# --- Several accounts, several processes --------------------------------------------------------


def _work_chunk(dsn: str, verify: bool, accounts: list[str]) -> list[tables.Difference]:
    """Rebuild or verify a chunk of accounts in a worker process of its own."""
    return asyncio.run(_work_chunk_async(dsn, accounts, verify))


async def _work_chunk_async(dsn: str, accounts: list[str],
                            verify: bool) -> list[tables.Difference]:
    conn = await connect(dsn)
    found: list[tables.Difference] = []
    try:
        await conn.execute("SET TIME ZONE 'UTC'")
        for account in accounts:
            if verify:
                found.extend(await verify_account(conn, account))
            else:
                await rebuild_account(conn, account)
    finally:
        await conn.close()
    return found


async def rebuild_many(dsn: str, targets: list[tuple[str, int]], *, verify: bool, jobs: int,
                       progress: Progress | None = None) -> list[tables.Difference]:
    """Rebuild or verify many accounts with `jobs` worker processes (each account in one)."""
    heads = dict(targets)
    found: list[tables.Difference] = []

    def done(chunk: list[str], differences: list[tables.Difference]) -> None:
        found.extend(differences)
        if progress is not None:
            progress(sum(heads[account] for account in chunk))

    await replay.run_chunks(functools.partial(_work_chunk, dsn, verify), targets, jobs, done)
    return sorted(found, key=lambda difference: (difference.account, difference.table,
                                                 difference.key))
