"""The event store: gap-free per-account streams in PostgreSQL, idempotent appends, ordered reads.

Appending is one call of `ledger_append` (migrations/0005): it locks the account's stream head
(`SELECT ... FOR UPDATE` on its `streams` row), drops events already stored (same `event_id`, or
same natural key such as a broker `fill_id`), assigns the next sequences and moves the head, in
one statement. The primary key (account, sequence) is the backstop should two writers ever get
past the lock.

Readers that follow the store track (account, sequence), never a global serial alone: a global
position is assigned at insert but becomes visible at commit, so a later position can be seen
before an earlier one commits. Must not import Kafka clients or the CLI.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

if TYPE_CHECKING:
    from ledger.db import Conn

from ledger import metrics
from ledger.errors import AppendRefused, ConcurrencyConflict, InvalidEvent, UnknownAccount
from ledger.events import (
    KEYED_TYPES,
    Event,
    EventType,
    IntentFate,
    decode_event,
    intent_key,
    natural_key,
)

READ_BATCH_SIZE = 1000
# SQLSTATEs raised by ledger_append and ledger_lock_head (migrations/0011_least_privilege.sql).
_UNKNOWN_ACCOUNT = "LG001"
_WRONG_EXPECTED_SEQUENCE = "LG002"
_NOT_PERMITTED = "LG003"
_MALFORMED = "LG004"

# One decode path for everything read back: the row is rendered as the event's JSON and goes
# through the same validation as input does.
EVENT_JSON_SQL = """json_build_object(
    'event_id', event_id, 'account', account, 'type', type,
    'occurred_at', to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'data', data, 'sequence', sequence,
    'recorded_at', to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'global_position', global_position)::text"""

_APPEND_SQL = "SELECT previous_head, appended FROM ledger_append($1, $2, $3, $4, $5, $6, $7)"


@dataclass(frozen=True, kw_only=True)
class AppendResult:
    """What one append did to one account's stream."""

    account: str
    head: int
    appended: dict[UUID, int] = field(default_factory=dict)
    duplicates: list[UUID] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class PreparedBatch:
    """Events of one account encoded for `ledger_append`: pure CPU work, done ahead of I/O."""

    account: str
    events: Sequence[Event]
    arguments: tuple[list[Any], ...]


def prepare(account: str, events: Sequence[Event]) -> PreparedBatch:
    """Encode a batch for appending.

    Raises:
        InvalidEvent: an event names another account.
    """
    for event in events:
        if event.account != account:
            raise InvalidEvent("account", event.account, f"does not match the stream {account!r}")
    arguments = (
        [event.event_id for event in events],
        [event.type for event in events],
        [natural_key(event) if event.type in KEYED_TYPES else None for event in events],
        [event.occurred_at for event in events],
        [event.data.model_dump_json() for event in events],
    )
    return PreparedBatch(account=account, events=events, arguments=arguments)


async def append_prepared(
    conn: Conn, batch: PreparedBatch, expected_sequence: int | None = None
) -> AppendResult:
    """Append a prepared batch in one statement (its own transaction, or the caller's).

    Raises:
        UnknownAccount: the account has no stream (or the session's role cannot see it).
        ConcurrencyConflict: `expected_sequence` is given and the head is elsewhere.
        AppendRefused: the session's role may not append these events to this account, or the
            database found them malformed.
    """
    started = time.perf_counter()
    try:
        row = await conn.fetchrow(_APPEND_SQL, batch.account, expected_sequence,
                                  *batch.arguments)
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == _WRONG_EXPECTED_SEQUENCE:
            assert expected_sequence is not None
            head = int(getattr(exc, "detail", None) or -1)
            raise ConcurrencyConflict(batch.account, expected_sequence, head) from None
        _translate(exc, batch.account)
        raise
    assert row is not None
    metrics.APPEND_SECONDS.observe(time.perf_counter() - started)
    previous_head = int(row["previous_head"])
    appended = {event_id: previous_head + index
                for index, event_id in enumerate(row["appended"], start=1)}
    duplicates = _duplicates(batch.events, appended)
    assert len(appended) + len(duplicates) == len(batch.events)
    return AppendResult(account=batch.account, head=previous_head + len(appended),
                        appended=appended, duplicates=duplicates)


