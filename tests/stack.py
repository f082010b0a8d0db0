"""Stop and start the local stack's servers from tests (broker and database restarts)."""

from __future__ import annotations

import subprocess

from tests.conftest import ROOT

STACK_TIMEOUT_S = 180


def _stack(*args: str) -> None:
    subprocess.run(["bash", str(ROOT / "stack" / "stack.sh"), *args], check=True,
                   timeout=STACK_TIMEOUT_S, capture_output=True)


def kafka_kill() -> None:
    """SIGKILL the broker (acknowledged messages survive: Kafka leaves fsync to the OS)."""
    _stack("kafka-kill")


def kafka_start() -> None:
    """Start the broker and wait until it answers a metadata request."""
    _stack("kafka-start")


def postgres_stop_immediate() -> None:
    """Stop PostgreSQL the way a crash does (no checkpoint; recovery replays the WAL)."""
    _stack("pg-stop", "--immediate")


def postgres_start() -> None:
    _stack("pg-start")
