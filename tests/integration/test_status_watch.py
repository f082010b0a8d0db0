"""`ledger status --watch`: the live console shows what the store implies, refreshes, and quits.

Goal: every figure on the console is the truth at the head (never stale figures shown as current),
a login sees only what row-level security lets it see, and the console survives the database
going away. Method: the installed entry point runs under a pseudo-terminal (so rich redraws in
place, as for a person), its output is read as it comes, stripped of escape sequences and cut
into frames at the header line; decisions are made by the real dispatcher path
(`commands.dispatch_file`), so the gate shown is the one recorded. The renderer is also checked
on its own, without a database.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import os
import re
import signal
import struct
import termios
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from rich.console import Console

from console import commands, live
from ledger import roles, store
from ledger.events import Event, decode_event, with_ledger_fields
from ledger.logins import account_dsn
from ledger.settings import Settings
from projections.fold import AccountState, fold
from tests.conftest import LEDGER_BIN, cli_env, run_cli
from tests.factories import event_json, fill, limits

INTERVAL_S = "0.3"
COLUMNS, ROWS = 160, 60


@pytest.fixture
async def settings(make_database: Callable[[], Awaitable[Settings]]) -> Settings:
    """A database of each test's own: the watch shows every account it can see, and the
    session's database holds every other test's (more rows than one screen)."""
    return await make_database()
FRAME_TIMEOUT_S = 20.0
EXIT_TIMEOUT_S = 10.0
HEADER = "ledger status --watch ·"
# CSI sequences (cursor moves, erase, colours, cursor shown or hidden) and OSC titles.
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-B]|\r")
NOW = datetime(2026, 2, 3, 17, 40, 0, tzinfo=UTC)


class Watch:
    """One `ledger status --watch` under a pseudo-terminal; its output is read as it comes."""

    def __init__(self, process: asyncio.subprocess.Process, master: int) -> None:
        self.process = process
        self.master = master
        self.raw = b""

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except BlockingIOError:
                return
            except OSError:  # EIO: the child closed its side of the terminal
                return
            if not chunk:
                return
            self.raw += chunk

    def frames(self) -> list[str]:
        """The frames drawn so far; the last one may still be being drawn."""
        self._drain()
        text = ESCAPES.sub("", self.raw.decode(errors="replace"))
        return [HEADER + part for part in text.split(HEADER)[1:]]

    async def frame_where(self, check: Callable[[str], bool], *, after: int = 0,
                          timeout_s: float = FRAME_TIMEOUT_S) -> str:
        """Wait for a complete frame (one followed by another), the `after`th or a later one,
        for which `check` holds."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            complete = self.frames()[:-1]
            found = [frame for frame in complete[after:] if check(frame)]
            if found:
                return found[-1]
            if asyncio.get_running_loop().time() > deadline:
                last = complete[-1] if complete else self.raw.decode(errors="replace")[-3000:]
                pytest.fail(f"no such frame within {timeout_s}s; the last:\n{last}")
            await asyncio.sleep(0.05)

    async def interrupt(self) -> int:
        """Send Ctrl-C's signal, wait for the exit, return the exit code."""
        self.process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(self.process.wait(), EXIT_TIMEOUT_S)
        await asyncio.sleep(0.05)
        self._drain()
        return code


@contextlib.asynccontextmanager
async def watching(settings: Settings, **env: str) -> AsyncIterator[Watch]:
    """Run the watch under a 160 x 60 pseudo-terminal; kill it if the test ends otherwise."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    process = await asyncio.create_subprocess_exec(
        str(LEDGER_BIN), "status", "--watch", "--interval", INTERVAL_S,
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        env={**cli_env(settings), "TERM": "xterm", "COLUMNS": str(COLUMNS),
             "LINES": str(ROWS), **env})
    os.close(slave)
    os.set_blocking(master, False)
    try:
        yield Watch(process, master)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        os.close(master)


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.split("│")[1:-1]]


def row(frame: str, account: str) -> list[str]:
    """The cells of the account's row in the figures table: account, state, positions,
    exposure, pending, projection lag, relay lag."""
    lines = [line for line in frame.splitlines() if f"│ {account} " in line]
    assert lines, f"{account} is not in the frame:\n{frame}"
    return cells(lines[0])


def decisions(frame: str, account: str) -> list[list[str]]:
    """The account's rows in the decisions table, newest first: time, decision, gate, symbol."""
    lines = [line for line in frame.splitlines() if f"│ {account} " in line]
    return [cells(line)[1:] for line in lines[1:]]


