"""The `ledger` command line: parse arguments, build settings, wire objects; no ledger logic.

Exit codes (docs/design.md): 0 success; 1 error, one line on stderr and never a traceback; 2 usage;
3 when `audit` finds a breach or `rebuild --verify` finds a difference.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable
from datetime import datetime, timedelta
from enum import StrEnum
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from console import commands, kafka_users, live
from console.asyncapi import describe as describe_asyncapi
from ledger import kafka, roles
from ledger.clock import utc_now
from ledger.errors import LedgerError
from ledger.events import format_time
from ledger.principals import Role
from ledger.runtime import configure_logging, tune_gc
from ledger.settings import Settings, load_settings
from projections import replay
from projections.breaches import has_breach

T = TypeVar("T")
DISTRIBUTION = "position-ledger"

app = typer.Typer(
    help="An event-sourced position ledger: PostgreSQL is the truth, Kafka distributes, "
    "per-account projections feed race-free risk gates.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
accounts_app = typer.Typer(help="Manage accounts (streams and their login roles).",
                           no_args_is_help=True)
limits_app = typer.Typer(help="Set an account's risk limits.", no_args_is_help=True)
kafka_app = typer.Typer(help="The Kafka cluster's principals (SCRAM users and their ACLs).",
                        no_args_is_help=True)
kafka_user_app = typer.Typer(help="Outside clients' users: adapter, strategy, router, observer.",
                             no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(limits_app, name="limits")
app.add_typer(kafka_app, name="kafka")
kafka_app.add_typer(kafka_user_app, name="user")

def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"ledger {version(DISTRIBUTION)}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    """Options of `ledger` itself, before the command."""


TIME_FORMATS = ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%d %H:%M:%S%z"]

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="Administrative DSN (env LEDGER_DATABASE_URL).",
                 show_default=False),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def _settings(database_url: str | None = None) -> Settings:
    return load_settings(database_url=database_url)


def _run(coro: Awaitable[T]) -> T:
    async def wrapper() -> T:
        return await coro

    tune_gc()
    return asyncio.run(wrapper())


@app.command()
def config(database_url: DatabaseUrl = None) -> None:
    """Print the effective settings as KEY=VALUE lines (passwords masked)."""
    settings = _settings(database_url)
    for line in settings.as_lines():
        typer.echo(line)
    if settings.kafka_security_protocol == "SASL_PLAINTEXT":
        path = kafka.password_file(settings, settings.kafka_user)
        state = "present" if path.exists() else "missing"
        typer.echo(f"LEDGER_KAFKA_PASSWORD=*** (first line of {path}, {state})")


@app.command()
def migrate(
    rotate_passwords: Annotated[bool, typer.Option(
        "--rotate-passwords", help="Give the job roles (ingest, relay, projector, operator) new "
        "passwords, written to LEDGER_SECRETS_DIR.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create this ledger's roles, apply the missing migrations in order; idempotent."""
    done = _run(commands.migrate(_settings(database_url), rotate_passwords=rotate_passwords))
    for name in done.applied:
        typer.echo(f"applied {name}")
    if not done.applied:
        typer.echo("schema is up to date")
    for role in done.passwords_set:
        typer.echo(f"role {role}: password set (in LEDGER_SECRETS_DIR)")
    for role in done.passwords_elsewhere:
        typer.echo(f"role {role}: logs in with a password kept elsewhere (`ledger migrate "
                   "--rotate-passwords` sets new ones here)", err=True)
    if done.kafka_principals:
        typer.echo(f"kafka: topics, users and grants of {', '.join(done.kafka_principals)} "
                   "(passwords in LEDGER_SECRETS_DIR)")


