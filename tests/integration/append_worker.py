"""A separate process that appends events one transaction at a time (for the concurrency test).

Usage: python -m tests.integration.append_worker DSN ACCOUNT WORKER COUNT
"""

from __future__ import annotations

import asyncio
import sys

from ledger import store
from ledger.db import connect
from tests.factories import fill


async def run(dsn: str, account: str, worker: int, count: int) -> None:
    conn = await connect(dsn)
    try:
        for index in range(count):
            await store.append(conn, account, [fill(account, f"W{worker}-F{index}")])
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