def signals_file(tmp_path: Path, account: str, *quantities: str) -> Path:
    """A put signal per quantity, at 6.00 x 100 ($600 a contract)."""
    path = tmp_path / f"{account}.jsonl"
    path.write_text("".join(json.dumps({
        "signal_id": f"S-{index}", "account": account, "occurred_at": "2026-02-03T17:29:04Z",
        "symbol": "MSFT 260220P00400000", "instrument": "option", "side": "long",
        "quantity": quantity, "limit_price": "6.00", "multiplier": "100"}) + "\n"
        for index, quantity in enumerate(quantities, start=1)))
    return path


async def two_accounts(settings: Settings, admin: asyncpg.Connection, tmp_path: Path,
                       name: Callable[[str], str]) -> tuple[str, str]:
    """Account A: 1 open ($5,400) + 1 pending ($1,800) of 5 / $10,000, then a signal blocked by
    max_exposure. Account B: 2 open ($1,200) of 2 / $5,000, then one blocked by
    max_open_positions. No projector runs: every figure comes from folding the store."""
    first, second = name("wa"), name("wb")
    for account in (first, second):
        await commands.add_account(settings, account, None)
    await store.append(admin, first, [limits(first, 5, "10000"),
                                      fill(first, "F-1", quantity="9", price="6.00")])
    await store.append(admin, second, [
        limits(second, 2, "5000"), fill(second, "F-1", position_id="P-1"),
        fill(second, "F-2", position_id="P-2")])
    report = await commands.dispatch_file(settings, first, signals_file(tmp_path, first, "3", "5"),
                                          dry_run=False)
    assert (report.allowed, report.blocked) == (1, {"max_exposure": 1})
    report = await commands.dispatch_file(settings, second, signals_file(tmp_path, second, "1"),
                                          dry_run=False)
    assert report.blocked == {"max_open_positions": 1}
    return first, second


@pytest.mark.pg
@pytest.mark.slow
async def test_watch_shows_the_figures_the_store_implies_refreshes_and_quits_on_ctrl_c(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path,
    account_name: Callable[[str], str],
) -> None:
    first, second = await two_accounts(settings, admin, tmp_path, account_name)

    async with watching(settings) as watch:
        before = await watch.frame_where(lambda f: first in f and second in f)
        halted = await asyncio.to_thread(run_cli, settings, "halt", first, "--reason",
                                         "risk review")
        assert halted.returncode == 0, halted.stderr
        after = await watch.frame_where(lambda f: "HALTED" in f)
        code = await watch.interrupt()
        frames = watch.frames()

    # 1 open + 1 pending of 5; $5,400 open + $1,800 pending; head 5 (limits, fill, decision
    # + intent, decision), nothing projected or published: no projector or relay runs.
    assert row(before, first)[1:] == ["active", "████░░░░░░ 2/5",
                                      "███████░░░ $7,200.00 / $10,000.00", "1", "5", "5"]
    assert [d[1:] for d in decisions(before, first)] == [
        ["blocked", "max_exposure", "MSFT 260220P00400000"],
        ["allowed", "", "MSFT 260220P00400000"]]
    assert row(before, second)[1:] == ["active", "██████████ 2/2",
                                       "██░░░░░░░░ $1,200.00 / $5,000.00", "0", "4", "4"]
    assert [d[1:3] for d in decisions(before, second)] == [["blocked", "max_open_positions"]]
    # The halt cancelled A's pending intent: its position and exposure are released.
    assert row(after, first)[1:5] == ["HALTED: risk review", "██░░░░░░░░ 1/5",
                                      "█████░░░░░ $5,400.00 / $10,000.00", "0"]
    assert row(after, second)[1] == "active"
    assert len(frames) >= 3
    assert code == 0
    # Not transient: the last frame is still on screen after Ctrl-C.
    assert "HALTED: risk review" in frames[-1]
    assert "Traceback" not in watch.raw.decode(errors="replace")


@pytest.mark.pg
@pytest.mark.slow
async def test_watch_as_an_accounts_own_role_shows_that_account_only(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path,
    account_name: Callable[[str], str],
) -> None:
    first, second = await two_accounts(settings, admin, tmp_path, account_name)

    async with watching(settings, LEDGER_DATABASE_URL=account_dsn(settings, first)) as watch:
        frame = await watch.frame_where(lambda f: first in f)
        code = await watch.interrupt()

    assert second not in frame
    assert " 1 account " in frame
    # The account's role may read its own relay position: the relay lag is known.
    assert row(frame, first)[3:] == ["███████░░░ $7,200.00 / $10,000.00", "1", "5", "5"]
    assert len(decisions(frame, first)) == 2
    assert code == 0


