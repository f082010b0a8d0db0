"""What every benchmark shares: a fresh database, timing, and the one-line BENCH output.

Each benchmark prints `BENCH {json}` lines with bench, value, unit, baseline, baseline_value and
ratio (value / baseline_value, so higher is better for rates), plus its parameters, the seed and
the commit, so a line can be compared across runs.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from console import commands
from ledger.db import connect, dsn_for_database
from ledger.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "bench" / "out"


def commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    return result.stdout.strip() or "unknown"


def report(bench: str, value: float, unit: str, baseline: str, baseline_value: float,
           **params: Any) -> dict[str, Any]:
    """Print one BENCH line and append it to bench/out/results.jsonl."""
    line = {"bench": bench, "value": round(value, 3), "unit": unit, "baseline": baseline,
            "baseline_value": round(baseline_value, 3),
            "ratio": round(value / baseline_value, 3) if baseline_value else None,
            "commit": commit(),
            **{key: round(value, 3) if isinstance(value, float) else value
               for key, value in params.items()}}
    text = json.dumps(line, default=str)
    print(f"BENCH {text}", flush=True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with (OUT_DIR / "results.jsonl").open("a") as handle:
        handle.write(text + "\n")
    return line


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Timer:
    """Wall time of a block, from the monotonic clock."""

    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        self.elapsed_s = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed_s = time.perf_counter() - self.started


@asynccontextmanager
async def fresh_database() -> AsyncIterator[Settings]:
    """A new, migrated database on the local stack, dropped afterwards."""
    base = load_settings()
    admin_dsn = dsn_for_database(base.database_url, "postgres")
    name = f"ledger_bench_{uuid.uuid4().hex[:8]}"
    conn = await connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    settings = load_settings(database_url=dsn_for_database(base.database_url, name))
    try:
        await commands.migrate(settings)
        yield settings
    finally:
        conn = await connect(admin_dsn)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def wal_bytes(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"))


def money(text: str) -> Decimal:
    return Decimal(text)
