"""`ledger import` / `ledger export` through the installed CLI against the real PostgreSQL.

Method: write JSONL files with good and bad lines, run the entry point as a user would, and read
the store back. A bad line must store nothing (all or nothing) and name line, field and value;
`--skip-bad` stores the rest; re-import changes nothing; export re-imports into an empty database
to the same events.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from ledger.db import connect
from ledger.settings import Settings
from tests.conftest import run_cli
from tests.factories import event_json

pytestmark = pytest.mark.pg


def _history(account: str, fills: int = 5) -> list[str]:
    lines = [event_json(account, "LimitsSet", {"max_open_positions": 5, "max_exposure": "10000"},
                        event_id="3f0e0000-0000-4000-8000-000000000001")]
    for index in range(fills):
        lines.append(event_json(
            account, "OrderFilled",
            {"fill_id": f"X-{index}", "position_id": f"P-{index}", "symbol": "AMD 260220P00150000",
             "instrument": "option", "side": "long", "quantity": "3", "price": "5.47",
             "multiplier": "100"},
            occurred_at=f"2026-02-03T17:3{index}:00Z"))
    lines.append(event_json(account, "PositionClosed",
                            {"position_id": "P-0", "price": "7.10", "reason": "take_profit"},
                            occurred_at="2026-02-03T17:45:00Z"))
    return lines


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


async def _count(settings: Settings, account: str) -> int:
    conn = await connect(settings.database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events WHERE account = $1", account))
    finally:
        await conn.close()


async def test_import_when_a_line_is_bad_stores_nothing_and_names_line_field_value(
    settings: Settings, tmp_path: Path, account_name: Callable[[str], str]
) -> None:
    account = account_name("imp")
    assert run_cli(settings, "accounts", "add", account).returncode == 0
    lines = _history(account)
    bad = json.loads(lines[3])
    bad["data"]["quantity"] = "twelve"
    lines[3] = json.dumps(bad)

    result = run_cli(settings, "import", str(_write(tmp_path / "h.jsonl", lines)))

    assert result.returncode == 1
    stderr = result.stderr.decode().strip()
    assert len(stderr.splitlines()) == 1
    assert "line 4: data.quantity: 'twelve'" in stderr
    assert await _count(settings, account) == 0


async def test_import_when_skip_bad_stores_good_lines_and_reports_each_bad_one(
    settings: Settings, tmp_path: Path, account_name: Callable[[str], str]
) -> None:
    account = account_name("skip")
    assert run_cli(settings, "accounts", "add", account).returncode == 0
    lines = _history(account)
    lines.insert(2, "{not json")
    lines.insert(5, event_json(account, "OrderFilled", {"fill_id": "Y"}))

    result = run_cli(settings, "import", "--skip-bad", str(_write(tmp_path / "h.jsonl", lines)))

    assert result.returncode == 0, result.stderr
    reported = result.stderr.decode().strip().splitlines()
    assert [line.split(":")[0] for line in reported] == ["skipped line 3", "skipped line 6"]
    assert await _count(settings, account) == len(lines) - 2
    assert b"2 bad" in result.stdout


async def test_import_when_run_twice_changes_nothing(
    settings: Settings, tmp_path: Path, account_name: Callable[[str], str]
) -> None:
    account = account_name("twice")
    assert run_cli(settings, "accounts", "add", account).returncode == 0
    path = _write(tmp_path / "h.jsonl", _history(account))

    first = run_cli(settings, "import", str(path))
    second = run_cli(settings, "import", str(path))

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert b"7 appended" in first.stdout
    assert b"0 appended, 7 already stored" in second.stdout
    assert await _count(settings, account) == 7


async def test_import_when_account_is_unknown_refuses_unless_create_accounts(
    settings: Settings, tmp_path: Path, account_name: Callable[[str], str]
) -> None:
    account = account_name("new")
    path = _write(tmp_path / "h.jsonl", _history(account))

    refused = run_cli(settings, "import", str(path))
    created = run_cli(settings, "import", "--create-accounts", str(path))

    assert refused.returncode == 1
    assert f"account '{account}' does not exist" in refused.stderr.decode()
    assert created.returncode == 0, created.stderr
    assert await _count(settings, account) == 7


async def test_export_then_import_into_an_empty_database_gives_the_same_events(
    settings: Settings, tmp_path: Path, account_name: Callable[[str], str],
    make_database: Callable[[], Awaitable[Settings]],
) -> None:
    first, second = account_name("exp_a"), account_name("exp_b")
    for account in (first, second):
        assert run_cli(settings, "accounts", "add", account).returncode == 0
        path = _write(tmp_path / f"{account}.jsonl", _history(account))
        assert run_cli(settings, "import", str(path)).returncode == 0
    exported = run_cli(settings, "export", "--account", first)
    assert exported.returncode == 0, exported.stderr
    dump = _write(tmp_path / "dump.jsonl", exported.stdout.decode().splitlines())
    empty = await make_database()

    imported = run_cli(empty, "import", "--create-accounts", str(dump))
    again = run_cli(empty, "export")

    assert imported.returncode == 0, imported.stderr
    assert _without_ledger_times(again.stdout) == _without_ledger_times(exported.stdout)
    assert second.encode() not in exported.stdout


def _without_ledger_times(jsonl: bytes) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in jsonl.decode().splitlines()]
    for row in rows:
        del row["recorded_at"], row["global_position"]
    return rows


async def test_export_when_store_is_read_back_keeps_decimal_digits(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path,
    account_name: Callable[[str], str],
) -> None:
    account = account_name("digits")
    assert run_cli(settings, "accounts", "add", account).returncode == 0
    assert run_cli(settings, "import",
                   str(_write(tmp_path / "h.jsonl", _history(account, fills=1)))).returncode == 0

    exported = run_cli(settings, "export", "--account", account).stdout.decode().splitlines()

    fill_row = json.loads(exported[1])
    assert fill_row["data"]["price"] == "5.47"
    assert fill_row["data"]["multiplier"] == "100"
    assert fill_row["sequence"] == 2
    assert fill_row["occurred_at"] == "2026-02-03T17:30:00Z"