@pytest.mark.pg
@pytest.mark.slow
async def test_watch_when_the_role_may_not_read_relay_positions_shows_a_dash_for_relay_lag(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path,
    account_name: Callable[[str], str],
) -> None:
    first, _ = await two_accounts(settings, admin, tmp_path, account_name)
    dispatchers = roles.roles_for(settings).dispatchers
    await admin.execute(f'REVOKE SELECT ON relay_positions FROM "{dispatchers}"')
    try:
        async with watching(settings, LEDGER_DATABASE_URL=account_dsn(settings, first)) as watch:
            frame = await watch.frame_where(lambda f: first in f)
            code = await watch.interrupt()
    finally:
        await admin.execute(f'GRANT SELECT ON relay_positions TO "{dispatchers}"')

    assert row(frame, first)[3:] == ["███████░░░ $7,200.00 / $10,000.00", "1", "5", "-"]
    assert code == 0


@pytest.mark.pg
@pytest.mark.slow
async def test_watch_when_the_projection_is_beyond_the_fold_bound_shows_behind_not_figures(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str],
) -> None:
    account = account_name("behind")
    await commands.add_account(settings, account, None)
    await store.append(admin, account, [limits(account, 5, "10000"),
                                        fill(account, "F-1", quantity="9", price="6.00")])

    async with watching(settings, LEDGER_DISPATCHER_FOLD_BOUND="0") as watch:
        frame = await watch.frame_where(lambda f: account in f)
        code = await watch.interrupt()

    assert row(frame, account)[1:] == ["projection behind by 2 events", "", "", "", "2", "2"]
    assert code == 0


