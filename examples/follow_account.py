"""Print one account's events as they happen, from the first on (Ctrl-C stops).

    .venv/bin/python examples/follow_account.py large

Catches up from PostgreSQL, then follows `ledger-events`: every event once, in sequence order.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from ledger.settings import load_settings
from services.follow import follow


async def main(account: str) -> None:
    async for event in follow(load_settings(), account, from_sequence=1):
        print(event.sequence, event.type, event.occurred_at.isoformat(), flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(sys.argv[1]))
