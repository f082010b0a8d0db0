"""The projection's rows against the fold: what a batch writes reads back as the same state.

Method: a stream of intents issued over several minutes (so the look-back of the rate and
duplicate gates fills up, and earlier intents fall out of it) is saved batch by batch the way
the projector saves it; after every batch the rows must read back as the fold of the stream so
far, recent intents included and in the fold's order, and no row may outlive its window.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from console import commands
from ledger import store
from ledger.events import Event, decode_event
from ledger.settings import Settings
from projections import tables
from projections.fold import fold, initial_state
from tests.factories import event_json, limits

pytestmark = [pytest.mark.pg]

START = datetime(2026, 2, 3, 14, 30, tzinfo=UTC)


def issued(account: str, index: int, at: datetime) -> Event:
    data = {"intent_id": f"I-{index}", "signal_id": f"S-{index}", "position_id": f"P-{index}",
            "symbol": f"SYM{index % 3} 260220P00400000", "instrument": "option",
            "side": "long", "quantity": str(1 + index % 4), "limit_price": "1.25",
            "multiplier": "100",
            "expires_at": (at + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
    return decode_event(event_json(account, "IntentIssued", data,
                                   occurred_at=at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")))


async def test_save_state_batch_by_batch_reads_back_as_the_fold_with_recent_intents_in_order(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str],
) -> None:
    account = account_name("rows")
    await commands.add_account(settings, account, None)
    rng = random.Random(7)
    at, events = START, [limits(account, 10**6, "1000000000")]
    for index in range(600):
        # Not monotonic: a little out of order now and then, as clocks are.
        at += timedelta(milliseconds=rng.randint(-200, 900))
        events.append(issued(account, index, at))
    await store.append(admin, account, events)
    stored = await store.read_stream(admin, account, batch_size=100_000)

    await tables.ensure_row(admin, account)
    saved, done = initial_state(account), 0
    while done < len(stored):
        batch = stored[done:done + rng.randint(1, 80)]
        done += len(batch)
        after = fold(batch, saved)
        async with admin.transaction():
            await tables.save_state(admin, saved, after)
        saved = after
        loaded = await tables.load_state(admin, account)
        assert loaded == fold(stored[:done], account=account), done
        assert tables.differences(loaded, saved) == []

    rows = await admin.fetchval("SELECT count(*) FROM projection_recent WHERE account = $1",
                                account)
    assert 0 < len(saved.recent_intents) == rows < 600
