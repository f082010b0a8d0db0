"""The trading morning: `make demo` (or `python -m demo`).

Sets up a fresh database for the demo, creates `large` (5 positions, $10,000) and `tiny`
(1 position, $2,000), starts the whole system with `ledger run all`, and plays a morning through
Kafka: strategies send bursts of signals, the dispatchers decide, a simulated broker fills or
rejects, a position manager closes on stop-loss / take-profit, the projector follows; every few
seconds the broker publishes its positions, which ingest reconciles with the ledger. Once, late
in the morning, the broker reports a fill of `large` twice: the reconciliation fails and `large`
goes to reducing. Then it prints the audit (no breach may exist), writes the chart, prints the
reconciliations and has an operator resume `large`; then it imports the recorded history of a
dispatcher without these gates (examples/incident.jsonl) and audits that too, where the breaches
are plain.
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
from decimal import Decimal
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.live import Live
from rich.table import Table

from console import charts, commands, kafka_users
from demo.actors import (
    JUDGED_WAIT_S,
    Book,
    Glitch,
    Market,
    Tally,
    broker,
    glitch,
    now,
    position_manager,
    statements,
    strategies,
)
from ledger import kafka, store
from ledger.db import connect, dsn_for_database
from ledger.events import (
    Difference,
    DiscrepancyFound,
    Event,
    PositionsReconciled,
    ReconciliationFailed,
    decode_event,
    format_decimal,
)
from ledger.kafka_admin import ensure_topics
from ledger.principals import Role
from ledger.runtime import OPERATING_ERRORS, configure_logging, one_line
from ledger.settings import Settings, load_settings
from projections.breaches import AccountAudit, has_breach
from services import audit

ROOT = Path(__file__).resolve().parent.parent
ACCOUNTS = {"large": (5, "10000"), "tiny": (1, "2000")}
# The controls desks expect, on top of positions and exposure: at most this many orders a
# minute, this much exposure on one underlying, no identical order within 30 s, and no opening
# unless the broker's positions matched the ledger's within the last 30 s. The broker publishes
# them every 3 s (demo/actors.py STATEMENT_EVERY_S), so openings pass while it does; were its
# statements to stop (or every one to fail), openings would stop 30 s later.
CONTROLS = {"large": {"max_orders_per_minute": 6, "max_underlying_exposure": "4000",
                      "duplicate_window_s": 30, "max_reconcile_age_s": 30},
            "tiny": {"max_orders_per_minute": 3, "max_underlying_exposure": "2000",
                     "duplicate_window_s": 30, "max_reconcile_age_s": 30}}
# When `large` is moved to reducing (its position manager flattens it) and back to active, as
# fractions of the morning.
REDUCE_AT, RESUME_AT = 0.4, 0.7
# When the broker's glitch on `large` starts (it waits for a quiet moment, a few seconds): after
# the desk's resume, so what moves `large` to reducing the second time is the failed
# reconciliation alone, and `large` stays reducing until the operator resumes it after the audit.
GLITCH_ACCOUNT, GLITCH_AT = "large", 0.8
# Contracts per signal: `tiny` trades small, `large` larger; both ask for far more than allowed.
CONTRACTS_MAX = {"large": 6, "tiny": 3}
INTENT_TTL_S = 10
SETTLE_TIMEOUT_S = 60.0
REFRESH_S = 0.5
# How long the close-out waits for a glitch not played yet.
GLITCH_WAIT_S = 30.0
# How long the system may take to start (the consumer groups to form) before the morning opens.
STARTUP_TIMEOUT_S = 120.0


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


async def play(settings: Settings, seconds: float, seed: int, console: Console) -> Glitch:
    """Run the simulated world against the running system, then close everything out."""
    rng = random.Random(seed)
    topics = await ensure_topics(settings)
    market, tally = Market(rng), Tally()
    stop_signals, stop_all, flatten = asyncio.Event(), asyncio.Event(), asyncio.Event()
    # The world outside the ledger logs in as outside clients do, each with its role's grants
    # only: the broker adapter and position manager, the strategies, the order router.
    adapter = await kafka_users.ensure_user(settings, "demo-adapter", Role.adapter)
    strategy = await kafka_users.ensure_user(settings, "demo-strategy", Role.strategy)
    router = await kafka_users.ensure_user(settings, "demo-broker", Role.router)
    producer = kafka.producer(adapter, client_id="demo-world")
    signal_producer = kafka.producer(strategy, client_id="demo-strategies")
    await producer.start()
    await signal_producer.start()
    conn = await connect(settings.database_url)
    book = Book(topics, producer, ACCOUNTS)
    scripted = Glitch(account=GLITCH_ACCOUNT, max_open_positions=ACCOUNTS[GLITCH_ACCOUNT][0],
                      max_exposure=Decimal(ACCOUNTS[GLITCH_ACCOUNT][1]),
                      max_underlying_exposure=Decimal(
                          str(CONTROLS[GLITCH_ACCOUNT]["max_underlying_exposure"])))
    tasks = [
        asyncio.create_task(market.run(stop_all)),
        asyncio.create_task(broker(router, topics, book, market, rng, stop_all, tally)),
        asyncio.create_task(statements(settings, book, stop_all)),
        asyncio.create_task(glitch(book, scripted, stop_all)),
        *(asyncio.create_task(position_manager(settings, book, market, account,
                                               stop_all, flatten, tally))
          for account in ACCOUNTS),
    ]
    loop = asyncio.get_running_loop()
    try:
        # Openings need a recent reconciliation (max_reconcile_age_s): the morning opens once
        # ingest has matched the broker's first positions of every account.
        waited = loop.time()
        while not all(book.reconciled(account) for account in ACCOUNTS):
            if loop.time() - waited > STARTUP_TIMEOUT_S:
                raise RuntimeError(f"the system did not reconcile the broker's positions within "
                                   f"{STARTUP_TIMEOUT_S:.0f} s: see run-all.log")
            await asyncio.sleep(REFRESH_S)
        console.print(f"system up after {loop.time() - waited:.0f} s: the broker's positions "
                      f"reconciled for {', '.join(ACCOUNTS)}; it publishes them every few "
                      "seconds")
        tasks.append(asyncio.create_task(strategies(settings, topics, signal_producer, market,
                                                    CONTRACTS_MAX, rng, stop_signals, tally,
                                                    quiet=scripted.quiet)))
        started = loop.time()
        # The risk desk's moves on `large`: reduce (its position manager flattens it, openings
        # are blocked as trading_reducing), then back to active; then the broker's glitch.
        desk = [(REDUCE_AT, "reducing", "risk desk: flatten large before the data release"),
                (RESUME_AT, "active", "risk desk: data release passed")]
        shown = False
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while loop.time() - started < seconds:
                elapsed = loop.time() - started
                while desk and elapsed >= desk[0][0] * seconds:
                    _, state, reason = desk.pop(0)
                    await commands.set_trading_state(settings, ["large"], state, reason,
                                                     occurred_at=now())
                    live.console.print(f"large -> {state}: {reason}")
                if elapsed >= GLITCH_AT * seconds:
                    scripted.start.set()
                shown = shown or _show_glitch(scripted, live.console)
                live.update(await progress_table(conn, tally, seconds - elapsed))
                await asyncio.sleep(REFRESH_S)
            stop_signals.set()
            # A short morning may end before the glitch: it comes before the close-out.
            scripted.start.set()
            until = loop.time() + GLITCH_WAIT_S
            while not scripted.done.is_set() and loop.time() < until:
                live.update(await progress_table(conn, tally, 0))
                await asyncio.sleep(REFRESH_S)
            if not shown:
                _show_glitch(scripted, live.console)
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
        await signal_producer.stop()
        await conn.close()
    return scripted


def _show_glitch(scripted: Glitch, console: Console) -> bool:
    """Print the broker's glitch and the ledger's verdict once it happened; True if printed."""
    doubled = scripted.doubled_fill
    if doubled is None:
        return False
    data = doubled.fill["data"]
    what = f"{data['symbol']} {data['side']}"
    for line in (
        f"broker glitch: fill {data['fill_id']} ({scripted.account}: {data['quantity']} {what} "
        f"@ {data['price']}) reported again as {doubled.again_id}",
        f"  the broker's book counts it once ({format_decimal(doubled.broker)} {what}), "
        f"the ledger books both ({format_decimal(doubled.ledger)})",
        f"  ledger: not judged within {JUDGED_WAIT_S:.0f} s" if doubled.differences is None
        else f"  ledger: ReconciliationFailed, "
             f"{'; '.join(_difference(d) for d in doubled.differences) or 'no difference'}: "
             f"{scripted.account} -> reducing",
    ):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return True


def _difference(difference: Difference) -> str:
    return (f"{difference.symbol} {difference.side}: broker {format_decimal(difference.broker)}, "
            f"ledger {format_decimal(difference.ledger)}")


async def audit_accounts(settings: Settings, accounts: list[str]) -> list[AccountAudit]:
    conn = await connect(settings.database_url)
    try:
        return [await audit.audit_account(conn, account) for account in accounts]
    finally:
        await conn.close()


# The morning's rules and live table span the console: a log file gets 120 columns.
PIPED_WIDTH = 120


async def main(seconds: float, seed: int, database: str, out: Path) -> int:
    console = commands.wide_console(PIPED_WIDTH)
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
        scripted = await play(settings, seconds, seed, console)
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

    console.rule("[bold]reconciliation with the broker")
    await print_reconciliations(settings, list(ACCOUNTS), console)
    doubled = scripted.doubled_fill
    reason = (f"operator: audited the duplicate fill {doubled.again_id} of "
              f"{doubled.fill['data']['fill_id']}" if doubled is not None
              else "operator: audited the reconciliations")
    console.print(f"operator resumes {GLITCH_ACCOUNT} after the audit ({reason})",
                  markup=False, highlight=False, soft_wrap=True)
    for change in await commands.set_trading_state(settings, [GLITCH_ACCOUNT], "active", reason,
                                                   occurred_at=now()):
        console.print(f"{change.account}: {change.event_type} at sequence {change.sequence}",
                      highlight=False)

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


async def print_reconciliations(settings: Settings, accounts: list[str], console: Console) -> None:
    """Print each account's reconciliations with the broker: how many matched, every failure
    with its differences, and every discrepancy."""
    conn = await connect(settings.database_url)
    try:
        rows = await conn.fetch(
            f"SELECT {store.EVENT_JSON_SQL} AS event FROM events WHERE account = ANY($1) "
            "AND type = ANY($2) ORDER BY account, sequence", accounts,
            ["PositionsReconciled", "ReconciliationFailed", "DiscrepancyFound"])
    finally:
        await conn.close()
    events = [decode_event(row["event"]) for row in rows]
    for account in accounts:
        own = [event for event in events if event.account == account]
        matched = sum(isinstance(event.data, PositionsReconciled) for event in own)
        failed = [event for event in own if isinstance(event.data, ReconciliationFailed)]
        found = [event for event in own if isinstance(event.data, DiscrepancyFound)]
        console.print(f"{account}  {matched} reconciliations with the broker matched, "
                      f"{len(failed)} failed; {len(found) or 'no'} "
                      f"discrepanc{'ies' if len(found) > 1 else 'y'}", highlight=False)
        for event in failed + found:
            console.print(f"  {_outcome(event)}", markup=False, highlight=False,
                          soft_wrap=True)


def _outcome(event: Event) -> str:
    data = event.data
    if isinstance(data, ReconciliationFailed):
        return (f"#{event.sequence} ReconciliationFailed (broker as of "
                f"{data.as_of:%H:%M:%S}, ledger at #{data.head}): "
                + "; ".join(_difference(d) for d in data.differences))
    assert isinstance(data, DiscrepancyFound), event.type
    return f"#{event.sequence} DiscrepancyFound {data.kind}: {data.reason}"


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
    # The outside world's Kafka clients (aiokafka) warn when a group coordinator moves; that
    # goes to the log beside run-all.log, and the console keeps the morning's own lines.
    configure_logging(args.out / "demo.log")
    try:
        sys.exit(asyncio.run(main(args.seconds, args.seed, args.database, args.out)))
    except OPERATING_ERRORS as exc:
        # The details (a library's traceback) are in the log; the console gets one line.
        print(f"demo: {one_line(exc)} (details in {args.out / 'demo.log'})", file=sys.stderr)
        sys.exit(1)
