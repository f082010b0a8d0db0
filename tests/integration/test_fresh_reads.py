"""Every figure shown is the truth at the head: `positions` and the dispatcher's read.

Goal: the incident's failure was a read that showed "Positions 0/5, Exposure $0" while eleven
positions were open. Method: against real PostgreSQL, read `ledger positions --json` right after
an import (no projector has run), after `ledger dispatch` (an intent pending), and with the
projection rewound to the middle of the stream (a projector stopped mid-way); each must equal a
rebuild folded to the head, figure for figure, and say how far the projection itself was.
Beyond the fold bound the command must refuse with one line. The race test lets a projector
commit between every two statements of a decision and checks that the decision's recorded
figures are those of a fold at its `as_of_sequence`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from console import commands
from dispatcher import gates
from dispatcher.decide import DispatcherConfig, decide
from ledger import store
from ledger.db import connect
from ledger.events import SignalEvaluatedEvent, decode_signal
from ledger.logins import account_dsn
from ledger.settings import Settings
from projections import rebuild, tables
from projections.view import positions_document
from tests.conftest import run_cli
from tests.factories import close, fill, limits
from tests.integration.test_dispatcher import signal_line

pytestmark = pytest.mark.pg


def _history_lines(account: str, count: int) -> list[str]:
    lines = [limits(account, 50, "1000000")]
    lines += [fill(account, f"F-{index}", position_id=f"P-{index % 7}", quantity="2",
                   price="6.00", occurred_at=f"2026-02-03T17:{index % 60:02d}:00Z")
              for index in range(count)]
    lines.append(close(account, "P-1", price="7.00", occurred_at="2026-02-03T18:00:00Z"))
    return [event.model_dump_json() for event in lines]


@pytest.fixture
async def imported(settings: Settings, tmp_path: Path,
                   account_name: Callable[[str], str]) -> str:
    account = account_name("fresh")
    path = tmp_path / "history.jsonl"
    path.write_text("\n".join(_history_lines(account, 21)) + "\n")
    result = run_cli(settings, "import", str(path), "--create-accounts")
    assert result.returncode == 0, result.stderr
    return account


def _positions(settings: Settings, account: str, **env: str) -> dict[str, Any]:
    result = run_cli(settings, "positions", account, "--json", env=env)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


async def _at_head(admin: asyncpg.Connection, account: str) -> dict[str, Any]:
    return positions_document(await rebuild.fold_stream(admin, account), projected_sequence=None)


def _without_projection(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key != "projected_sequence"}


async def test_positions_right_after_an_import_are_the_heads_not_the_empty_projection(
        settings: Settings, admin: asyncpg.Connection, imported: str) -> None:
    head = await admin.fetchval("SELECT head FROM streams WHERE account = $1", imported)

    document = _positions(settings, imported)

    assert document["as_of_sequence"] == head == 23
    assert document["projected_sequence"] == 0
    assert _without_projection(document) == _without_projection(
        await _at_head(admin, imported))
    assert len(document["open_positions"]) == 6
    assert document["exposure"] != "0.00"


async def test_positions_after_dispatch_show_the_pending_intent(
        settings: Settings, admin: asyncpg.Connection, imported: str, tmp_path: Path) -> None:
    path = tmp_path / "signals.jsonl"
    path.write_text(signal_line(imported, "S-1") + "\n")
    assert run_cli(settings, "dispatch", imported, "--signals", str(path)).returncode == 0

    document = _positions(settings, imported)

    assert [intent["notional"] for intent in document["pending_intents"]] == ["1800.00"]
    assert _without_projection(document) == _without_projection(
        await _at_head(admin, imported))


async def test_positions_with_the_projector_stopped_mid_stream_fold_its_tail(
        settings: Settings, admin: asyncpg.Connection, imported: str) -> None:
    midway = await rebuild.fold_stream(admin, imported, up_to_sequence=9)
    async with admin.transaction():
        await tables.replace_state(admin, midway)

    document = _positions(settings, imported)
    text = run_cli(settings, "positions", imported)

    assert document["projected_sequence"] == 9
    assert document["as_of_sequence"] == 23
    assert _without_projection(document) == _without_projection(
        await _at_head(admin, imported))
    assert "projection at 9: 14 events folded from the store" in text.stdout.decode()


async def test_positions_beyond_the_fold_bound_exit_1_with_one_line(
        settings: Settings, imported: str) -> None:
    result = run_cli(settings, "positions", imported, "--json",
                     env={"LEDGER_DISPATCHER_FOLD_BOUND": "10"})

    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode().strip() == (
        f"ledger: error: projection of {imported} is 23 events behind the head (more than the "
        "10 a read may fold); run the projector or `ledger rebuild`")


class _ProjectorBetweenStatements:
    """A connection on which a projector commits more of the stream after every statement."""

    def __init__(self, conn: asyncpg.Connection, admin: asyncpg.Connection, account: str,
                 head: int) -> None:
        self.conn, self.admin, self.account, self.head = conn, admin, account, head
        self.advances = 0

    def transaction(self) -> Any:
        return self.conn.transaction()

    async def _advance(self) -> None:
        applied = await tables.applied_sequence(self.admin, self.account, lock=False)
        if applied < self.head:
            state = await rebuild.fold_stream(self.admin, self.account,
                                              up_to_sequence=min(self.head, applied + 3))
            async with self.admin.transaction():
                await tables.replace_state(self.admin, state)
            self.advances += 1

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        rows = await self.conn.fetch(*args, **kwargs)
        await self._advance()
        return rows

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        row = await self.conn.fetchrow(*args, **kwargs)
        await self._advance()
        return row

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        value = await self.conn.fetchval(*args, **kwargs)
        await self._advance()
        return value


async def test_decision_read_while_the_projector_commits_records_the_heads_figures(
        settings: Settings, admin: asyncpg.Connection, imported: str) -> None:
    head = int(await admin.fetchval("SELECT head FROM streams WHERE account = $1", imported))
    async with admin.transaction():
        await tables.replace_state(admin, await rebuild.fold_stream(admin, imported,
                                                                    up_to_sequence=2))
    conn = await connect(account_dsn(settings, imported))
    racing = _ProjectorBetweenStatements(conn, admin, imported, head)
    try:
        outcome = await decide(racing, DispatcherConfig(account=imported),  # type: ignore[arg-type]
                               decode_signal(signal_line(imported, "S-race")),
                               datetime.now(UTC))
    finally:
        await conn.close()

    events = await store.read_stream(admin, imported)
    decision = next(e for e in events if isinstance(e, SignalEvaluatedEvent))
    truth = await rebuild.fold_stream(admin, imported, up_to_sequence=outcome.as_of_sequence)
    recomputed = gates.evaluate(truth, decision.data.signal, decision.occurred_at,
                                gates.Freshness(head=outcome.as_of_sequence,
                                                state_sequence=outcome.as_of_sequence,
                                                fold_bound=1000))
    assert racing.advances >= 2
    assert outcome.as_of_sequence == head
    assert [g.value for g in decision.data.gates[1:]] == [g.value for g in recomputed.gates[1:]]
    assert decision.data.allowed == recomputed.allowed


async def test_limits_set_changes_only_what_it_names_and_clear_removes_one(
        settings: Settings, account_name: Callable[[str], str]) -> None:
    account = account_name("lim")
    await commands.add_account(settings, account, None)

    first = run_cli(settings, "limits", "set", account, "--max-positions", "5",
                    "--max-exposure", "10000", "--max-order", "1000", "--daily-loss", "500")
    second = run_cli(settings, "limits", "set", account, "--max-positions", "3",
                     "--max-exposure", "9000")
    after_second = _positions(settings, account)["limits"]
    cleared = run_cli(settings, "limits", "set", account, "--clear", "max-order")
    after_clear = _positions(settings, account)["limits"]
    unknown = run_cli(settings, "limits", "set", account, "--clear", "max_exposure")

    assert first.returncode == second.returncode == cleared.returncode == 0
    assert after_second == {"max_open_positions": 3, "max_exposure": "9000",
                            "max_order_notional": "1000", "daily_loss_limit": "500",
                            "max_orders_per_minute": None, "max_underlying_exposure": None,
                            "duplicate_window_s": None, "max_reconcile_age_s": None}
    assert after_clear == {**after_second, "max_order_notional": None}
    assert unknown.returncode == 1
    assert "--clear: 'max_exposure' is not a limit that can be removed" in unknown.stderr.decode()


async def test_limits_set_when_no_limits_yet_needs_the_two_required(
        settings: Settings, account_name: Callable[[str], str]) -> None:
    account = account_name("lim")
    await commands.add_account(settings, account, None)

    result = run_cli(settings, "limits", "set", account, "--max-order", "1000")

    assert result.returncode == 1
    assert result.stderr.decode().strip() == (
        f"ledger: error: max_open_positions: nothing was given: {account} has no limits yet, "
        "so its first need --max-positions and --max-exposure")