@kafka_user_app.command("add")
def kafka_user_add(
    name: Annotated[str, typer.Argument(
        metavar="NAME", help="User name: lowercase letters, digits, '.', '_', '-'; its consumer "
                             "groups must start with it.")],
    role: Annotated[Role, typer.Option(
        "--role", help="adapter: writes executions and broker-positions; strategy: writes "
        "signals; router: reads order-intents; observer: reads ledger-events and dead-letters.",
        case_sensitive=False)],
) -> None:
    """Create a Kafka user with its role's grants; the password goes to a 0600 file only."""
    path = _run(kafka_users.add_user(_settings(), name, role))
    typer.echo(f"kafka user {name}: created with role {role.value}; password in {path}")


@kafka_user_app.command("list")
def kafka_user_list(json_output: JsonFlag = False) -> None:
    """List the cluster's users and what each may do on this ledger's topics."""
    found = _run(kafka_users.list_users(_settings()))
    if json_output:
        typer.echo(json.dumps([user.as_json() for user in found]))
        return
    for user in found:
        grants = "; ".join(user.grants) if user.grants else "-"
        typer.echo(f"{user.name}\t{user.role}\t{grants}")


@accounts_app.command("add")
def accounts_add(
    name: Annotated[str, typer.Argument(
        metavar="NAME", help="Account name: lowercase letters, digits, _.")],
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="Use this password (a 0600 file) for the role "
                     "instead of a generated one (for an existing role: with "
                     "--rotate-password)."),
    ] = None,
    rotate_password: Annotated[bool, typer.Option(
        "--rotate-password", help="Give an existing account role a new password (its running "
        "dispatcher must then be restarted).")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create the account's stream and its login role; an existing role keeps its password.

    Prints which role is which and what each may do.
    """
    settings = _settings(database_url)
    added = _run(commands.add_account(settings, name, password_file,
                                      rotate_password=rotate_password))
    stream = "created" if added.stream_created else "already exists"
    role = "created" if added.role_created else "already exists"
    where = f" ({added.password_path})" if added.password_path is not None else ""
    typer.echo(f"account {name}: {stream}; role {added.role}: {role}, password "
               f"{added.password}{where}")
    for role_name, duty in roles.duties(roles.roles_for(settings), name):
        typer.echo(f"  {role_name:<32} {duty}")


@limits_app.command("set")
def limits_set(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Account name.")],
    max_positions: Annotated[int | None, typer.Option(
        "--max-positions", min=0, help="Most open positions + pending intents.")] = None,
    max_exposure: Annotated[str | None, typer.Option(
        "--max-exposure", help="Most open + pending notional, in dollars.")] = None,
    max_order: Annotated[str | None, typer.Option("--max-order",
                                                  help="Most notional of one order.")] = None,
    daily_loss: Annotated[str | None, typer.Option("--daily-loss",
                                                   help="Most realised loss in a day.")] = None,
    max_orders_per_minute: Annotated[int | None, typer.Option(
        "--max-orders-per-minute", help="Most intents issued in any 60 s, this one included.")]
    = None,
    max_underlying_exposure: Annotated[str | None, typer.Option(
        "--max-underlying-exposure", help="Most open + pending notional on one underlying "
        "(a symbol's first word), in dollars.")] = None,
    duplicate_window: Annotated[int | None, typer.Option(
        "--duplicate-window", help="Seconds in which an identical order (symbol, side, "
        "quantity, limit price) is refused as a duplicate.")] = None,
    max_reconcile_age: Annotated[int | None, typer.Option(
        "--max-reconcile-age", help="Seconds: openings are blocked unless the broker's "
        "positions matched the ledger's (PositionsReconciled) at most this long ago.")] = None,
    clear: Annotated[list[str] | None, typer.Option(
        "--clear", help="Remove an optional limit (max-order, daily-loss, "
        "max-orders-per-minute, max-underlying-exposure, duplicate-window, max-reconcile-age; "
        "or its field name). Repeat for several.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Append LimitsSet: the limits named change, the others keep their values.

    The event states every limit in force. An account's first limits need --max-positions
    and --max-exposure.
    """
    given: dict[str, Any] = {
        "max_open_positions": max_positions,
        "max_exposure": max_exposure,
        "max_order_notional": max_order,
        "daily_loss_limit": daily_loss,
        "max_orders_per_minute": max_orders_per_minute,
        "max_underlying_exposure": max_underlying_exposure,
        "duplicate_window_s": duplicate_window,
        "max_reconcile_age_s": max_reconcile_age,
    }
    if all(value is None for value in given.values()) and not clear:
        raise typer.BadParameter("nothing to change: name a limit to set, or --clear one")
    sequence, in_force = _run(commands.set_limits(_settings(database_url), name, given,
                                                  clear or [], occurred_at=utc_now()))
    shown = ", ".join(f"{key}={'none' if value is None else value}"
                      for key, value in in_force.items())
    typer.echo(f"{name}: LimitsSet at sequence {sequence}: {shown}")


def _targets(name: str | None, every: bool) -> list[str] | None:
    if (name is None) == (not every):
        raise typer.BadParameter("name one account, or --all for every account")
    return None if every else [name] if name is not None else None


def _change_state(name: str | None, every: bool, state: str, reason: str | None,
                  database_url: str | None) -> None:
    changed = _run(commands.set_trading_state(_settings(database_url), _targets(name, every),
                                              state, reason, occurred_at=utc_now()))
    for change in changed:
        cancelled = (f"; {len(change.cancelled)} pending intent(s) cancelled"
                     if change.cancelled else "")
        typer.echo(f"{change.account}: {change.event_type} at sequence {change.sequence}"
                   f"{cancelled}")
    if not changed:
        typer.echo("no account")


@app.command()
def reconcile(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Account name.")],
    broker: Annotated[Path, typer.Option(
        "--broker", help='The broker\'s positions as JSON: {"account": NAME, "as_of": TIME, '
        '"positions": [{"symbol", "side", "quantity"}]}.', exists=True, dir_okay=False)],
    json_output: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Compare the broker's positions with the ledger's at its head, and record the outcome.

    A match appends PositionsReconciled (exit 0); a mismatch appends ReconciliationFailed with
    every difference and moves the account to reducing (exit 3). One outcome per broker as_of:
    running it again reports the outcome on record.
    """
    outcome = _run(commands.reconcile(_settings(database_url), name, broker))
    if json_output:
        typer.echo(json.dumps(outcome.document()))
    else:
        repeated = " (already on record)" if outcome.repeated else ""
        if outcome.matched:
            typer.echo(f"{name}: broker positions as of {format_time(outcome.as_of)} match the "
                       f"ledger at sequence {outcome.head}{repeated}")
        else:
            typer.echo(f"{name}: broker positions as of {format_time(outcome.as_of)} differ "
                       f"from the ledger at sequence {outcome.head}{repeated}; account reducing")
            for d in outcome.differences:
                typer.echo(f"  {d.symbol} {d.side}: broker {d.broker:f}, ledger {d.ledger:f}")
            if outcome.omitted:
                typer.echo(f"  ... and {outcome.omitted} more")
    if not outcome.matched:
        raise typer.Exit(3)


@app.command()
def halt(
    name: Annotated[str | None, typer.Argument(
        metavar="NAME", help="Account name (or --all).")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why trading stops.")] = "",
    every: Annotated[bool, typer.Option("--all", help="Halt every account.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Append TradingHalted, and IntentCancelled for every pending intent: the kill switch.

    Dispatchers emit nothing until resume; the relay sends each cancel to the router.
    """
    if not reason:
        raise typer.BadParameter("--reason is required: say why trading stops")
    _change_state(name, every, "halted", reason, database_url)


@app.command()
def resume(
    name: Annotated[str | None, typer.Argument(
        metavar="NAME", help="Account name (or --all).")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why trading resumes.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Resume every account.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Append TradingResumed: the account is active again (from halted or reducing)."""
    _change_state(name, every, "active", reason, database_url)


@app.command()
def reduce(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Account name.")],
    reason: Annotated[str, typer.Option("--reason", help="Why only reductions may trade.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Append TradingReduced: openings are blocked; orders that reduce an open position pass."""
    _change_state(name, False, "reducing", reason, database_url)


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(metavar="FILE",
                                         help="A JSONL file of events, one per line.",
                                         exists=True, dir_okay=False, readable=True)],
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Store the good lines and "
                                           "report each bad one, instead of storing nothing.")]
    = False,
    create_accounts: Annotated[bool, typer.Option("--create-accounts", help="Create accounts "
                                                  "the file names that do not exist yet.")]
    = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Append a history from JSONL; idempotent, and all or nothing unless --skip-bad."""
    report = _run(commands.import_file(_settings(database_url), file, skip_bad=skip_bad,
                                       create_accounts=create_accounts))
    for error in report.bad:
        typer.echo(f"skipped {error}", err=True)
    typer.echo(f"{report.lines} lines: {report.appended} appended, "
               f"{report.duplicates} already stored, {report.bad_count} bad")


@app.command()
def export(
    account: Annotated[str | None, typer.Option("--account", help="Only this account.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write the store as JSONL on stdout, re-importable with `ledger import`."""
    _run(commands.export(_settings(database_url), account, sys.stdout.buffer))


@app.command()
def status(
    json_output: JsonFlag = False,
    watch: Annotated[bool, typer.Option(
        "--watch", help="A live console: per account the trading state, positions and exposure "
        "against their limits, pending intents, lag and the last decisions; refreshed every "
        "--interval seconds until Ctrl-C. Reads only.")] = False,
    interval: Annotated[float, typer.Option(
        "--interval", min=0.2, max=60, help="Seconds between refreshes of --watch.")]
    = live.REFRESH_S,
    database_url: DatabaseUrl = None,
) -> None:
    """Show per account: head, published, projected, lag, trading state."""
    if watch:
        if json_output:
            raise typer.BadParameter("--watch draws a live console; --json prints one "
                                     "document: choose one")
        _run(live.watch(_settings(database_url), interval))
        return
    rows = _run(commands.status(_settings(database_url)))
    commands.print_status(rows, json_output)


class Process(StrEnum):
    """The long-running processes `ledger run` starts."""

    ingest = "ingest"
    relay = "relay"
    projector = "projector"
    dispatcher = "dispatcher"
    all = "all"


@app.command()
def run(
    process: Annotated[Process, typer.Argument(metavar="PROCESS", help="Which process to run.")],
    account: Annotated[str | None, typer.Option(
        "--account", help="The account a dispatcher serves (required for `dispatcher`).")]
    = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Run a long-running process until SIGTERM/SIGINT; `all` runs every process.

    `all` runs ingest, relay, projector and one dispatcher per account that has limits.
    The console shows the ledger's own log lines; every line, the libraries' included, also
    goes to LEDGER_LOG_FILE ("-": everything to the console).
    """
    settings = _settings(database_url)
    configure_logging(settings.log_path)
    _run(commands.run_process(settings, process.value, account))


@app.command()
def follow(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Account name.")],
    from_sequence: Annotated[int, typer.Option("--from-sequence", min=1,
                                               help="First sequence to print.")] = 1,
    database_url: DatabaseUrl = None,
) -> None:
    """Stream one account's events live as JSON lines: from the store, then from Kafka."""
    _run(commands.follow(_settings(database_url), name, from_sequence, sys.stdout.buffer))


@app.command()
def positions(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Account name.")],
    as_of: Annotated[datetime | None, typer.Option(
        "--as-of", formats=TIME_FORMATS,
        help="Replay the store up to this moment (ISO 8601 with a timezone, e.g. "
             "2026-02-03T17:40:00+00:00) instead of reading the projection.")] = None,
    json_output: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Show open positions, pending intents, exposure and limits of one account."""
    if as_of is not None and as_of.utcoffset() is None:
        raise typer.BadParameter("--as-of needs a timezone, e.g. +00:00 or Z")
    document = _run(commands.positions(_settings(database_url), name, as_of))
    commands.print_positions(document, json_output)


@app.command()
def rebuild(
    account: Annotated[str | None, typer.Option("--account", help="Only this account.")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Compare the live projection with a "
                                         "rebuild instead of writing; exit 3 on a difference.")]
    = False,
    jobs: Annotated[int, typer.Option("--jobs", min=1, max=replay.JOBS_MAX,
                                      help="Worker processes, each rebuilding whole accounts "
                                           "(default: one per core).")]
    = min(os.cpu_count() or 1, replay.JOBS_MAX),
    database_url: DatabaseUrl = None,
) -> None:
    """Rebuild projections from the store, one short transaction per account."""
    found = _run(commands.rebuild_projections(_settings(database_url), account, verify, jobs))
    for difference in found:
        typer.echo(str(difference))
    if verify:
        typer.echo("projections match the store" if not found
                   else f"{len(found)} differences", err=bool(found))
        if found:
            raise typer.Exit(3)
    else:
        typer.echo("projections rebuilt")


@app.command()
def dispatch(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Account name.")],
    signals: Annotated[Path, typer.Option("--signals", exists=True, dir_okay=False,
                                          help="A JSONL file of signals, one per line.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide each signal, then roll "
                                          "it back: nothing is recorded.")] = False,
    max_signal_age: Annotated[float | None, typer.Option(
        "--max-signal-age", min=0, help="Block signals older than this many seconds at "
        "decision time (gate signal_stale); by default a file's dated signals are not "
        "checked.")] = None,
    json_output: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Run the dispatcher's decision path on a file of signals, without Kafka."""
    age = timedelta(seconds=max_signal_age) if max_signal_age is not None else None
    report = _run(commands.dispatch_file(_settings(database_url), name, signals, dry_run, age))
    commands.print_dispatch(report, json_output)


@app.command()
def audit(
    account: Annotated[str | None, typer.Option("--account", help="Only this account.")] = None,
    from_: Annotated[datetime | None, typer.Option(
        "--from", formats=TIME_FORMATS, help="Report from this moment on (ISO 8601 with a "
        "timezone); earlier events are replayed but not reported.")] = None,
    to: Annotated[datetime | None, typer.Option(
        "--to", formats=TIME_FORMATS, help="Report up to this moment.")] = None,
    json_output: JsonFlag = False,
    plot: Annotated[Path | None, typer.Option("--plot", dir_okay=False,
                                              help="Write a PNG chart here.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", min=1, max=replay.JOBS_MAX,
                                      help="Worker processes, each replaying whole accounts "
                                           "(default: one per core).")]
    = min(os.cpu_count() or 1, replay.JOBS_MAX),
    database_url: DatabaseUrl = None,
) -> None:
    """Replay history, report every limit breach, draw exposure and positions against limits.

    Exit code 3 when any breach is found.
    """
    for name, moment in (("--from", from_), ("--to", to)):
        if moment is not None and moment.utcoffset() is None:
            raise typer.BadParameter(f"{name} needs a timezone, e.g. +00:00 or Z")
    audits = _run(commands.audit(_settings(database_url), account, from_, to, jobs))
    commands.print_audit(audits, json_output, plot)
    if has_breach(audits):
        raise typer.Exit(3)


@app.command()
def asyncapi() -> None:
    """Print the AsyncAPI description of the ledger's topics and messages (JSON)."""
    typer.echo(describe_asyncapi(_settings()))


def main() -> None:
    """Run the CLI, turning every ledger error into one line on stderr and exit code 1."""
    try:
        app()
    except LedgerError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted", code=130)
    except Exception as exc:
        if os.environ.get("LEDGER_DEBUG"):
            raise
        _fail(f"unexpected {type(exc).__name__}: {exc} (set LEDGER_DEBUG=1 for a traceback)")


def _fail(message: str, code: int = 1) -> None:
    first_line = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"ledger: error: {first_line}", file=sys.stderr)
    sys.exit(code)

