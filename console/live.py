"""`ledger status --watch`: a live console of every account the login may see, until Ctrl-C.

Two halves: `read_accounts` reads every figure in one REPEATABLE READ READ ONLY snapshot (the
projection plus the store's tail, proven by `state_at_head` as `ledger positions` does), and
`render` turns what was read into a rich renderable without any I/O. A projection too far behind
to prove is shown as behind, never as figures; an unreachable database as such, never as the
last figures read. Reads only: it never writes, locks or takes a head lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from console import commands
from dispatcher.gates import Decision
from ledger import store
from ledger.clock import utc_now
from ledger.db import connect
from ledger.events import SignalEvaluated, decode_event
from ledger.money import money_text
from ledger.runtime import OPERATING_ERRORS, one_line, stop_event_on_signals
from ledger.settings import Settings
from projections.current import state_at_head
from projections.fold import AccountState

REFRESH_S = 1.0
DECISIONS_SHOWN = 3
# The decisions are looked for among this many events before the head: an account with a long
# history and no recent decision must not cost a scan of its whole stream every refresh.
DECISIONS_LOOKBACK = 5_000
BAR_WIDTH = 10
CLOSE_TIMEOUT_S = 1.0
PIPED_WIDTH = 160
_FULL, _EMPTY = "█", "░"


@dataclass(frozen=True, kw_only=True)
class SeenDecision:
    """One SignalEvaluated as the console shows it."""

    at: datetime
    symbol: str
    allowed: bool
    # The first failed gate (dispatcher.gates.Decision.code); None when allowed.
    gate: str | None


@dataclass(frozen=True, kw_only=True)
class AccountFigures:
    """What one refresh read of one account, all from the same snapshot."""

    account: str
    head: int
    # How far the projection's own rows had got (the source `state_at_head` folded onto).
    projected: int
    # How far the relay had published; None when this login may not read relay_positions.
    published: int | None
    # The state proven at the head; None when the projection was too far behind to prove it.
    state: AccountState | None
    decisions: tuple[SeenDecision, ...] = ()

    @property
    def projection_lag(self) -> int:
        """Events the projection had not applied."""
        return self.head - self.projected

    @property
    def relay_lag(self) -> int | None:
        """Events the relay had not published; None when unknown to this login."""
        return None if self.published is None else self.head - self.published


@dataclass(frozen=True, kw_only=True)
class Reading:
    """One refresh: every visible account, or why the database could not be read."""

    at: datetime
    accounts: tuple[AccountFigures, ...] = ()
    unreachable: str | None = None


# --- Reading ------------------------------------------------------------------------------------


async def read_accounts(conn: asyncpg.Connection, *, fold_bound: int) -> list[AccountFigures]:
    """Read every account the login may see, in one REPEATABLE READ READ ONLY snapshot.

    Row-level security decides which accounts that is: all of them for the administrator and
    the job roles, its own for an account's role.
    """
    figures = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        heads = await store.read_heads(conn)
        published = await _published(conn)
        for account, head in heads.items():
            proven = await state_at_head(conn, account, head, fold_bound=fold_bound)
            figures.append(AccountFigures(
                account=account, head=head, projected=proven.source_sequence,
                published=None if published is None else published.get(account, 0),
                state=proven.state if proven.current else None,
                decisions=await _decisions(conn, account, head)))
    return figures


async def _published(conn: asyncpg.Connection) -> dict[str, int] | None:
    # A savepoint: a refused read must not abort the snapshot the other figures come from.
    try:
        async with conn.transaction():
            rows = await conn.fetch("SELECT account, published_sequence FROM relay_positions")
    except asyncpg.InsufficientPrivilegeError:
        return None
    return {row["account"]: int(row["published_sequence"]) for row in rows}


async def _decisions(conn: asyncpg.Connection, account: str,
                     head: int) -> tuple[SeenDecision, ...]:
    rows = await conn.fetch(
        f"SELECT {store.EVENT_JSON_SQL} FROM events WHERE account = $1 "
        "AND type = 'SignalEvaluated' AND sequence > $2 ORDER BY sequence DESC LIMIT $3",
        account, head - DECISIONS_LOOKBACK, DECISIONS_SHOWN)
    seen = []
    for row in rows:
        event = decode_event(row[0])
        data = event.data
        assert isinstance(data, SignalEvaluated), event.type
        code = Decision(allowed=data.allowed, gates=data.gates).code
        seen.append(SeenDecision(at=event.occurred_at, symbol=data.signal.symbol,
                                 allowed=data.allowed, gate=code))
    return tuple(seen)


class _Reader:
    """Keeps one connection across refreshes; a failed read drops it and the next reconnects."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._conn: asyncpg.Connection | None = None

    async def read(self) -> Reading:
        try:
            if self._conn is None:
                self._conn = await connect(self._settings.database_url)
                await self._conn.execute("SET TIME ZONE 'UTC'")
            found = await read_accounts(self._conn,
                                        fold_bound=self._settings.dispatcher_fold_bound)
        except OPERATING_ERRORS as exc:
            await self.close()
            return Reading(at=utc_now(), unreachable=one_line(exc))
        return Reading(at=utc_now(), accounts=tuple(found))

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # close() aborts the connection itself when it cannot end it politely.
            with contextlib.suppress(*OPERATING_ERRORS):
                await conn.close(timeout=CLOSE_TIMEOUT_S)


# --- Rendering ----------------------------------------------------------------------------------


