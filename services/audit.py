"""`ledger audit`: replay the store per account and report every limit breach, every
reconciliation with the broker and every discrepancy.

Reads each account's stream page by page (never the whole store in memory) and feeds it to the
pure breach finder of projections/breaches.py, which folds with the same fold as the projector
and the dispatcher and finds discrepancies with the same function as ingest. Rendering (tables,
terminal chart, PNG) lives in console/charts.py. Must not import Kafka clients.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from ledger import store
from ledger.db import connect
from ledger.errors import UnknownAccount
from ledger.events import validate_account_name
from projections import replay
from projections.breaches import AccountAudit, BreachFinder

if TYPE_CHECKING:
    from ledger.db import Conn

Progress = Callable[[int], None]


async def audit_account(conn: Conn, account: str, *, window_from: datetime | None = None,
                        window_to: datetime | None = None,
                        progress: Progress | None = None) -> AccountAudit:
    """Replay one account's stream through the breach finder (breaches, reconciliations,
    discrepancies)."""
    finder = BreachFinder(account, window_from=window_from, window_to=window_to)
    async for page in store.pages(conn, account):
        finder.feed_many(page)
        if progress is not None:
            progress(len(page))
        if finder.done:
            break
    return finder.finish()


async def audit(conn: Conn, account: str | None, *, window_from: datetime | None = None,
                window_to: datetime | None = None,
                progress: Progress | None = None) -> list[AccountAudit]:
    """Audit one account, or every account in name order.

    Raises:
        UnknownAccount: the named account has no stream.
    """
    if account is not None:
        validate_account_name(account)
        if not await store.account_exists(conn, account):
            raise UnknownAccount(account)
        accounts = [account]
    else:
        accounts = list(await store.read_heads(conn))
    return [await audit_account(conn, name, window_from=window_from, window_to=window_to,
                                progress=progress) for name in accounts]


def _audit_chunk(dsn: str, window_from: datetime | None, window_to: datetime | None,
                 accounts: list[str]) -> list[AccountAudit]:
    """Audit a chunk of accounts in a worker process of its own."""
    return asyncio.run(_audit_chunk_async(dsn, accounts, window_from, window_to))


async def _audit_chunk_async(dsn: str, accounts: list[str], window_from: datetime | None,
                             window_to: datetime | None) -> list[AccountAudit]:
    conn = await connect(dsn)
    try:
        return [await audit_account(conn, account, window_from=window_from,
                                    window_to=window_to) for account in accounts]
    finally:
        await conn.close()


async def audit_many(dsn: str, targets: list[tuple[str, int]], *, jobs: int,
                     window_from: datetime | None = None, window_to: datetime | None = None,
                     progress: Progress | None = None) -> list[AccountAudit]:
    """Audit many accounts over `jobs` worker processes; results in account name order."""
    heads = dict(targets)
    found: dict[str, AccountAudit] = {}

    def done(chunk: list[str], audits: list[AccountAudit]) -> None:
        found.update((audit.account, audit) for audit in audits)
        if progress is not None:
            progress(sum(heads[account] for account in chunk))

    await replay.run_chunks(functools.partial(_audit_chunk, dsn, window_from, window_to),
                             targets, jobs, done)
    return [found[account] for account in sorted(found)]
