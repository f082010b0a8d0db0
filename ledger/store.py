"""The event store: gap-free per-account streams in PostgreSQL, idempotent appends, ordered reads.

Appending locks the account's stream head (`SELECT ... FOR UPDATE` on its `streams` row), drops
events already stored (same `event_id`, or same natural key such as a broker `fill_id`), assigns
the next sequences and moves the head, all in the caller's transaction. The primary key
(account, sequence) is the backstop should two writers ever get past the lock.

Readers that follow the store track (account, sequence), never a global serial alone: a global
position is assigned at insert but becomes visible at commit, so a later position can be seen
before an earlier one commits. Must not import Kafka clients or the CLI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg

from ledger.errors import ConcurrencyConflict, InvalidEvent, UnknownAccount
from ledger.events import Event, decode_event, natural_key

READ_BATCH_SIZE = 1000
# Types whose natural key is a real identity (broker fill, signal, intent, a close at an instant).
# Settings such as LimitsSet have no such key: two of them at one instant are two events.
KEYED_TYPES = frozenset(
    {"OrderFilled", "PositionClosed", "SignalEvaluated", "IntentIssued", "IntentRejected",
     "IntentExpired"}
)

# One decode path for everything read back: the row is rendered as the event's JSON and goes
# through the same validation as input does.
EVENT_JSON_SQL = """json_build_object(
    'event_id', event_id, 'account', account, 'type', type,
    'occurred_at', to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'data', data, 'sequence', sequence,
    'recorded_at', to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'global_position', global_position)::text"""

_INSERT_SQL = """
WITH incoming AS (
    SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::jsonb[])
        WITH ORDINALITY AS t(event_id, type, natural_key, occurred_at, data, ord)
), fresh AS (
    SELECT i.*, $7::bigint + row_number() OVER (ORDER BY i.ord) AS sequence
    FROM incoming i
    WHERE NOT EXISTS (
        SELECT 1 FROM events e WHERE e.account = $1 AND e.event_id = i.event_id)
      AND (i.natural_key IS NULL OR NOT EXISTS (
        SELECT 1 FROM events e
        WHERE e.account = $1 AND e.type = i.type AND e.natural_key = i.natural_key))
)
INSERT INTO events (account, sequence, event_id, type, natural_key, occurred_at, data)
SELECT $1, sequence, event_id, type, natural_key, occurred_at, data FROM fresh ORDER BY sequence
RETURNING event_id, sequence
"""


@dataclass(frozen=True, kw_only=True)
class AppendResult:
    """What one append did to one account's stream."""

    account: str
    head: int
    appended: dict[UUID, int] = field(default_factory=dict)
    duplicates: list[UUID] = field(default_factory=list)


async def lock_head(conn: asyncpg.Connection, account: str) -> int:
    """Lock the account's stream head until the transaction ends and return it.

    Raises:
        UnknownAccount: the account has no stream (or the session's role cannot see it).
    """
    head = await conn.fetchval("SELECT head FROM streams WHERE account = $1 FOR UPDATE", account)
    if head is None:
        raise UnknownAccount(account)
    return int(head)


async def append_locked(
    conn: asyncpg.Connection, account: str, head: int, events: Sequence[Event]
) -> AppendResult:
    """Append events to a stream whose head the caller holds locked at `head`."""
    fresh = _drop_repeats(events)
    rows = await conn.fetch(
        _INSERT_SQL,
        account,
        [event.event_id for event in fresh],
        [event.type for event in fresh],
        [_stored_natural_key(event) for event in fresh],
        [event.occurred_at for event in fresh],
        [event.data.model_dump_json() for event in fresh],
        head,
    )
    appended = {row["event_id"]: int(row["sequence"]) for row in rows}
    new_head = head + len(appended)
    if appended:
        await conn.execute("UPDATE streams SET head = $2 WHERE account = $1", account, new_head)
    stored = {id(event) for event in fresh if event.event_id in appended}
    duplicates = [event.event_id for event in events if id(event) not in stored]
    assert len(appended) + len(duplicates) == len(events)
    return AppendResult(account=account, head=new_head, appended=appended, duplicates=duplicates)


async def append(
    conn: asyncpg.Connection,
    account: str,
    events: Sequence[Event],
    expected_sequence: int | None = None,
) -> AppendResult:
    """Append events to one account's stream in one transaction; stored ones count as duplicates.

    Raises:
        UnknownAccount: the account has no stream.
        ConcurrencyConflict: `expected_sequence` is given and the head is elsewhere.
        InvalidEvent: an event names another account.
    """
    _check_one_account(account, events)
    async with conn.transaction():
        head = await lock_head(conn, account)
        if expected_sequence is not None and head != expected_sequence:
            raise ConcurrencyConflict(account, expected_sequence, head)
        return await append_locked(conn, account, head, events)


async def read_stream(
    conn: asyncpg.Connection,
    account: str,
    after_sequence: int = 0,
    batch_size: int = READ_BATCH_SIZE,
) -> list[Event]:
    """Return up to `batch_size` events of one account after a sequence, in sequence order."""
    rows = await conn.fetch(
        f"SELECT {EVENT_JSON_SQL} FROM events WHERE account = $1 AND sequence > $2 "
        "ORDER BY sequence LIMIT $3",
        account, after_sequence, batch_size,
    )
    return [decode_event(row[0]) for row in rows]


async def iterate_stream(
    conn: asyncpg.Connection,
    account: str,
    after_sequence: int = 0,
    up_to_sequence: int | None = None,
) -> AsyncIterator[Event]:
    """Yield one account's events after a sequence, page by page, never holding the whole stream."""
    position = after_sequence
    while True:
        page = await read_stream(conn, account, position)
        for event in page:
            assert event.sequence is not None
            if up_to_sequence is not None and event.sequence > up_to_sequence:
                return
            yield event
        if len(page) < READ_BATCH_SIZE:
            return
        last = page[-1].sequence
        assert last is not None
        position = last


async def read_heads(conn: asyncpg.Connection) -> dict[str, int]:
    """Return every visible account's head."""
    rows = await conn.fetch("SELECT account, head FROM streams ORDER BY account")
    return {row["account"]: int(row["head"]) for row in rows}


async def account_exists(conn: asyncpg.Connection, account: str) -> bool:
    """Return whether the account has a stream."""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM streams WHERE account = $1)",
                                    account))


async def create_stream(conn: asyncpg.Connection, account: str) -> bool:
    """Create the account's stream if it is missing; return True if it was created."""
    status = await conn.execute(
        "INSERT INTO streams (account) VALUES ($1) ON CONFLICT (account) DO NOTHING", account
    )
    return bool(status == "INSERT 0 1")


def _stored_natural_key(event: Event) -> str | None:
    return natural_key(event) if event.type in KEYED_TYPES else None


def _drop_repeats(events: Sequence[Event]) -> list[Event]:
    """Keep the first of events that repeat an event_id or natural key within one batch."""
    seen_ids: set[UUID] = set()
    seen_keys: set[tuple[str, str]] = set()
    kept: list[Event] = []
    for event in events:
        key = _stored_natural_key(event)
        if event.event_id in seen_ids or (key is not None and (event.type, key) in seen_keys):
            continue
        seen_ids.add(event.event_id)
        if key is not None:
            seen_keys.add((event.type, key))
        kept.append(event)
    return kept


def _check_one_account(account: str, events: Sequence[Event]) -> None:
    for event in events:
        if event.account != account:
            raise InvalidEvent("account", event.account, f"does not match the stream {account!r}")
