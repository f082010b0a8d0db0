"""Run `ledger run ...` as real OS processes in tests: start, SIGTERM, SIGKILL, restart."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from ledger.settings import Settings
from tests.conftest import LEDGER_BIN, cli_env

STOP_TIMEOUT_S = 30


class LedgerProcess:
    """One `ledger run NAME` child with the test's settings; its output goes to a log file.

    `command` replaces the installed `ledger` (a wrapper that plants a bug, say), `env` adds to
    the test's environment, and `extra_env` is read at every start (failpoints armed later).
    """

    def __init__(self, settings: Settings, log_dir: Path, *args: str, name: str | None = None,
                 command: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.settings = settings
        self.name = name or "-".join(args)
        self.command = command or [str(LEDGER_BIN)]
        self.env = {**cli_env(settings), **(env or {})}
        self.extra_env: dict[str, str] = {}
        self.log_path = log_dir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> LedgerProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([*self.command, "run", *self.args],
                                            env={**self.env, **self.extra_env},
                                            stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, as in a crash."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT_S)

    def stop(self) -> int:
        """SIGTERM and wait; return the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.terminate()
        return self.process.wait(STOP_TIMEOUT_S)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""
