"""Goal: `ledger` behaves as a native command line: `--version`, `-h` on every command, shell
completion that completes, help without value placeholders on flags, full values when piped,
no colour under NO_COLOR, and a library's log lines kept off the console of `ledger run`.

Method: the installed entry point as a subprocess; a pseudo-terminal where a terminal matters;
commands listed from the click app itself, so a new command is covered without editing this.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import typer.main
from typer.testing import CliRunner

from console.cli import DISTRIBUTION, app
from ledger import store
from ledger.events import decode_event
from ledger.settings import Settings
from tests.conftest import LEDGER_BIN, cli_env, run_cli
from tests.factories import event_json

# SGR sequences that set a colour (30-37, 90-97 foreground, 38;... extended), not bold alone.
COLOUR = re.compile(rb"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|9[0-7])(?:;[0-9;]*)?m")
PTY_READ_TIMEOUT_S = 30.0
RUNNER = CliRunner()


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and subcommand of a click group (typer's own click, hence by shape)."""
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


ALL_COMMANDS = [(), *_commands(typer.main.get_group(app))]
# A new subcommand is covered without editing this; the walk itself must reach the nested ones.
assert ("kafka", "user", "add") in ALL_COMMANDS


def _ledger(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(LEDGER_BIN), *args], env={**os.environ, **env},
                          capture_output=True, timeout=60, check=False)


def test_version_prints_the_installed_distributions_version() -> None:
    result = _ledger("--version")

    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"ledger {version(DISTRIBUTION)}"


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: " ".join(c) or "ledger")
def test_every_command_answers_dash_h_without_placeholders_on_flags(
        command: tuple[str, ...]) -> None:
    # In process: the app's own parsing; the entry point itself is run by the test below.
    short = RUNNER.invoke(app, [*command, "-h"], prog_name="ledger")
    long = RUNNER.invoke(app, [*command, "--help"], prog_name="ledger")

    assert short.exit_code == 0, short.output
    assert short.output == long.output
    assert "Usage: ledger" in short.output
    # A flag takes no value: `--json <bool>` would tell a user to type one.
    assert "<bool>" not in short.output


def test_the_installed_command_answers_dash_h() -> None:
    result = _ledger("kafka", "user", "add", "-h")

    assert result.returncode == 0, result.stderr
    assert b"Usage: ledger kafka user add" in result.stdout


def test_show_completion_prints_a_script_and_completion_completes() -> None:
    script = _ledger("--show-completion", "bash")
    completed = subprocess.run(
        [str(LEDGER_BIN)], capture_output=True, timeout=60, check=False,
        env={**os.environ, "_LEDGER_COMPLETE": "complete_bash", "COMP_WORDS": "ledger sta",
             "COMP_CWORD": "1"})
    options = subprocess.run(
        [str(LEDGER_BIN)], capture_output=True, timeout=60, check=False,
        env={**os.environ, "_LEDGER_COMPLETE": "complete_bash",
             "COMP_WORDS": "ledger positions --j", "COMP_CWORD": "2"})

    assert script.returncode == 0
    assert b"_LEDGER_COMPLETE" in script.stdout
    assert b"complete " in script.stdout
    assert completed.stdout.split() == [b"status"]
    assert options.stdout.split() == [b"--json"]


@pytest.mark.pg
async def test_piped_tables_show_every_value_whole(
        settings: Settings, admin: asyncpg.Connection,
        account_name: Callable[[str], str]) -> None:
    account = account_name("piped")
    assert run_cli(settings, "accounts", "add", account).returncode == 0
    assert run_cli(settings, "limits", "set", account, "--max-positions", "5",
                   "--max-exposure", "10000").returncode == 0
    # Longer than a line of 80 columns, the width rich assumes for a pipe.
    intent_id = "I-" + "x" * 90
    await store.append(admin, account, [decode_event(event_json(account, "IntentIssued", {
        "intent_id": intent_id, "signal_id": "S-1", "position_id": "P-1",
        "symbol": "MSFT 260220P00400000", "instrument": "option", "side": "long",
        "quantity": "1", "limit_price": "6.00", "multiplier": "100",
        "expires_at": "2026-02-03T17:30:04Z"}))])

    piped = run_cli(settings, "positions", account, env={"COLUMNS": "80"})

    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.decode().splitlines()
    assert any(intent_id in line for line in lines), piped.stdout.decode()
    assert b"\x1b[" not in piped.stdout


def _in_a_terminal(args: list[str], env: dict[str, str]) -> bytes:
    """Run a command with its output on a pseudo-terminal; return what it wrote."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower, env=env,
                               close_fds=True)
    os.close(follower)
    output = b""
    deadline = time.monotonic() + PTY_READ_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
    finally:
        process.wait(timeout=30)
        os.close(leader)
    assert process.returncode == 0, output
    return output


@pytest.mark.pg
def test_no_color_in_the_environment_turns_colour_off_in_a_terminal(
        settings: Settings, account_name: Callable[[str], str]) -> None:
    account = account_name("colour")
    assert run_cli(settings, "accounts", "add", account).returncode == 0
    assert run_cli(settings, "limits", "set", account, "--max-positions", "5",
                   "--max-exposure", "10000").returncode == 0
    assert run_cli(settings, "halt", account, "--reason", "review").returncode == 0
    env = {**cli_env(settings), "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    args = [str(LEDGER_BIN), "positions", account]

    coloured = _in_a_terminal(args, env)
    plain = _in_a_terminal(args, {**env, "NO_COLOR": "1"})

    # The same words either way; only the colour goes (HALTED is red in a terminal).
    assert b"HALTED" in coloured
    assert b"HALTED" in plain
    assert COLOUR.search(coloured), coloured
    assert not COLOUR.search(plain), plain


@pytest.mark.pg
def test_run_keeps_library_lines_off_the_console_and_in_the_log(
        settings: Settings, tmp_path: Path) -> None:
    """A broker that is not there: aiokafka complains, the ledger says it retries."""
    log_file = tmp_path / "ledger.log"
    env = {**cli_env(settings), "LEDGER_KAFKA_BOOTSTRAP": "127.0.0.1:1",
           "LEDGER_LOG_FILE": str(log_file)}
    process = subprocess.Popen([str(LEDGER_BIN), "run", "relay"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            written = log_file.read_text() if log_file.exists() else ""
            if "aiokafka" in written and "retrying" in written:
                break
            time.sleep(0.2)
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    console = (out + err).decode()
    logged = log_file.read_text()

    assert process.returncode == 0, console
    assert "aiokafka" in logged, logged
    assert "retrying" in console, console
    assert "aiokafka" not in console, console
    # The log is the whole story: the ledger's own lines are there too.
    assert "retrying" in logged
