"""The scale matrix: `ledger import`, `rebuild` and `audit` at 10k, 100k and 1M events over 2, 100
and 1,000 accounts, each run as a user runs it (a subprocess, peak RSS from wait4).

Baselines in the same run and database: asyncpg COPY of the same events into an equal table
(`LIKE events INCLUDING ALL`) for import; a raw server-side cursor over the same rows with
json.loads of each for rebuild and audit. Expectation on the 2-core machine: time grows linearly
with events (fitted exponent near 1.0 at every account count), the account count changes little
beyond the per-account transactions of import, and peak RSS does not grow with the store (pages
of 1,000 events; one account's state at a time per worker).
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.bench_append import COLUMNS, as_rows, make_fills
from bench.common import ROOT, Timer, fresh_database, report
from ledger import store
from ledger.db import connect
from ledger.events import Event, encode_event
from ledger.settings import Settings

SEED = 20260206
LEDGER_BIN = ROOT / ".venv" / "bin" / "ledger"
# Events generated, written and copied at a time: memory stays flat at 1M events.
GENERATION_BATCH = 10_000


def _batches(accounts: list[str], total: int, rng: random.Random) -> Iterator[list[Event]]:
    """Fills spread evenly over the accounts, GENERATION_BATCH at a time, one account per batch."""
    per_account = total // len(accounts)
    for account in accounts:
        for start in range(0, per_account, GENERATION_BATCH):
            count = min(GENERATION_BATCH, per_account - start)
            yield _fills_from(account, start, count, rng)


def _fills_from(account: str, start: int, count: int, rng: random.Random) -> list[Event]:
    # make_fills numbers fills from 0; shifting the prefix keeps fill ids unique per account.
    return make_fills(account, count, rng, prefix=f"{account}-{start}")


async def write_history(settings: Settings, path: Path, accounts: list[str], total: int,
                        rng: random.Random) -> float:
    """Write the JSONL history; COPY the same events into an equal table; return COPY seconds."""
    conn = await connect(settings.database_url)
    copy_s = 0.0
    try:
        await conn.execute("CREATE TABLE copy_baseline (LIKE events INCLUDING ALL)")
        sequences = dict.fromkeys(accounts, 1)
        with path.open("wb") as handle:
            for batch in _batches(accounts, total, rng):
                handle.writelines(encode_event(event) + b"\n" for event in batch)
                account = batch[0].account
                rows = as_rows(batch, sequences[account])
                sequences[account] += len(batch)
                with Timer() as timer:
                    await conn.copy_records_to_table("copy_baseline", records=rows,
                                                     columns=COLUMNS)
                copy_s += timer.elapsed_s
        await conn.execute("DROP TABLE copy_baseline")
    finally:
        await conn.close()
    return copy_s


async def cursor_baseline(settings: Settings) -> float:
    """Seconds to read every event through a server-side cursor and json.loads each."""
    conn = await connect(settings.database_url)
    try:
        with Timer() as timer:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                cursor = conn.cursor(f"SELECT {store.EVENT_JSON_SQL} FROM events "
                                     "ORDER BY account, sequence", prefetch=1000)
                async for row in cursor:
                    json.loads(row[0])
    finally:
        await conn.close()
    return timer.elapsed_s


def cli_subprocess(settings: Settings, *args: str) -> tuple[float, int]:
    """Run a `ledger` command as a user would; return (seconds, peak RSS of the process, KiB)."""
    env = {"LEDGER_DATABASE_URL": settings.database_url, "PATH": "/usr/bin:/bin",
           "LEDGER_SECRETS_DIR": str(settings.secrets_dir)}
    with Timer() as timer:
        result = subprocess.run([sys.executable, "-m", "bench.peak_rss", str(LEDGER_BIN), *args],
                                env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                                check=False)
    # audit exits 3 when it finds a breach: still a complete run.
    if result.returncode not in (0, 3):
        raise RuntimeError(f"ledger {' '.join(args)} exited {result.returncode}: "
                           f"{result.stderr.decode().strip()}")
    return timer.elapsed_s, int(result.stdout.split()[-1])


def fitted_exponent(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of log(time) against log(events): 1.0 is linear."""
    xs = [math.log(size) for size, _ in points]
    ys = [math.log(seconds) for _, seconds in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    variance = sum((x - mean_x) ** 2 for x in xs)
    return covariance / variance


async def run_cell(events: int, account_count: int, rng: random.Random,
                   times: dict[str, list[tuple[int, float]]]) -> None:
    accounts = [f"s{account_count}_{index:04d}" for index in range(account_count)]
    params = {"events": events, "accounts": account_count, "seed": SEED}
    async with fresh_database() as settings:
        with tempfile.TemporaryDirectory(prefix="ledger-bench-") as directory:
            history = Path(directory) / "history.jsonl"
            copy_s = await write_history(settings, history, accounts, events, rng)
            import_s, import_kib = cli_subprocess(settings, "import", str(history),
                                                  "--create-accounts")
        baseline_s = await cursor_baseline(settings)
        rebuild_s, rebuild_kib = cli_subprocess(settings, "rebuild")
        audit_s, audit_kib = cli_subprocess(settings, "audit", "--json")
    for name, seconds, kib, baseline, base_s in (
            ("import", import_s, import_kib, "asyncpg COPY into an equal table", copy_s),
            ("rebuild", rebuild_s, rebuild_kib, "server-side cursor + json.loads", baseline_s),
            ("audit", audit_s, audit_kib, "server-side cursor + json.loads", baseline_s)):
        report(name, events / seconds, "events/s", baseline, events / base_s,
               peak_rss_mib=round(kib / 1024, 1), seconds=round(seconds, 2), **params)
        times.setdefault(name, []).append((events, seconds))


async def run(quick: bool) -> None:
    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    account_counts = [2, 100] if quick else [2, 100, 1_000]
    print(f"# scale: seed={SEED} events={sizes} accounts={account_counts}", flush=True)
    rng = random.Random(SEED)
    for account_count in account_counts:
        times: dict[str, list[tuple[int, float]]] = {}
        for events in sizes:
            await run_cell(events, account_count, rng, times)
        for name, points in times.items():
            report(f"{name}_scaling", fitted_exponent(points), "exponent", "linear", 1.0,
                   accounts=account_count, sizes=[size for size, _ in points],
                   seconds=[round(seconds, 2) for _, seconds in points])