@pytest.mark.pg
@pytest.mark.slow
async def test_watch_when_stdout_is_not_a_terminal_prints_frame_after_frame(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str],
) -> None:
    account = account_name("piped")
    await commands.add_account(settings, account, None)
    await store.append(admin, account, [limits(account, 5, "10000"), fill(account, "F-1")])
    process = await asyncio.create_subprocess_exec(
        str(LEDGER_BIN), "status", "--watch", "--interval", INTERVAL_S, env=cli_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    assert process.stdout is not None
    out = b""
    while out.decode(errors="replace").count(HEADER) < 4:
        chunk = await asyncio.wait_for(process.stdout.read(65536), FRAME_TIMEOUT_S)
        if not chunk:
            break
        out += chunk
    process.send_signal(signal.SIGINT)
    rest, err = await asyncio.wait_for(process.communicate(), EXIT_TIMEOUT_S)
    out += rest

    frames = [HEADER + part for part in out.decode().split(HEADER)[1:]]
    assert process.returncode == 0, err
    assert len(frames) >= 3
    assert row(frames[-1], account)[3] == "░░░░░░░░░░ $600.00 / $10,000.00"
    assert "\x1b" not in out.decode()


class Proxy:
    """A TCP relay to PostgreSQL that the test can cut (every connection and the listener)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()
        self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.mark.pg
@pytest.mark.slow
async def test_watch_when_the_database_goes_away_says_so_keeps_going_and_recovers(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str],
) -> None:
    account = account_name("outage")
    await commands.add_account(settings, account, None)
    await store.append(admin, account, [limits(account, 5, "10000"), fill(account, "F-1")])
    parts = urlsplit(settings.database_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    netloc = parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{proxy.port}"
    through_proxy = urlunsplit(parts._replace(netloc=netloc))

    try:
        async with watching(settings, LEDGER_DATABASE_URL=through_proxy) as watch:
            await watch.frame_where(lambda f: account in f)
            await proxy.cut()
            down = await watch.frame_where(lambda f: "database unreachable, retrying" in f)
            await asyncio.sleep(1.0)  # a few refreshes while it is down: it keeps going
            still_down = len(watch.frames())
            retries = sum("database unreachable, retrying" in f for f in watch.frames())
            await proxy.start()
            back = await watch.frame_where(lambda f: account in f, after=still_down)
            code = await watch.interrupt()
    finally:
        await proxy.cut()

    assert "$600.00 / $10,000.00" not in down
    assert account not in down
    assert retries >= 2
    assert row(back, account)[3] == "░░░░░░░░░░ $600.00 / $10,000.00"
    assert code == 0


def stored(events: list[Event]) -> list[Event]:
    return [with_ledger_fields(event, sequence=index, recorded_at=NOW, global_position=index)
            for index, event in enumerate(events, start=1)]


def pending_intent(account: str) -> Event:
    return decode_event(event_json(account, "IntentIssued", {
        "intent_id": "I-1", "signal_id": "S-1", "position_id": "P-2",
        "symbol": "MSFT 260220P00400000", "instrument": "option", "side": "long",
        "quantity": "3", "limit_price": "6.00", "multiplier": "100",
        "expires_at": "2026-02-03T17:45:00Z"}))


def text_of(reading: live.Reading, width: int = COLUMNS) -> str:
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(live.render(reading, 1.0))
    return console.export_text()


def state_of(account: str, *events: Event) -> AccountState:
    return fold(stored(list(events)), account=account)


def test_render_shows_bars_and_figures_against_the_limits() -> None:
    state = state_of("acct", limits("acct", 5, "10000"),
                     fill("acct", "F-1", quantity="9", price="6.00"), pending_intent("acct"))
    seen = (
        live.SeenDecision(at=NOW, symbol="MSFT 260220P00400000", allowed=False,
                          gate="max_exposure"),
        live.SeenDecision(at=datetime(2026, 2, 2, 9, 30, tzinfo=UTC), symbol="AAPL",
                          allowed=True, gate=None))
    figures = live.AccountFigures(account="acct", head=3, projected=1, published=None,
                                  state=state, decisions=seen)

    text = text_of(live.Reading(at=NOW, accounts=(figures,)))

    assert "ledger status --watch · 2026-02-03 17:40:00 UTC · 1 account · refresh every 1.0 s " \
           "· Ctrl-C to quit" in text
    assert row(text, "acct") == ["acct", "active", "████░░░░░░ 2/5",
                                 "███████░░░ $7,200.00 / $10,000.00", "1", "2", "-"]
    # A decision of another day says which.
    assert decisions(text, "acct") == [
        ["17:40:00", "blocked", "max_exposure", "MSFT 260220P00400000"],
        ["2026-02-02 09:30", "allowed", "", "AAPL"]]


def test_bar_is_full_and_red_at_the_limit_and_empty_for_nothing() -> None:
    assert live.bar(Decimal("10000"), Decimal("10000")).plain == "█" * live.BAR_WIDTH
    assert live.bar(Decimal("10000"), Decimal("10000")).style == "red"
    assert live.bar(Decimal("0"), Decimal("0")).plain == "░" * live.BAR_WIDTH
    assert live.bar(Decimal("12000"), Decimal("10000")).plain == "█" * live.BAR_WIDTH
    assert live.bar(Decimal("8000"), Decimal("10000")).plain == "████████░░"
    assert live.bar(Decimal("8000"), Decimal("10000")).style == "yellow"
    assert live.bar(Decimal("7999.99"), Decimal("10000")).style == "green"


def test_render_of_a_halted_account_gives_its_reason() -> None:
    state = state_of("acct", limits("acct"), decode_event(event_json(
        "acct", "TradingHalted", {"reason": "risk review"})))
    figures = live.AccountFigures(account="acct", head=2, projected=2, published=2,
                                  state=state)

    line = row(text_of(live.Reading(at=NOW, accounts=(figures,))), "acct")

    assert line[1:3] == ["HALTED: risk review", "░░░░░░░░░░ 0/5"]


def test_render_of_a_projection_beyond_the_bound_gives_no_figures() -> None:
    figures = live.AccountFigures(account="acct", head=1300, projected=100, published=1300,
                                  state=None)

    text = text_of(live.Reading(at=NOW, accounts=(figures,)))

    assert row(text, "acct") == ["acct", "projection behind by 1,200 events", "", "", "",
                                 "1,200", "0"]
    assert "$" not in text


def test_render_when_unreachable_or_empty_says_so() -> None:
    down = text_of(live.Reading(at=NOW, unreachable="database at x is unavailable: refused"))
    empty = text_of(live.Reading(at=NOW))

    assert "database unreachable, retrying (database at x is unavailable: refused)" in down
    assert "account" not in down.splitlines()[0]
    assert "0 accounts" in empty
    assert "no accounts yet" in empty
