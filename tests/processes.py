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
    """One `ledger run NAME` child with the test's settings; its output goes to a log file."""

    def __init__(self, settings: Settings, log_dir: Path, *args: str) -> None:
        self.args = list(args)
        self.settings = settings
        self.log_path = log_dir / f"{'-'.join(args)}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> LedgerProcess:
        env = cli_env(self.settings)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([str(LEDGER_BIN), "run", *self.args], env=env,
                                        stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        return self

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
