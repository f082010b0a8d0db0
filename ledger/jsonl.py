"""JSONL import and export of the store: streaming, idempotent, all or nothing by default.

Import reads the file twice and never holds it in memory: the first pass validates every line and
collects the accounts it names; only if that pass finds nothing wrong (or the user asked to skip
bad lines) does the second pass append, in batches of one account each. Appends are idempotent,
so an import interrupted during the second pass completes when it is run again. Must not import
Kafka clients or the CLI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from ledger.db import Conn

from ledger import store
from ledger.errors import InvalidEvent, UnknownAccount
from ledger.events import Event, decode_event, encode_event, refuse_future

APPEND_BATCH_SIZE = 1000
# Past this many, bad lines are counted but not kept, so a wholly bad file cannot exhaust memory.
BAD_LINES_KEPT_MAX = 1000
EXPORT_FETCH_SIZE = 2000

Progress = Callable[[int], None]


@dataclass(kw_only=True)
class ImportReport:
    """What an import found and did."""

    lines: int = 0
    appended: int = 0
    duplicates: int = 0
    bad_count: int = 0
    bad: list[InvalidEvent] = field(default_factory=list)
    accounts: set[str] = field(default_factory=set)


def _lines(path: Path) -> Iterator[tuple[int, bytes, int]]:
    """Yield (line number, content, bytes consumed) for every non-blank line."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                yield number, raw, len(raw)
            elif raw:
                continue


@dataclass(frozen=True, kw_only=True)
class Bounds:
    """What a line may not exceed beyond the contract: a time after now + clock_skew."""

    now: datetime
    clock_skew: timedelta


def _decode_line(raw: bytes, number: int, bounds: Bounds) -> Event:
    event = decode_event(raw, line=number)
    try:
        refuse_future(event.occurred_at, bounds.now, bounds.clock_skew)
    except InvalidEvent as exc:
        raise exc.at_line(number) from None
    return event


def validate_file(path: Path, skip_bad: bool, bounds: Bounds,
                  progress: Progress | None = None) -> ImportReport:
    """Validate every line of a file and collect the accounts it names.

    Raises:
        InvalidEvent: a line is bad and `skip_bad` is false (the error names line, field, value).
    """
    report = ImportReport()
    for number, raw, size in _lines(path):
        report.lines += 1
        try:
            event = _decode_line(raw, number, bounds)
        except InvalidEvent as exc:
            if not skip_bad:
                raise
            _note_bad(report, exc)
        else:
            report.accounts.add(event.account)
        if progress is not None:
            progress(size)
    return report


async def append_file(
    conn: Conn,
    path: Path,
    report: ImportReport,
    bounds: Bounds,
    progress: Progress | None = None,
) -> None:
    """Append the valid lines of an already validated file, batched per account."""
    pipeline = store.AppendPipeline(conn)
    pending: dict[str, list[Event]] = {}
    for number, raw, size in _lines(path):
        try:
            event = _decode_line(raw, number, bounds)
        except InvalidEvent:
            continue
        batch = pending.setdefault(event.account, [])
        batch.append(event)
        if len(batch) >= APPEND_BATCH_SIZE:
            _count(report, await pipeline.submit(event.account, batch))
            pending[event.account] = []
        if progress is not None:
            progress(size)
    for account, batch in pending.items():
        if batch:
            _count(report, await pipeline.submit(account, batch))
    _count(report, await pipeline.finish())


async def check_accounts(
    conn: Conn,
    accounts: set[str],
    create: Callable[[str], Awaitable[bool]] | None,
) -> None:
    """Make sure every account exists, creating missing ones when a creator is given.

    Raises:
        UnknownAccount: an account is missing and no creator was given.
    """
    for account in sorted(accounts):
        if await store.account_exists(conn, account):
            continue
        if create is None:
            raise UnknownAccount(account)
        await create(account)


def _count(report: ImportReport, result: store.AppendResult | None) -> None:
    if result is not None:
        report.appended += len(result.appended)
        report.duplicates += len(result.duplicates)


def _note_bad(report: ImportReport, error: InvalidEvent) -> None:
    report.bad_count += 1
    if len(report.bad) < BAD_LINES_KEPT_MAX:
        report.bad.append(error)


async def export(conn: Conn, account: str | None, out: BinaryIO) -> int:
    """Write events as JSONL in recorded order, from one consistent snapshot; return the count."""
    where = "WHERE account = $1" if account is not None else ""
    args = [account] if account is not None else []
    count = 0
    # One REPEATABLE READ snapshot: every committed event is in it, so ordering by global
    # position cannot skip a late commit here (unlike a reader that tails the table).
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        cursor = conn.cursor(
            f"SELECT {store.EVENT_JSON_SQL} FROM events {where} ORDER BY global_position",
            *args, prefetch=EXPORT_FETCH_SIZE,
        )
        async for row in cursor:
            # Through the contract's own encoder: the same shapes as every other output.
            out.write(encode_event(decode_event(row[0])))
            out.write(b"\n")
            count += 1
    out.flush()
    return count