class AppendPipeline:
    """Append batches in order on one connection, encoding each while the server runs the last.

    The client's CPU work (decoding lines, encoding the next batch) then overlaps the server's,
    which on two cores is most of the difference to a bare COPY.
    """

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._in_flight: asyncio.Task[AppendResult] | None = None

    async def submit(self, account: str, events: Sequence[Event]) -> AppendResult | None:
        """Start appending a batch; return the result of the previous one, if any."""
        batch = prepare(account, events)
        finished = await self.finish()
        self._in_flight = asyncio.create_task(append_prepared(self._conn, batch))
        # One turn of the loop lets the task send its statement before the caller's next CPU work.
        await asyncio.sleep(0)
        return finished

    async def finish(self) -> AppendResult | None:
        """Wait for the batch in flight and return its result."""
        if self._in_flight is None:
            return None
        task, self._in_flight = self._in_flight, None
        return await task


async def append(
    conn: Conn,
    account: str,
    events: Sequence[Event],
    expected_sequence: int | None = None,
) -> AppendResult:
    """Append events to one account's stream atomically; stored ones count as duplicates.

    Raises:
        UnknownAccount: the account has no stream.
        ConcurrencyConflict: `expected_sequence` is given and the head is elsewhere.
        InvalidEvent: an event names another account.
    """
    return await append_prepared(conn, prepare(account, events), expected_sequence)


async def lock_head(conn: Conn, account: str) -> int:
    """Lock the account's stream head until the transaction ends and return it.

    Raises:
        UnknownAccount: the account has no stream (or the session's role cannot see it).
        AppendRefused: the session's role may not write to this account.
    """
    try:
        head = await conn.fetchval("SELECT ledger_lock_head($1)", account)
    except asyncpg.PostgresError as exc:
        _translate(exc, account)
        raise
    assert head is not None
    return int(head)


@dataclass(frozen=True, kw_only=True)
class DecisionContext:
    """What a decision reads under the head lock, in one round trip (`decision_context`)."""

    head: int
    # The stored events of the natural keys asked about (earlier decisions), in sequence order.
    previous: list[Event]
    # The events after `since` up to the head; None when they were not read (no `since`, or
    # more of them than the bound).
    tail: list[Event] | None


async def decision_context(conn: Conn, account: str, keys: Sequence[str], since: int | None,
                           bound: int) -> DecisionContext:
    """Lock the account's head; return it, the events stored under `keys`, and the tail after
    `since` (when at most `bound` events long), all read after the lock was granted.

    Call it inside a transaction: the lock is held until that transaction ends.

    Raises:
        UnknownAccount: the account has no stream (or the session's role cannot see it).
        AppendRefused: the session's role may not write to this account.
    """
    try:
        row = await conn.fetchrow("SELECT head, previous, tail FROM ledger_decision_context("
                                  "$1, $2, $3, $4)", account, list(keys), since, bound)
    except asyncpg.PostgresError as exc:
        _translate(exc, account)
        raise
    assert row is not None
    assert row["head"] is not None
    tail = row["tail"]
    return DecisionContext(
        head=int(row["head"]), previous=[decode_event(raw) for raw in row["previous"]],
        tail=[decode_event(raw) for raw in tail] if tail is not None else None)


def _translate(exc: asyncpg.PostgresError, account: str) -> None:
    """Raise the ledger error for a SQLSTATE of the store's functions; return for any other."""
    if exc.sqlstate == _UNKNOWN_ACCOUNT:
        raise UnknownAccount(account) from None
    if exc.sqlstate in (_NOT_PERMITTED, _MALFORMED):
        raise AppendRefused(account, str(exc).strip().splitlines()[0],
                            permitted=exc.sqlstate == _MALFORMED) from None


