"""The trading morning: `make demo` (or `python -m demo`).

Sets up a fresh database for the demo, creates `large` (5 positions, $10,000) and `tiny`
(1 position, $2,000), starts the whole system with `ledger run all`, and plays a morning through
Kafka: strategies send bursts of signals, the dispatchers decide, a simulated broker fills or
rejects, a position manager closes on stop-loss / take-profit, the projector follows. Then it
prints the audit (no breach may exist) and writes the chart; then it imports the recorded history
of a dispatcher without these gates (examples/incident.jsonl) and audits that too, where the
breaches are plain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.live import Live
from rich.table import Table

from console import charts, commands
from demo.actors import Market, Tally, broker, now, position_manager, strategies
from ledger import kafka
from ledger.db import connect, dsn_for_database
from ledger.settings import Settings, load_settings
from ledger.topics import ensure_topics
from projections.breaches import AccountAudit, has_breach
from services import audit

ROOT = Path(__file__).resolve().parent.parent
ACCOUNTS = {"large": (5, "10000"), "tiny": (1, "2000")}
# The controls desks expect, on top of positions and exposure: at most this many orders a
# minute, this much exposure on one underlying, and no identical order within 30 s.
CONTROLS = {"large": {"max_orders_per_minute": 6, "max_underlying_exposure": "4000",
                      "duplicate_window_s": 30},
            "tiny": {"max_orders_per_minute": 3, "max_underlying_exposure": "2000",
                     "duplicate_window_s": 30}}
# When `large` is moved to reducing (its position manager flattens it) and back to active, as
# fractions of the morning.
REDUCE_AT, RESUME_AT = 0.4, 0.7
# Contracts per signal: `tiny` trades small, `large` larger; both ask for far more than allowed.
CONTRACTS_MAX = {"large": 6, "tiny": 3}
INTENT_TTL_S = 10
SETTLE_TIMEOUT_S = 60.0
REFRESH_S = 0.5


async def fresh_database(base: Settings, name: str) -> Settings:
    admin = await connect(dsn_for_database(base.database_url, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return base.model_copy(update={"database_url": dsn_for_database(base.database_url, name),
                                   "topic_prefix": f"demo-{uuid.uuid4().hex[:8]}.",
                                   "intent_ttl_s": float(INTENT_TTL_S)})


async def set_up(settings: Settings) -> None:
    await commands.migrate(settings)
    for account, (positions, exposure) in ACCOUNTS.items():
        await commands.add_account(settings, account, None)
        await commands.append_command(
            settings, account, "LimitsSet",
            {"max_open_positions": positions, "max_exposure": exposure, **CONTROLS[account]},
            event_id=uuid.uuid4(), occurred_at=now())
    await ensure_topics(settings)


def start_system(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(LEDGER_DATABASE_URL=settings.database_url, LEDGER_TOPIC_PREFIX=settings.topic_prefix,
               LEDGER_INTENT_TTL_S=str(settings.intent_ttl_s),
               LEDGER_SECRETS_DIR=str(settings.secrets_dir))
    log = log_path.open("ab")
    return subprocess.Popen([sys.executable, "-m", "console", "run", "all"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)


async def progress_table(conn: asyncpg.Connection, tally: Tally, remaining_s: float) -> Table:
    rows = await conn.fetch(
        """SELECT s.account, s.head, coalesce(p.applied_sequence, 0) AS projected,
                  (SELECT count(*) FROM projection_positions x WHERE x.account = s.account) AS open,
                  (SELECT count(*) FROM projection_pending x
                   WHERE x.account = s.account AND NOT x.reducing) AS pending,
                  coalesce((SELECT sum(quantity * average_price * multiplier)
                            FROM projection_positions x WHERE x.account = s.account), 0)
                  + coalesce((SELECT sum(abs(quantity) * limit_price * multiplier)
                              FROM projection_pending x
                              WHERE x.account = s.account AND NOT x.reducing), 0)
                      AS exposure,
                  p.max_open_positions, p.max_exposure, p.trading_state,
                  (SELECT count(*) FILTER (WHERE (data->>'allowed')::boolean)
                   FROM events e WHERE e.account = s.account AND e.type = 'SignalEvaluated')
                      AS allowed,
                  (SELECT count(*) FILTER (WHERE NOT (data->>'allowed')::boolean)
                   FROM events e WHERE e.account = s.account AND e.type = 'SignalEvaluated')
                      AS blocked
           FROM streams s LEFT JOIN projection_accounts p USING (account)
           WHERE s.account = ANY($1) ORDER BY s.account""", list(ACCOUNTS))
    title = f"trading morning: {max(0.0, remaining_s):.0f}s of signals left" if remaining_s > 0 \
        else "trading morning: closing out"
    table = Table("account", "state", "positions", "exposure", "signals", "allowed", "blocked",
                  "fills", "rejects", "closes", "head / projected", title=title)
    for row in rows:
        table.add_row(
            row["account"], row["trading_state"] or "active",
            f"{row['open']} + {row['pending']} / {row['max_open_positions']}",
            f"${row['exposure']:,.2f} / ${row['max_exposure'] or 0:,.0f}",
            str(tally.signals.get(row["account"], 0)), str(row["allowed"]), str(row["blocked"]),
            str(tally.fills.get(row["account"], 0)), str(tally.rejects.get(row["account"], 0)),
            str(tally.closes.get(row["account"], 0)), f"{row['head']} / {row['projected']}")
    return table


async def settled(conn: asyncpg.Connection) -> bool:
    row = await conn.fetchrow(
        """SELECT bool_and(s.head = coalesce(p.applied_sequence, 0)) AS projected,
                  (SELECT count(*) FROM projection_positions) AS open,
                  (SELECT count(*) FROM projection_pending) AS pending
           FROM streams s LEFT JOIN projection_accounts p USING (account)
           WHERE s.account = ANY($1)""", list(ACCOUNTS))
    return bool(row is not None and row["projected"] and row["open"] == 0
                and row["pending"] == 0)


async def play(settings: Settings, seconds: float, seed: int, console: Console) -> Tally:
    """Run the simulated world against the running system, then close everything out."""
    rng = random.Random(seed)
    topics = await ensure_topics(settings)
    market, tally = Market(rng), Tally()
    stop_signals, stop_all, flatten = asyncio.Event(), asyncio.Event(), asyncio.Event()
    producer = kafka.producer(settings, client_id="demo-world")
    await producer.start()
    conn = await connect(settings.database_url)
    tasks = [
        asyncio.create_task(market.run(stop_all)),
        asyncio.create_task(strategies(settings, topics, producer, market,
                                       CONTRACTS_MAX, rng, stop_signals, tally)),
        asyncio.create_task(broker(settings, topics, producer, market, rng, stop_all, tally)),
        *(asyncio.create_task(position_manager(settings, topics, producer, market, account,
                                               stop_all, flatten, tally))
          for account in ACCOUNTS),
    ]
    loop = asyncio.get_running_loop()
    started = loop.time()
    # The risk desk's moves on `large`: reduce (its position manager flattens it, openings are
    # blocked as trading_reducing), then back to active.
    desk = [(REDUCE_AT, "reducing", "risk desk: flatten large before the data release"),
            (RESUME_AT, "active", "risk desk: data release passed")]
    try:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while loop.time() - started < seconds:
                elapsed = loop.time() - started
                while desk and elapsed >= desk[0][0] * seconds:
                    _, state, reason = desk.pop(0)
                    await commands.set_trading_state(settings, ["large"], state, reason,
                                                     occurred_at=now())
                    live.console.print(f"large -> {state}: {reason}")
                live.update(await progress_table(conn, tally, seconds - elapsed))
                await asyncio.sleep(REFRESH_S)
            stop_signals.set()
            flatten.set()
            deadline = loop.time() + SETTLE_TIMEOUT_S + INTENT_TTL_S
            while not await settled(conn) and loop.time() < deadline:
                live.update(await progress_table(conn, tally, 0))
                await asyncio.sleep(REFRESH_S)
            live.update(await progress_table(conn, tally, 0))
        console.print()
    finally:
        stop_signals.set()
        stop_all.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()
        await conn.close()
    return tally


async def audit_accounts(settings: Settings, accounts: list[str]) -> list[AccountAudit]:
    conn = await connect(settings.database_url)
    try:
        return [await audit.audit_account(conn, account) for account in accounts]
    finally:
        await conn.close()


async def main(seconds: float, seed: int, database: str, out: Path) -> int:
    console = commands.wide_console()
    out.mkdir(parents=True, exist_ok=True)
    settings = await fresh_database(load_settings(), database)
    console.rule("[bold]setting up")
    await set_up(settings)
    console.print(f"database {database}, topics prefixed {settings.topic_prefix!r}, "
                  f"accounts: large (5 positions, $10,000), tiny (1 position, $2,000); "
                  f"seed {seed}")
    system = start_system(settings, out / "run-all.log")
    try:
        console.rule("[bold]the morning (ledger run all: ingest, relay, projector, dispatchers)")
        await play(settings, seconds, seed, console)
    finally:
        system.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            system.wait(30)
        if system.poll() is None:
            system.kill()
    console.rule("[bold]audit of the morning")
    morning = await audit_accounts(settings, list(ACCOUNTS))
    charts.print_audit(morning, console)
    charts.write_png(morning, out / "morning.png")
    console.print(f"chart: {out / 'morning.png'}")

    console.rule("[bold]a recorded history without these gates (examples/incident.jsonl)")
    report = await commands.import_file(settings, ROOT / "examples" / "incident.jsonl",
                                        skip_bad=False, create_accounts=True)
    console.print(f"imported {report.appended} events")
    incident = await audit_accounts(settings, ["incident"])
    charts.print_audit(incident, console)
    charts.write_png(incident, out / "incident.png")
    console.print(f"chart: {out / 'incident.png'}")
    console.rule()
    console.print(f"Inspect it yourself: LEDGER_DATABASE_URL={settings.database_url} "
                  ".venv/bin/ledger status | positions large | audit --plot audit.png")
    if has_breach(morning):
        console.print("[bold red]the morning over-traded: the gates failed")
        return 1
    console.print("[bold green]the morning never exceeded a limit; the recorded incident did")
    return 0


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float,
                        default=float(os.environ.get("DEMO_SECONDS", "75")),
                        help="How long the strategies send signals (default 75, env "
                             "DEMO_SECONDS).")
    parser.add_argument("--seed", type=int, default=20260203)
    parser.add_argument("--database", default="ledger_demo",
                        help="The database the demo creates afresh (default ledger_demo).")
    parser.add_argument("--out", type=Path, default=ROOT / "demo" / "out",
                        help="Where the charts and the system's log go.")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.seconds, args.seed, args.database, args.out)))
