"""The command-line conventions of docs/design.md, run through the installed entry point.

Method: run `.venv/bin/ledger` as a subprocess and check exit codes (0, 1, 2), that errors are one
line on stderr without a traceback, and the KEY=VALUE output of `ledger config`.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable

import pytest

from ledger.settings import Settings
from tests.conftest import LEDGER_BIN, run_cli


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(LEDGER_BIN), *args], env={**os.environ, **env},
                          capture_output=True, timeout=60, check=False)


def test_config_prints_effective_settings_as_key_value_lines_with_password_masked() -> None:
    result = _run("config", LEDGER_TOPIC_PREFIX="t1.",
                  LEDGER_DATABASE_URL="postgresql://u:secret@127.0.0.1:5999/db")

    lines = dict(line.split("=", 1) for line in result.stdout.decode().splitlines())
    assert result.returncode == 0
    assert lines["LEDGER_TOPIC_PREFIX"] == "t1."
    assert lines["LEDGER_DATABASE_URL"] == "postgresql://u:***@127.0.0.1:5999/db"
    assert "LEDGER_KAFKA_BOOTSTRAP" in lines


def test_config_when_a_variable_is_invalid_exits_1_naming_variable_and_value() -> None:
    result = _run("config", LEDGER_TOPIC_PARTITIONS="many")

    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines() == [
        result.stderr.decode().strip()]
    assert "LEDGER_TOPIC_PARTITIONS='many'" in result.stderr.decode()


@pytest.mark.parametrize("args", [("no-such-command",), ("limits", "set", "a"), ("halt",)])
def test_usage_error_exits_2(args: tuple[str, ...]) -> None:
    assert _run(*args).returncode == 2


@pytest.mark.parametrize("command", [
    ("--help",), ("config", "--help"), ("migrate", "--help"), ("accounts", "add", "--help"),
    ("limits", "set", "--help"), ("halt", "--help"), ("resume", "--help"), ("import", "--help"),
    ("export", "--help"), ("status", "--help"), ("run", "--help"), ("follow", "--help"),
    ("asyncapi", "--help"),
])
def test_every_command_has_help(command: tuple[str, ...]) -> None:
    result = _run(*command)

    assert result.returncode == 0
    assert b"Usage" in result.stdout


def test_migrate_when_database_is_unreachable_exits_1_with_one_line() -> None:
    result = _run("migrate", LEDGER_DATABASE_URL="postgresql://u:p@127.0.0.1:1/nowhere")

    stderr = result.stderr.decode().strip()
    assert result.returncode == 1
    assert len(stderr.splitlines()) == 1
    assert "database at postgresql://u:***@127.0.0.1:1/nowhere is unavailable" in stderr


@pytest.mark.pg
def test_limits_halt_resume_append_events_and_status_shows_the_kill_switch(
    settings: Settings, account_name: Callable[[str], str]
) -> None:
    account = account_name("ops")
    assert run_cli(settings, "accounts", "add", account).returncode == 0

    limits = run_cli(settings, "limits", "set", account, "--max-positions", "5",
                     "--max-exposure", "10000", "--max-order", "2500")
    halted = run_cli(settings, "halt", account, "--reason", "risk review")
    status_halted = json.loads(run_cli(settings, "status", "--json").stdout)
    resumed = run_cli(settings, "resume", account)
    status_resumed = json.loads(run_cli(settings, "status", "--json").stdout)
    bad = run_cli(settings, "limits", "set", account, "--max-positions", "5",
                  "--max-exposure", "lots")

    assert [r.returncode for r in (limits, halted, resumed)] == [0, 0, 0]
    row = next(r for r in status_halted["accounts"] if r["account"] == account)
    assert row == {"account": account, "head": 2, "published": 0, "projected": 0, "lag": 2,
                   "halted": True, "trading_state": "halted"}
    row = next(r for r in status_resumed["accounts"] if r["account"] == account)
    assert row["halted"] is False
    assert row["trading_state"] == "active"
    assert row["head"] == 3
    assert bad.returncode == 1
    assert "data.max_exposure: 'lots'" in bad.stderr.decode()


def test_asyncapi_describes_every_topic() -> None:
    result = _run("asyncapi", LEDGER_TOPIC_PREFIX="p1.")

    document = json.loads(result.stdout)
    assert result.returncode == 0
    assert document["asyncapi"].startswith("3.")
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {"p1.executions", "p1.dead-letters"} <= addresses
