"""`ledger audit` through the installed CLI: exit codes, the JSON contract, the chart.

Method: import the recorded incident (examples/incident.jsonl) and a clean history into the test
database, then audit each as an operator would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ledger.settings import Settings
from tests.conftest import ROOT, run_cli
from tests.factories import event_json

pytestmark = pytest.mark.pg


@pytest.fixture(scope="module")
def incident(settings: Settings) -> str:
    result = run_cli(settings, "import", "--create-accounts",
                     str(ROOT / "examples" / "incident.jsonl"))
    assert result.returncode == 0, result.stderr
    return "incident"


def test_audit_json_when_history_over_traded_reports_the_breaches_and_exits_3(
    settings: Settings, incident: str,
) -> None:
    result = run_cli(settings, "audit", "--account", incident, "--json")

    assert result.returncode == 3
    assert json.loads(result.stdout) == {"accounts": [{
        "account": "incident", "events": 43, "peak_open_positions": 12,
        "peak_exposure": "99370.00",
        "breaches": [
            {"gate": "max_exposure", "limit": "10000.00", "peak": "99370.00",
             "from": "2026-02-03T17:31:24Z", "first_sequence": 9},
            {"gate": "max_open_positions", "limit": "5", "peak": "12",
             "from": "2026-02-03T17:34:54Z", "first_sequence": 18}],
        "discrepancies": [], "reconciliations": []}]}


def test_audit_when_window_ends_before_the_trades_finds_nothing_and_exits_0(
    settings: Settings, incident: str,
) -> None:
    result = run_cli(settings, "audit", "--account", incident, "--json",
                     "--to", "2026-02-03T17:00:00Z")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["accounts"][0]["breaches"] == []
    assert document["accounts"][0]["events"] == 1


def test_audit_plot_writes_a_png_and_the_table_names_each_breach(
    settings: Settings, incident: str, tmp_path: Path,
) -> None:
    chart = tmp_path / "audit.png"

    result = run_cli(settings, "audit", "--account", incident, "--plot", str(chart))

    assert result.returncode == 3
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert chart.stat().st_size > 10_000
    output = result.stdout.decode()
    assert "max_open_positions" in output
    assert "max_exposure" in output
    assert "$99,370.00" in output


def test_audit_when_history_stays_within_limits_exits_0(
    settings: Settings, tmp_path: Path, account_name: Callable[[str], str],
) -> None:
    account = account_name("clean")
    lines = [event_json(account, "LimitsSet", {"max_open_positions": 2, "max_exposure": "5000"},
                        event_id="0c1e0000-0000-4000-8000-000000000001")]
    for index in range(2):
        lines.append(event_json(account, "OrderFilled", {
            "fill_id": f"C-{index}", "position_id": f"P-{index}", "symbol": "AMD",
            "instrument": "equity", "side": "long", "quantity": "10", "price": "150.00"},
            occurred_at=f"2026-02-03T17:3{index}:00Z"))
    path = tmp_path / "clean.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert run_cli(settings, "import", "--create-accounts", str(path)).returncode == 0

    result = run_cli(settings, "audit", "--account", account, "--json")

    assert result.returncode == 0, result.stdout
    document = json.loads(result.stdout)["accounts"][0]
    assert document["breaches"] == []
    assert (document["peak_open_positions"], document["peak_exposure"]) == (2, "3000.00")


def test_audit_with_two_jobs_reports_exactly_what_one_job_reports(
    settings: Settings, incident: str,
) -> None:
    one = run_cli(settings, "audit", "--json", "--jobs", "1")
    two = run_cli(settings, "audit", "--json", "--jobs", "2")

    assert one.returncode == two.returncode == 3
    assert json.loads(two.stdout) == json.loads(one.stdout)
    accounts = [entry["account"] for entry in json.loads(two.stdout)["accounts"]]
    assert accounts == sorted(accounts)
    assert "incident" in accounts


def test_audit_when_limits_are_set_today_and_history_imported_after_is_dated_earlier(
    settings: Settings, tmp_path: Path, account_name: Callable[[str], str],
) -> None:
    """The review's crash: times that run backwards through the stream (IndexError, exit 1)."""
    account = account_name("late")
    assert run_cli(settings, "accounts", "add", account).returncode == 0
    assert run_cli(settings, "limits", "set", account, "--max-positions", "1",
                   "--max-exposure", "1000").returncode == 0
    history = [json.dumps({
        "account": account, "type": "OrderFilled", "occurred_at": f"2026-02-03T17:3{i}:00Z",
        "data": {"fill_id": f"X-{i}", "position_id": f"P-{i}", "symbol": "KO",
                 "instrument": "equity", "side": "long", "quantity": "10",
                 "price": "60.00"}}) for i in range(3)]
    path = tmp_path / "broker.jsonl"
    path.write_text("\n".join(history) + "\n")
    assert run_cli(settings, "import", str(path)).returncode == 0

    text = run_cli(settings, "audit", "--account", account)
    document = run_cli(settings, "audit", "--account", account, "--json")
    png = run_cli(settings, "audit", "--account", account, "--plot", str(tmp_path / "a.png"))

    assert (text.returncode, document.returncode, png.returncode) == (3, 3, 3), text.stderr
    breaches = json.loads(document.stdout)["accounts"][0]["breaches"]
    assert {b["gate"] for b in breaches} == {"max_open_positions", "max_exposure"}
    assert (tmp_path / "a.png").stat().st_size > 0
