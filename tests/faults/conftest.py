"""The campaign's shared cluster: one database, one set of topics, ingest + relay + projector."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from ledger.settings import Settings
from tests.conftest import with_topics
from tests.faults.harness import Cluster

# CI runs this many seeded schedules; `make chaos N=500` or `make chaos SEED=n` choose others.
CI_SCHEDULES = 30


def campaign_seeds() -> list[int]:
    """The seeds to run: CHAOS_SEED (one), else CHAOS_N of them from CHAOS_FIRST (default 1)."""
    if os.environ.get("CHAOS_SEED"):
        return [int(os.environ["CHAOS_SEED"])]
    first = int(os.environ.get("CHAOS_FIRST", "1"))
    return list(range(first, first + int(os.environ.get("CHAOS_N", CI_SCHEDULES))))


async def start_cluster(make_database: Callable[[], Awaitable[Settings]], log_dir: Path,
                        prefix: str, bugs: dict[str, str] | None = None) -> Cluster:
    settings = with_topics(await make_database(), prefix)
    cluster = Cluster(settings, log_dir, bugs)
    await cluster.start()
    return cluster


@pytest.fixture(scope="module")
async def cluster(make_database: Callable[[], Awaitable[Settings]],
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    log_dir = tmp_path_factory.mktemp("campaign")
    running = await start_cluster(make_database, log_dir, f"chaos{os.getpid()}.")
    try:
        yield running
    finally:
        await running.stop()