def bar(used: Decimal, limit: Decimal, width: int = BAR_WIDTH) -> Text:
    """Return a bar of `used` against `limit`: green, yellow from 80 %, red at the limit."""
    # A limit of 0 allows nothing: anything used fills the bar.
    filled = min(width, int(used * width / limit)) if limit > 0 else (width if used > 0 else 0)
    if used >= limit and used > 0:
        style = "red"
    elif used * 5 >= limit * 4 and used > 0:
        style = "yellow"
    else:
        style = "green"
    shown = Text(_FULL * filled + _EMPTY * (width - filled), style=style)
    shown.stylize("dim", filled)
    return shown


def _state_cell(state: AccountState) -> Text:
    if state.trading_state == "active":
        return Text("active", style="green")
    style = "bold red" if state.trading_state == "halted" else "bold yellow"
    return Text(state.trading_state.upper(), style=style) + Text(f": {state.halt_reason}")


def _positions_cell(state: AccountState) -> Text:
    counted = state.open_positions + state.pending_count
    if state.limits is None:
        return Text(f"{counted}/- (no limits)")
    limit = state.limits.max_open_positions
    return bar(Decimal(counted), Decimal(limit)) + Text(f" {counted}/{limit}")


def _exposure_cell(state: AccountState) -> Text:
    if state.limits is None:
        return Text(f"{money_text(state.exposure)} / - (no limits)")
    limit = state.limits.max_exposure
    return bar(state.exposure, limit) + Text(
        f" {money_text(state.exposure)} / {money_text(limit)}")


def _figures_table(accounts: Sequence[AccountFigures]) -> Table:
    table = Table()
    table.add_column("account", no_wrap=True)
    table.add_column("state", min_width=12, max_width=40)
    table.add_column("positions", no_wrap=True)
    table.add_column("exposure", no_wrap=True)
    table.add_column("pending", justify="right", no_wrap=True)
    table.add_column("projection\nlag", justify="right", no_wrap=True)
    table.add_column("relay\nlag", justify="right", no_wrap=True)
    for figures in accounts:
        lag = f"{figures.projection_lag:,}"
        relay = "-" if figures.relay_lag is None else f"{figures.relay_lag:,}"
        state = figures.state
        if state is None:
            behind = Text(f"projection behind by {lag} events", style="bold red")
            table.add_row(figures.account, behind, "", "", "", lag, relay)
            continue
        table.add_row(figures.account, _state_cell(state), _positions_cell(state),
                      _exposure_cell(state), str(len(state.pending)), lag, relay)
    return table


def _decisions_table(accounts: Sequence[AccountFigures], now: datetime) -> Table:
    table = Table(title=f"last {DECISIONS_SHOWN} decisions per account", title_justify="left")
    table.add_column("account", no_wrap=True)
    table.add_column("time", no_wrap=True)
    table.add_column("decision", no_wrap=True)
    table.add_column("blocking gate", no_wrap=True)
    table.add_column("symbol", no_wrap=True, overflow="ellipsis")
    for figures in accounts:
        for seen in figures.decisions:
            when = seen.at.strftime("%H:%M:%S" if seen.at.date() == now.date()
                                    else "%Y-%m-%d %H:%M")
            verdict = (Text("allowed", style="green") if seen.allowed
                       else Text("blocked", style="red"))
            table.add_row(figures.account, when, verdict, seen.gate or "", seen.symbol)
    return table


def render(reading: Reading, interval_s: float) -> RenderableType:
    """Return one frame of the console: a header line, then the accounts or what went wrong."""
    parts = [f"ledger status --watch · {reading.at:%Y-%m-%d %H:%M:%S} UTC"]
    if reading.unreachable is None:
        count = len(reading.accounts)
        parts.append(f"{count} account{'' if count == 1 else 's'}")
    parts.append(f"refresh every {interval_s} s · Ctrl-C to quit")
    header = Text(" · ".join(parts), style="bold")
    body: RenderableType
    if reading.unreachable is not None:
        body = Text(f"database unreachable, retrying ({reading.unreachable})", style="bold red")
    elif not reading.accounts:
        body = Text("no accounts yet: `ledger accounts add NAME`")
    elif not any(figures.decisions for figures in reading.accounts):
        body = _figures_table(reading.accounts)
    else:
        body = Group(_figures_table(reading.accounts),
                     _decisions_table(reading.accounts, reading.at))
    return Group(header, body)


# --- The loop -----------------------------------------------------------------------------------


def _console() -> Console:
    # Piped, there is no width to fit: a log keeps the table as a 160-column terminal shows it.
    return commands.wide_console(PIPED_WIDTH)


@contextlib.contextmanager
def _screen(console: Console) -> Iterator[Callable[[RenderableType], None]]:
    """Yield what shows a frame: redrawn in place on a terminal, one after another when piped."""
    if not console.is_terminal:
        def show(frame: RenderableType) -> None:
            console.print(frame)
            console.print()

        yield show
        return
    # Not transient: the last frame stays on screen after Ctrl-C.
    with Live(console=console, auto_refresh=False) as live:
        def redraw(frame: RenderableType) -> None:
            live.update(frame, refresh=True)

        yield redraw


async def watch(settings: Settings, interval_s: float = REFRESH_S) -> None:
    """Draw the live console until Ctrl-C, refreshing every interval_s seconds."""
    stop = stop_event_on_signals()
    reader = _Reader(settings)
    try:
        with _screen(_console()) as show:
            while not stop.is_set():
                reading = await _unless_stopped(reader.read(), stop)
                if reading is None:
                    break
                show(render(reading, interval_s))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)
    finally:
        await reader.close()


async def _unless_stopped(read: Coroutine[Any, Any, Reading],
                          stop: asyncio.Event) -> Reading | None:
    """Return the read's result, or None as soon as Ctrl-C comes first.

    A database that hangs (no answer, no refusal) must not keep the console from quitting.
    """
    task = asyncio.create_task(read)
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None