def _duplicates(events: Sequence[Event], appended: dict[UUID, int]) -> list[UUID]:
    """Return the ids of the events not appended; a repeat of an appended id is a duplicate."""
    claimed: set[UUID] = set()
    duplicates = []
    for event in events:
        if event.event_id in appended and event.event_id not in claimed:
            claimed.add(event.event_id)
        else:
            duplicates.append(event.event_id)
    return duplicates


async def stored_identities(conn: Conn, account: str, events: Sequence[Event]) -> set[object]:
    """Return which of the events' ids and natural keys the account's stream already holds."""
    keys = [natural_key(event) for event in events if event.type in KEYED_TYPES]
    rows = await conn.fetch(
        "SELECT event_id, natural_key FROM events WHERE account = $1 "
        "AND (event_id = ANY($2::uuid[]) OR natural_key = ANY($3::text[]))",
        account, [event.event_id for event in events], keys)
    found: set[object] = set()
    for row in rows:
        found.add(row["event_id"])
        if row["natural_key"] is not None:
            found.add(row["natural_key"])
    return found


# How an intent ended, by the type of the event that ended it (a fill aside).
_FATES: dict[EventType, IntentFate] = {
    "IntentExpired": "expired", "IntentRejected": "rejected", "IntentCancelled": "cancelled"}


async def intent_fates(conn: Conn, account: str,
                       intent_ids: Sequence[str]) -> dict[str, IntentFate]:
    """Return how each of the intents that was expired, rejected or cancelled ended."""
    if not intent_ids:
        return {}
    keys = {intent_key(kind, intent_id): (intent_id, fate)
            for intent_id in intent_ids for kind, fate in _FATES.items()}
    rows = await conn.fetch(
        "SELECT natural_key FROM events WHERE account = $1 AND natural_key = ANY($2::text[]) "
        "ORDER BY sequence", account, list(keys))
    # The first end on record is how it ended.
    fates: dict[str, IntentFate] = {}
    for row in rows:
        intent_id, fate = keys[row["natural_key"]]
        fates.setdefault(intent_id, fate)
    return fates


async def read_stream(
    conn: Conn,
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


async def pages(
    conn: Conn,
    account: str,
    after_sequence: int = 0,
    up_to_sequence: int | None = None,
) -> AsyncIterator[list[Event]]:
    """Yield one account's events after a sequence (up to another), a page at a time.

    The one paging loop of the project: replay, rebuild, verify, as-of, audit and the tails read
    through it, so none holds a whole stream in memory.
    """
    position = after_sequence
    while up_to_sequence is None or position < up_to_sequence:
        page = await read_stream(conn, account, position)
        full = len(page) == READ_BATCH_SIZE
        if up_to_sequence is not None:
            page = [event for event in page
                    if event.sequence is not None and event.sequence <= up_to_sequence]
        if not page:
            return
        yield page
        if not full:
            return
        last = page[-1].sequence
        assert last is not None
        position = last


async def iterate_stream(
    conn: Conn,
    account: str,
    after_sequence: int = 0,
    up_to_sequence: int | None = None,
) -> AsyncIterator[Event]:
    """Yield one account's events after a sequence (up to another), one by one."""
    async for page in pages(conn, account, after_sequence, up_to_sequence):
        for event in page:
            yield event


async def read_heads(conn: Conn) -> dict[str, int]:
    """Return every visible account's head."""
    rows = await conn.fetch("SELECT account, head FROM streams ORDER BY account")
    return {row["account"]: int(row["head"]) for row in rows}


async def account_exists(conn: Conn, account: str) -> bool:
    """Return whether the account has a stream."""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM streams WHERE account = $1)",
                                    account))


async def create_stream(conn: Conn, account: str) -> bool:
    """Create the account's stream if it is missing; return True if it was created."""
    status = await conn.execute(
        "INSERT INTO streams (account) VALUES ($1) ON CONFLICT (account) DO NOTHING", account
    )
    return bool(status == "INSERT 0 1")
