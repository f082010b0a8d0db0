"""Stop and start the local stack's servers from tests (broker and database restarts).

Besides the stack `make up` starts, tests may run a second Kafka cluster of three nodes on other
ports (`THREE_BROKERS`), for what one broker cannot show: a leader dying under acks=all.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from tests.conftest import ROOT

STACK_TIMEOUT_S = 180


@dataclass(frozen=True)
class KafkaCluster:
    """One of the stack's Kafka clusters, as stack/stack.sh addresses it."""

    brokers: int
    port: int
    env: dict[str, str]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.port + 2 * node}" for node in range(self.brokers))


MAIN = KafkaCluster(brokers=1, port=9092, env={})
THREE_BROKERS = KafkaCluster(brokers=3, port=29092, env={
    "LEDGER_KAFKA_BROKERS": "3", "LEDGER_KAFKA_PORT": "29092",
    "LEDGER_KAFKA_CONTROLLER_PORT": "29093",
    "LEDGER_KAFKA_DIR": str(ROOT / ".stack" / "kafka-three"),
})


def _stack(*args: str, cluster: KafkaCluster = MAIN) -> None:
    subprocess.run(["bash", str(ROOT / "stack" / "stack.sh"), *args], check=True,
                   timeout=STACK_TIMEOUT_S, capture_output=True,
                   env={**os.environ, **cluster.env})


def kafka_kill(node: int | None = None, cluster: KafkaCluster = MAIN) -> None:
    """SIGKILL one broker (by id), else every one (acknowledged messages survive: replicas, or
    the OS's page cache)."""
    _stack("kafka-kill", *([str(node)] if node is not None else []), cluster=cluster)


def kafka_start(node: int | None = None, cluster: KafkaCluster = MAIN) -> None:
    """Start one broker (by id), else every one, and wait until each answers metadata."""
    _stack("kafka-start", *([str(node)] if node is not None else []), cluster=cluster)


def kafka_stop(cluster: KafkaCluster = MAIN) -> None:
    """Stop every broker of a cluster gracefully."""
    _stack("kafka-stop", cluster=cluster)


def postgres_stop_immediate() -> None:
    """Stop PostgreSQL the way a crash does (no checkpoint; recovery replays the WAL)."""
    _stack("pg-stop", "--immediate")


def postgres_start() -> None:
    _stack("pg-start")
