"""Reconciliation with the broker, against the real database: `ledger reconcile`.

Method: an account with two open positions (long MSFT puts, short KO shares); broker views that
match, miss a symbol on either side, differ in quantity, or hold the other side. Each is judged
by the CLI as an operator runs it; the exact differences, the event recorded, the trading state
and the exit code are checked, and a second run with the same broker `as_of` changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ledger import store
from ledger.events import SNAPSHOT_POSITIONS_MAX, Event, decode_event
from ledger.settings import Settings
from tests.conftest import run_cli
from tests.factories import event_json, fill
from tests.integration.test_dispatcher import new_account, stream

pytestmark = [pytest.mark.pg]

MSFT = "MSFT 260220P00400000"


def short_ko(account: str) -> Event:
    return decode_event(event_json(account, "OrderFilled", {
        "fill_id": "X-KO", "position_id": "P-KO", "symbol": "KO", "instrument": "equity",
        "side": "short", "quantity": "100", "price": "60.00"}))


async def held(settings: Settings, admin: asyncpg.Connection, name: str) -> str:
    """An account holding long 12 MSFT puts (in two positions) and short 100 KO."""
    account = await new_account(settings, admin, name)
    await store.append(admin, account, [
        fill(account, "X-1", position_id="P-1", quantity="5"),
        fill(account, "X-2", position_id="P-2", quantity="7"),
        short_ko(account)])
    return account


def broker_file(tmp_path: Path, account: str, positions: list[dict[str, str]],
                as_of: str = "2026-02-03T17:45:00Z") -> Path:
    path = tmp_path / f"broker-{as_of.replace(':', '')}.json"
    path.write_text(json.dumps({"account": account, "as_of": as_of, "positions": positions}))
    return path


def line(symbol: str, side: str, quantity: str) -> dict[str, str]:
    return {"symbol": symbol, "side": side, "quantity": quantity}


def reconcile(settings: Settings, account: str, path: Path) -> tuple[int, dict[str, Any]]:
    done = run_cli(settings, "reconcile", account, "--broker", str(path), "--json")
    assert done.stderr == b"", done.stderr
    return done.returncode, json.loads(done.stdout)


async def trading_state(settings: Settings, account: str) -> str:
    done = run_cli(settings, "positions", account, "--json")
    assert done.returncode == 0, done.stderr
    state: str = json.loads(done.stdout)["trading_state"]
    return state


async def test_reconcile_when_broker_agrees_records_a_match_once_per_as_of(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path,
    account_name: Callable[[str], str],
) -> None:
    account = await held(settings, admin, account_name("rcok"))
    # The broker holds the MSFT puts in one line of 12, written as it likes.
    path = broker_file(tmp_path, account, [line(MSFT, "long", "12.000"),
                                           line("KO", "short", "100")])

    first = reconcile(settings, account, path)
    second = reconcile(settings, account, path)

    assert first == (0, {"account": account, "matched": True, "differences": []})
    assert second == first
    events = await stream(admin, account)
    outcomes = [e for e in events if e.type in ("PositionsReconciled", "ReconciliationFailed")]
    assert [(e.type, e.data.model_dump(mode="json")) for e in outcomes] == [
        ("PositionsReconciled", {"as_of": "2026-02-03T17:45:00Z", "head": 4})]
    assert await trading_state(settings, account) == "active"


@pytest.mark.parametrize(("positions", "differences"), [
    pytest.param([line("KO", "short", "100")],
                 [{"symbol": MSFT, "side": "long", "broker": "0", "ledger": "12"}],
                 id="missing-at-the-broker"),
    pytest.param([line(MSFT, "long", "12"), line("KO", "short", "100"),
                  line("QCOM 260320P00150000", "long", "2")],
                 [{"symbol": "QCOM 260320P00150000", "side": "long", "broker": "2",
                   "ledger": "0"}],
                 id="missing-in-the-ledger"),
    pytest.param([line(MSFT, "long", "11.5"), line("KO", "short", "100")],
                 [{"symbol": MSFT, "side": "long", "broker": "11.5", "ledger": "12"}],
                 id="quantity-off"),
    pytest.param([line(MSFT, "long", "12"), line("KO", "long", "100")],
                 [{"symbol": "KO", "side": "long", "broker": "100", "ledger": "0"},
                  {"symbol": "KO", "side": "short", "broker": "0", "ledger": "100"}],
                 id="long-where-the-ledger-is-short"),
])
async def test_reconcile_when_broker_differs_records_every_difference_and_reduces(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path,
    account_name: Callable[[str], str], positions: list[dict[str, str]],
    differences: list[dict[str, str]],
) -> None:
    account = await held(settings, admin, account_name("rcbad"))
    path = broker_file(tmp_path, account, positions)

    code, document = reconcile(settings, account, path)
    again = reconcile(settings, account, path)

    assert (code, document) == (3, {"account": account, "matched": False,
                                    "differences": differences})
    assert again == (code, document)
    events = await stream(admin, account)
    failed = [e for e in events if e.type == "ReconciliationFailed"]
    assert len(failed) == 1
    assert failed[0].data.model_dump(mode="json")["differences"] == differences
    assert await trading_state(settings, account) == "reducing"


async def test_reconcile_when_the_file_is_bad_says_so_in_one_line_and_records_nothing(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path,
    account_name: Callable[[str], str],
) -> None:
    account = await held(settings, admin, account_name("rcfile"))
    other = broker_file(tmp_path, "someone_else", [])
    negative = tmp_path / "negative.json"
    negative.write_text(json.dumps({"account": account, "as_of": "2026-02-03T17:45:00Z",
                                    "positions": [line(MSFT, "long", "-1")]}))
    head = len(await stream(admin, account))

    wrong_account = run_cli(settings, "reconcile", account, "--broker", str(other))
    bad_quantity = run_cli(settings, "reconcile", account, "--broker", str(negative))

    assert wrong_account.returncode == 1
    assert wrong_account.stderr.decode().count("\n") == 1
    assert "someone_else" in wrong_account.stderr.decode()
    assert bad_quantity.returncode == 1
    assert "positions[0].quantity" in bad_quantity.stderr.decode()
    assert len(await stream(admin, account)) == head


async def test_reconcile_when_the_view_is_from_the_future_refuses_it(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path,
    account_name: Callable[[str], str],
) -> None:
    # A view stamped ahead would keep reconciliation_stale passing until then.
    account = await held(settings, admin, account_name("rcfut"))
    path = broker_file(tmp_path, account, [], as_of="2999-01-01T00:00:00Z")
    head = len(await stream(admin, account))

    done = run_cli(settings, "reconcile", account, "--broker", str(path))

    assert done.returncode == 1
    assert done.stderr.decode().startswith("ledger: error: as_of: '2999-01-01T00:00:00Z' is more ")
    assert len(await stream(admin, account)) == head


async def test_reconcile_when_there_are_more_differences_than_recordable_fails_closed_anyway(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path,
    account_name: Callable[[str], str],
) -> None:
    account = await held(settings, admin, account_name("rcmany"))
    # As many lines as a view holds, none of them the ledger's: 2 more differences than that.
    lines = [line(f"SYM{index:05d}", "long", "1") for index in range(SNAPSHOT_POSITIONS_MAX)]
    path = broker_file(tmp_path, account, lines)

    code, document = reconcile(settings, account, path)

    assert (code, document["matched"], document["omitted"]) == (3, False, 2)
    assert len(document["differences"]) == SNAPSHOT_POSITIONS_MAX
    assert document["differences"][:2] == [
        {"symbol": "KO", "side": "short", "broker": "0", "ledger": "100"},
        {"symbol": MSFT, "side": "long", "broker": "0", "ledger": "12"}]
    assert await trading_state(settings, account) == "reducing"


async def test_reconcile_compares_with_the_ledger_as_of_the_brokers_time(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path,
    account_name: Callable[[str], str],
) -> None:
    # The broker's view of 17:45 predates a fill it made at 17:50, already in the store.
    account = await held(settings, admin, account_name("rcasof"))
    await store.append(admin, account, [fill(account, "X-late", position_id="P-3", quantity="2",
                                             occurred_at="2026-02-03T17:50:00Z")])
    before = broker_file(tmp_path, account, [line(MSFT, "long", "12"),
                                             line("KO", "short", "100")])
    after = broker_file(tmp_path, account, [line(MSFT, "long", "14"),
                                            line("KO", "short", "100")],
                        as_of="2026-02-03T17:55:00Z")

    earlier = reconcile(settings, account, before)
    later = reconcile(settings, account, after)

    assert (earlier[0], later[0]) == (0, 0)
    events = await stream(admin, account)
    assert [(e.type, e.data.model_dump(mode="json")["head"]) for e in events
            if e.type == "PositionsReconciled"] == [("PositionsReconciled", 4),
                                                    ("PositionsReconciled", 6)]
