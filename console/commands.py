"""What each CLI command does, as plain async functions: open connections, call the store, close.

The CLI parses and prints; this module wires settings to the store so that tests can call the
same paths without a subprocess. Must not contain ledger logic (that lives in the store, the
fold and the gates).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO
from uuid import UUID, uuid4

import asyncpg
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TimeRemainingColumn,
)
from rich.table import Table

from console import charts
from console.supervisor import Child, supervise
from dispatcher import process as dispatcher_process
from dispatcher.decide import DispatcherConfig, Outcome, StateCache, decide
from ledger import jsonl, kafka_admin, metrics, roles, secrets, store
from ledger import migrate as migrations
from ledger.clock import utc_now
from ledger.db import connect
from ledger.errors import (
    ConfigError,
    InvalidEvent,
    MigrationError,
    ProjectionBehind,
    UnknownAccount,
)
from ledger.events import (
    MISSING,
    Event,
    LimitsSet,
    Signal,
    decode_broker_positions,
    decode_event,
    decode_signal,
    encode_event,
    refuse_future,
    validate_account_name,
)
from ledger.logins import account_dsn, job_dsn
from ledger.principals import Job as KafkaJob
from ledger.runtime import stop_event_on_signals
from ledger.settings import Settings
from projections import projector, rebuild, tables
from projections.breaches import AccountAudit, audit_document
from projections.current import state_at_head
from projections.view import limits_document, positions_document
from services import audit as audit_module
from services import ingest, relay
from services.follow import follow as follow_account
from services.reconcile import Reconciliation
from services.reconcile import reconcile as reconcile_account

# Columns of output that is not a terminal (a pipe, a file): wide enough that no id, time or
# figure is cut or wrapped; rich sizes tables to their contents, not to this.
PIPED_WIDTH = 1_000


@asynccontextmanager
async def admin_connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """Open the administrative connection for one command."""
    conn = await connect(settings.database_url)
    try:
        await conn.execute("SET TIME ZONE 'UTC'")
        yield conn
    finally:
        await conn.close()


@dataclass(frozen=True, kw_only=True)
class Migrated:
    """What `ledger migrate` did: migrations applied, job roles whose password was set."""

    applied: list[str]
    passwords_set: list[str]
    passwords_elsewhere: list[str]
    # The Kafka principals of the ledger's processes, created or confirmed with their grants.
    kafka_principals: list[str] = field(default_factory=list)


async def migrate(settings: Settings, *, rotate_passwords: bool = False) -> Migrated:
    """Create this ledger's roles, apply missing migrations, let the job roles log in.

    A job role that can already log in keeps its password unless `rotate_passwords`.

    Raises:
        MigrationError: the database belongs to another role namespace, or a migration failed.
        NoMigrationsFound: the installed package holds no migration (nothing is changed).
        RoleConflict: a role of this ledger's names belongs to another ledger.
    """
    ledger_roles = roles.roles_for(settings)
    sasl = settings.kafka_security_protocol == "SASL_PLAINTEXT"
    migrations.discover()  # an installation without its migrations fails before any change
    async with admin_connection(settings) as conn:
        await _check_namespace(conn, ledger_roles)
        await roles.ensure_ledger_roles(conn, ledger_roles)
        applied = await migrations.apply(conn, placeholders=ledger_roles.placeholders())
        passwords_set, elsewhere = [], []
        for job in roles.Job:
            role = ledger_roles.job(job)
            path = secrets.password_path(settings.secrets_dir, role)
            if rotate_passwords:
                password = secrets.replace_password(settings.secrets_dir, role)
            elif path.exists() or not await roles.can_login(conn, role):
                password = secrets.load_or_create_password(settings.secrets_dir, role)
            else:
                elsewhere.append(role)
                continue
            if await roles.ensure_login(conn, role, password, rotate=rotate_passwords):
                passwords_set.append(role)
    principals: list[str] = []
    try:
        await kafka_admin.provision(settings, users=sasl)
    except KafkaError as exc:
        raise ConfigError("LEDGER_KAFKA_BOOTSTRAP", settings.kafka_bootstrap,
                          f"a cluster where {settings.kafka_user} may create topics, users "
                          f"and ACLs ({exc}); the database is migrated") from None
    if sasl:
        principals = [job.user for job in KafkaJob]
    return Migrated(applied=[f"{m.version:04d}_{m.name}" for m in applied],
                    passwords_set=passwords_set, passwords_elsewhere=elsewhere,
                    kafka_principals=principals)


async def _check_namespace(conn: asyncpg.Connection, ledger_roles: roles.Roles) -> None:
    if await conn.fetchval("SELECT to_regclass('ledger_instance')") is None:
        return
    recorded = await conn.fetchval("SELECT namespace FROM ledger_instance")
    if recorded != ledger_roles.namespace:
        raise MigrationError(f"database {ledger_roles.database!r} belongs to the role namespace "
                             f"{recorded!r}, but the settings give {ledger_roles.namespace!r}: "
                             f"set LEDGER_ROLE_PREFIX={recorded}")


@dataclass(frozen=True, kw_only=True)
class AccountAdded:
    """What `ledger accounts add` did."""

    account: str
    role: str
    stream_created: bool
    role_created: bool
    password: str  # "set", "rotated" or "unchanged"
    password_path: Path | None


async def _create_account(
    conn: asyncpg.Connection, settings: Settings, name: str, password_file: Path | None = None,
    *, rotate_password: bool = False,
) -> AccountAdded:
    validate_account_name(name)
    ledger_roles = roles.roles_for(settings)
    role = ledger_roles.account(name)
    stored = secrets.password_path(settings.secrets_dir, role)
    can_login = await roles.can_login(conn, role)
    password: str | None
    path: Path | None
    if password_file is not None and (rotate_password or not can_login):
        password, path = secrets.read_password_file(password_file), password_file
    elif rotate_password:
        password, path = secrets.replace_password(settings.secrets_dir, role), stored
    elif not can_login:
        password, path = secrets.load_or_create_password(settings.secrets_dir, role), stored
    else:
        password, path = None, stored if stored.exists() else None
    async with conn.transaction():
        stream_created = await store.create_stream(conn, name)
        role_created = await roles.ensure_account_role(conn, ledger_roles, name, password,
                                                       rotate=rotate_password)
    outcome = "unchanged" if password is None else ("rotated" if can_login else "set")
    return AccountAdded(account=name, role=role, stream_created=stream_created,
                        role_created=role_created, password=outcome, password_path=path)


async def add_account(settings: Settings, name: str, password_file: Path | None,
                      *, rotate_password: bool = False) -> AccountAdded:
    """Create the account's stream and login role; an existing role keeps its password.

    Raises:
        InvalidAccountName: the name is not a valid account name.
        RoleConflict: the role name belongs to another ledger.
    """
    async with admin_connection(settings) as conn:
        return await _create_account(conn, settings, name, password_file,
                                     rotate_password=rotate_password)


async def append_command(
    settings: Settings,
    account: str,
    event_type: str,
    data: dict[str, Any],
    *,
    event_id: UUID,
    occurred_at: datetime,
) -> int:
    """Validate one operator event through the public contract, append it, return its sequence."""
    raw = json.dumps({
        "event_id": str(event_id),
        "account": account,
        "type": event_type,
        "occurred_at": occurred_at.isoformat(),
        "data": data,
    })
    event = decode_event(raw)
    conn = await connect(job_dsn(settings, roles.Job.operator))
    try:
        result = await store.append(conn, account, [event])
    finally:
        await conn.close()
    return result.appended.get(event.event_id, result.head)


@dataclass(frozen=True, kw_only=True)
class StateChanged:
    """One account moved to a trading state, and the intents that move cancelled."""

    account: str
    event_type: str
    sequence: int
    cancelled: list[str]


# The operator events that set a trading state, by the state they set.
STATE_EVENTS = {"halted": "TradingHalted", "active": "TradingResumed",
                "reducing": "TradingReduced"}


async def set_trading_state(settings: Settings, accounts: list[str] | None, state: str,
                            reason: str | None, *, occurred_at: datetime) -> list[StateChanged]:
    """Move accounts (None: every account) to a trading state, as the operator.

    Per account, one transaction under its head lock: the state event and, on a halt, an
    `IntentCancelled` for every pending intent (the relay sends each to the router, which
    cancels it at the broker). Nothing pending survives a halt, and a halt cannot race a
    decision: the dispatcher holds the same lock.

    Raises:
        UnknownAccount: a named account has no stream.
        InvalidEvent: the reason is invalid.
    """
    event_type = STATE_EVENTS[state]
    conn = await connect(job_dsn(settings, roles.Job.operator))
    changed: list[StateChanged] = []
    try:
        names = accounts if accounts is not None else list(await store.read_heads(conn))
        for account in names:
            validate_account_name(account)
            async with conn.transaction():
                head = await store.lock_head(conn, account)
                events = [_operator_event(account, event_type, {"reason": reason}, occurred_at)]
                cancelled: list[str] = []
                if state == "halted":
                    proven = await state_at_head(conn, account, head, fold_bound=None)
                    cancelled = sorted(proven.state.pending)
                    events += [_operator_event(account, "IntentCancelled", {
                        "intent_id": intent_id, "reason": f"trading halted: {reason}"},
                        occurred_at) for intent_id in cancelled]
                result = await store.append(conn, account, events, expected_sequence=head)
            changed.append(StateChanged(account=account, event_type=event_type,
                                        sequence=result.appended[events[0].event_id],
                                        cancelled=cancelled))
    finally:
        await conn.close()
    return changed


def _operator_event(account: str, event_type: str, data: dict[str, Any],
                    occurred_at: datetime) -> Event:
    return decode_event(json.dumps({
        "event_id": str(uuid4()), "account": account, "type": event_type,
        "occurred_at": occurred_at.isoformat(), "data": data}))


# The limits `limits set` may clear, by their field name and by their option's name.
CLEARABLE_LIMITS = {"max-order": "max_order_notional", "daily-loss": "daily_loss_limit",
                    "max-orders-per-minute": "max_orders_per_minute",
                    "max-underlying-exposure": "max_underlying_exposure",
                    "duplicate-window": "duplicate_window_s",
                    "max-reconcile-age": "max_reconcile_age_s"}
REQUIRED_LIMITS = ("max_open_positions", "max_exposure")


async def set_limits(settings: Settings, account: str, given: dict[str, Any], clear: list[str],
                     *, occurred_at: datetime) -> tuple[int, dict[str, Any]]:
    """Append LimitsSet with the limits in force merged with those given, as the operator.

    Limits not given keep their values; those in `clear` are removed. Under the account's head
    lock, so two operators at once cannot lose each other's change. Returns the event's sequence
    and every limit it states.

    Raises:
        InvalidEvent: a value is invalid, a limit to clear is unknown or required, or the
            account's first limits lack max_open_positions or max_exposure.
        UnknownAccount: the account has no stream.
    """
    validate_account_name(account)
    cleared = [_clearable(name) for name in clear]
    conn = await connect(job_dsn(settings, roles.Job.operator))
    try:
        async with conn.transaction():
            head = await store.lock_head(conn, account)
            proven = await state_at_head(conn, account, head, fold_bound=None)
            in_force = limits_document(proven.state.limits) or {}
            in_force.update({key: value for key, value in given.items() if value is not None})
            in_force.update(dict.fromkeys(cleared))
            for required in REQUIRED_LIMITS:
                if in_force.get(required) is None:
                    raise InvalidEvent(required, MISSING, f"was given: {account} has no limits "
                                       "yet, so its first need --max-positions and "
                                       "--max-exposure")
            event = _operator_event(account, "LimitsSet", in_force, occurred_at)
            result = await store.append(conn, account, [event], expected_sequence=head)
    finally:
        await conn.close()
    assert isinstance(event.data, LimitsSet)
    return result.appended[event.event_id], json.loads(event.data.model_dump_json())


def _clearable(name: str) -> str:
    field_name = CLEARABLE_LIMITS.get(name, name)
    if field_name not in CLEARABLE_LIMITS.values():
        raise InvalidEvent("--clear", name, "is not a limit that can be removed: expected one "
                           f"of {', '.join(sorted(CLEARABLE_LIMITS))}")
    return field_name


async def reconcile(settings: Settings, account: str, path: Path) -> Reconciliation:
    """Judge the broker's positions in a file against the account, as ingest does.

    Raises:
        InvalidEvent: the file is not a broker's positions, or names another account.
        UnknownAccount: the account has no stream.
    """
    validate_account_name(account)
    view = decode_broker_positions(path.read_bytes())
    if view.account != account:
        raise InvalidEvent("account", view.account, f"is not {account!r}: the file holds "
                           "another account's positions")
    refuse_future(view.as_of, utc_now(), timedelta(seconds=settings.max_clock_skew_s),
                  field="as_of")
    conn = await connect(job_dsn(settings, roles.Job.ingest))
    try:
        async with conn.transaction():
            return await reconcile_account(conn, view, utc_now())
    finally:
        await conn.close()


async def import_file(
    settings: Settings, path: Path, *, skip_bad: bool, create_accounts: bool
) -> jsonl.ImportReport:
    """Validate then append a JSONL history, with a progress bar on stderr."""
    size = path.stat().st_size
    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
        TimeRemainingColumn(), console=console, transient=True,
        disable=not console.is_terminal,
    ) as progress:
        checking = progress.add_task("validating", total=size)
        bounds = jsonl.Bounds(now=utc_now(),
                              clock_skew=timedelta(seconds=settings.max_clock_skew_s))
        report = jsonl.validate_file(path, skip_bad, bounds, _advance(progress, checking))
        async with admin_connection(settings) as conn:
            creator = None
            if create_accounts:
                async def creator(name: str) -> bool:
                    return (await _create_account(conn, settings, name)).stream_created
            await jsonl.check_accounts(conn, report.accounts, creator)
            appending = progress.add_task("appending", total=size)
            await jsonl.append_file(conn, path, report, bounds, _advance(progress, appending))
    return report


def _advance(progress: Progress, task: Any) -> Callable[[int], None]:
    def advance(size: int) -> None:
        progress.advance(task, size)

    return advance


async def export(settings: Settings, account: str | None, out: BinaryIO) -> int:
    """Write the store (or one account) as JSONL."""
    if account is not None:
        validate_account_name(account)
    async with admin_connection(settings) as conn:
        return await jsonl.export(conn, account, out)


@dataclass(frozen=True, kw_only=True)
class StatusRow:
    account: str
    head: int
    published: int
    projected: int
    trading_state: str

    @property
    def lag(self) -> int:
        return self.head - self.projected

    @property
    def halted(self) -> bool:
        return self.trading_state == "halted"


async def status(settings: Settings) -> list[StatusRow]:
    """Return per account the head, published and projected sequences, and the kill switch."""
    async with admin_connection(settings) as conn:
        rows = await conn.fetch(
            """SELECT s.account, s.head,
                      coalesce((SELECT CASE e.type WHEN 'TradingHalted' THEN 'halted'
                                           WHEN 'TradingReduced' THEN 'reducing'
                                           ELSE 'active' END FROM events e
                                WHERE e.account = s.account
                                  AND e.type IN ('TradingHalted', 'TradingResumed',
                                                 'TradingReduced')
                                ORDER BY e.sequence DESC LIMIT 1), 'active') AS trading_state,
                      coalesce(r.published_sequence, 0) AS published,
                      coalesce(p.applied_sequence, 0) AS projected
               FROM streams s LEFT JOIN relay_positions r USING (account)
                    LEFT JOIN projection_accounts p USING (account)
               ORDER BY s.account"""
        )
    return [StatusRow(account=row["account"], head=int(row["head"]),
                      published=int(row["published"]), projected=int(row["projected"]),
                      trading_state=row["trading_state"]) for row in rows]


def print_status(rows: list[StatusRow], json_output: bool) -> None:
    """Print status as the docs/design.md JSON document or as a table."""
    if json_output:
        document = {"accounts": [
            {"account": r.account, "head": r.head, "published": r.published,
             "projected": r.projected, "lag": r.lag, "halted": r.halted,
             "trading_state": r.trading_state} for r in rows
        ]}
        print(json.dumps(document))
        return
    table = Table("account", "head", "published", "projected", "lag", "trading state")
    for r in rows:
        table.add_row(r.account, str(r.head), str(r.published), str(r.projected), str(r.lag),
                      r.trading_state.upper() if r.trading_state != "active" else "active")
    wide_console().print(table if rows else "no accounts yet: `ledger accounts add NAME`")


async def run_process(settings: Settings, process: str, account: str | None = None) -> None:
    """Run one long-running process (or all of them) until SIGTERM/SIGINT."""
    stop = stop_event_on_signals()
    metrics.serve(settings.metrics_port, settings.metrics_host)
    if process == "ingest":
        await ingest.run(settings, stop)
    elif process == "relay":
        await relay.run(settings, stop)
    elif process == "projector":
        await projector.run(settings, stop)
    elif process == "dispatcher":
        if account is None:
            raise ConfigError("--account", None, "an account name: a dispatcher serves one "
                              "account and there is no default")
        validate_account_name(account)
        config = dispatcher_config(settings, account,
                                   max_signal_age=timedelta(seconds=settings.signal_max_age_s))
        await dispatcher_process.run(settings, config, stop)
    elif process == "all":
        children = [Child(name=name, args=["run", name])
                    for name in ("ingest", "relay", "projector")]
        async with admin_connection(settings) as conn:
            accounts = await accounts_with_limits(conn)
        children += [Child(name=f"dispatcher-{name}", args=["run", "dispatcher", "--account",
                                                            name]) for name in accounts]
        for index, child in enumerate(children, start=1):
            if settings.metrics_port:
                child.env = {"LEDGER_METRICS_PORT": str(settings.metrics_port + index)}
        await supervise(children, stop)
    else:
        raise AssertionError(f"unknown process {process!r}")


async def follow(settings: Settings, account: str, from_sequence: int, out: BinaryIO) -> None:
    """Write one account's events as JSON lines as they come, until SIGTERM/SIGINT."""
    validate_account_name(account)
    stop = stop_event_on_signals()
    async for event in follow_account(settings, account, from_sequence, stop=stop):
        out.write(encode_event(event) + b"\n")
        out.flush()


async def positions(settings: Settings, account: str, as_of: datetime | None) -> dict[str, Any]:
    """Return the positions document: proven at the head, or replayed from the store as of T.

    At the head: the projection plus the store's tail, read in one snapshot, so the figures
    are the head's whatever the projector is doing; `projected_sequence` says how far the
    projection itself was.

    Raises:
        UnknownAccount: the account has no stream.
        ProjectionBehind: the projection is more than the fold bound behind the head.
    """
    validate_account_name(account)
    async with admin_connection(settings) as conn, \
            conn.transaction(isolation="repeatable_read", readonly=True):
        head = await conn.fetchval("SELECT head FROM streams WHERE account = $1", account)
        if head is None:
            raise UnknownAccount(account)
        if as_of is not None:
            state = await rebuild.state_as_of(conn, account, as_of)
            return positions_document(state, projected_sequence=None)
        bound = settings.dispatcher_fold_bound
        proven = await state_at_head(conn, account, int(head), fold_bound=bound)
    if not proven.current:
        raise ProjectionBehind(account, proven.lag, bound)
    return positions_document(proven.state, projected_sequence=proven.source_sequence)


def print_positions(document: dict[str, Any], json_output: bool) -> None:
    """Print the positions document as JSON or as tables."""
    if json_output:
        print(json.dumps(document))
        return
    console = wide_console()
    limits = document["limits"] or {}
    projected = document["projected_sequence"]
    freshness = "" if projected is None else (
        "  (projection current)" if projected == document["as_of_sequence"] else
        f"  (projection at {projected}: {document['as_of_sequence'] - projected} events "
        "folded from the store)")
    console.print(
        f"[bold]{document['account']}[/bold] as of sequence {document['as_of_sequence']}"
        f"{freshness}{'  [red]HALTED[/red]' if document['halted'] else ''}\n"
        f"positions {len(document['open_positions'])} + pending "
        f"{len(document['pending_intents'])} / {limits.get('max_open_positions', '-')}   "
        f"exposure ${document['open_exposure']} + ${document['pending_exposure']} = "
        f"${document['exposure']} / ${limits.get('max_exposure', '-')}", soft_wrap=True)
    table = Table("position", "symbol", "side", "quantity", "average", "multiplier", "notional")
    for p in document["open_positions"]:
        table.add_row(p["position_id"], p["symbol"], p["side"], p["quantity"],
                      p["average_price"], p["multiplier"], p["notional"])
    console.print(table)
    if document["pending_intents"]:
        pending = Table("intent", "symbol", "notional", "expires")
        for i in document["pending_intents"]:
            pending.add_row(i["intent_id"], i["symbol"], i["notional"], i["expires_at"])
        console.print(pending)


async def rebuild_projections(settings: Settings, account: str | None, verify: bool,
                              jobs: int = 1) -> list[tables.Difference]:
    """Rebuild (or, with verify, compare) projections; return differences found by verify."""
    if account is not None:
        validate_account_name(account)
    console = Console(stderr=True)
    found: list[tables.Difference] = []
    async with admin_connection(settings) as conn:
        known = await rebuild.accounts(conn)
        targets = [(name, head) for name, head in known if account in (None, name)]
        if account is not None and not targets:
            raise UnknownAccount(account)
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                      transient=True, disable=not console.is_terminal) as progress:
            task = progress.add_task("verifying" if verify else "rebuilding",
                                     total=sum(head for _, head in targets))
            if jobs > 1 and len(targets) > 1:
                return await rebuild.rebuild_many(settings.database_url, targets, verify=verify,
                                                  jobs=jobs, progress=_advance(progress, task))
            for name, head in targets:
                if verify:
                    found.extend(await rebuild.verify_account(conn, name))
                    progress.advance(task, head)
                else:
                    await rebuild.rebuild_account(conn, name, _advance(progress, task))
    return found


def dispatcher_config(settings: Settings, account: str, *,
                      max_signal_age: timedelta | None) -> DispatcherConfig:
    """Return an account's dispatcher configuration from the settings."""
    return DispatcherConfig(account=validate_account_name(account),
                            fold_bound=settings.dispatcher_fold_bound,
                            intent_ttl=timedelta(seconds=settings.intent_ttl_s),
                            clock_skew=timedelta(seconds=settings.max_clock_skew_s),
                            max_signal_age=max_signal_age)


async def accounts_with_limits(conn: asyncpg.Connection) -> list[str]:
    """Return the accounts that have limits set: those a dispatcher can serve."""
    rows = await conn.fetch("SELECT DISTINCT account FROM events WHERE type = 'LimitsSet' "
                            "ORDER BY account")
    return [row["account"] for row in rows]


@dataclass(kw_only=True)
class DispatchReport:
    signals: int = 0
    allowed: int = 0
    duplicates: int = 0
    blocked: dict[str, int] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)


def read_signals(path: Path, config: DispatcherConfig, now: datetime) -> list[Signal]:
    """Read and validate a JSONL file of signals; all or nothing.

    Raises:
        InvalidEvent: a line is malformed, invalid, from the future, or for another account
            (names the line).
    """
    account = config.account
    signals = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            signal = decode_signal(raw, line=number)
            if signal.account != account:
                raise InvalidEvent("account", signal.account,
                                   f"is not the dispatched account {account!r}", line=number)
            try:
                refuse_future(signal.occurred_at, now, config.clock_skew)
            except InvalidEvent as exc:
                raise exc.at_line(number) from None
            signals.append(signal)
    return signals


async def dispatch_file(settings: Settings, account: str, path: Path, dry_run: bool,
                        max_signal_age: timedelta | None = None) -> DispatchReport:
    """Run the dispatcher's decision path over a file of signals, as the account's role.

    Each signal is decided in a transaction of its own, as the live dispatcher does; with
    `dry_run` each is rolled back at once, so the account's head is never held for longer than
    one decision (ingest and the live dispatcher go on meanwhile), and every signal is judged
    against the store as it is, not against the file's earlier signals.
    """
    config = dispatcher_config(settings, account, max_signal_age=max_signal_age)
    signals = read_signals(path, config, utc_now())
    report = DispatchReport()
    cache = None if dry_run else StateCache()
    conn = await connect(account_dsn(settings, account))
    try:
        for signal in signals:
            if dry_run:
                outcome = await _decide_and_roll_back(conn, config, signal)
            else:
                outcome = await decide(conn, config, signal, utc_now(), cache)
            report.signals += 1
            report.outcomes.append(outcome)
            if outcome.duplicate:
                report.duplicates += 1
            elif outcome.allowed:
                report.allowed += 1
            else:
                code = outcome.code or "unknown"
                report.blocked[code] = report.blocked.get(code, 0) + 1
    finally:
        await conn.close()
    return report


async def _decide_and_roll_back(conn: asyncpg.Connection, config: DispatcherConfig,
                                signal: Signal) -> Outcome:
    transaction = conn.transaction()
    await transaction.start()
    try:
        return await decide(conn, config, signal, utc_now())
    finally:
        await transaction.rollback()


def print_dispatch(report: DispatchReport, json_output: bool) -> None:
    """Print a dispatch summary: allowed, blocked by gate, already decided."""
    if json_output:
        print(json.dumps({
            "signals": report.signals, "allowed": report.allowed,
            "duplicates": report.duplicates, "blocked": report.blocked,
            "decisions": [{"signal_id": o.signal_id, "allowed": o.allowed, "code": o.code,
                           "reason": o.reason, "intent_id": o.intent_id,
                           "as_of_sequence": o.as_of_sequence, "duplicate": o.duplicate}
                          for o in report.outcomes]}))
        return
    table = Table("signal", "decision", "reason")
    for o in report.outcomes:
        verdict = "already decided" if o.duplicate else ("ALLOWED" if o.allowed else o.code)
        table.add_row(o.signal_id, str(verdict), o.reason)
    console = wide_console()
    console.print(table)
    blocked = ", ".join(f"{code} {count}" for code, count in sorted(report.blocked.items()))
    console.print(f"{report.signals} signals: {report.allowed} allowed, "
                  f"{sum(report.blocked.values())} blocked ({blocked or 'none'}), "
                  f"{report.duplicates} already decided")


async def audit(settings: Settings, account: str | None, window_from: datetime | None,
                window_to: datetime | None, jobs: int = 1) -> list[AccountAudit]:
    """Replay the store and find every breach, with a progress bar on stderr."""
    console = Console(stderr=True)
    async with admin_connection(settings) as conn:
        heads = await store.read_heads(conn)
        total = sum(heads.values())
        if account is None and jobs > 1 and len(heads) > 1:
            with Progress("[progress.description]{task.description}", BarColumn(),
                          MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                          transient=True, disable=not console.is_terminal) as progress:
                task = progress.add_task("replaying", total=total)
                return await audit_module.audit_many(
                    settings.database_url, list(heads.items()), jobs=jobs,
                    window_from=window_from, window_to=window_to,
                    progress=_advance(progress, task))
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                      transient=True, disable=not console.is_terminal) as progress:
            task = progress.add_task("replaying", total=total)
            return await audit_module.audit(conn, account, window_from=window_from,
                                            window_to=window_to,
                                            progress=_advance(progress, task))


def wide_console(piped_width: int = PIPED_WIDTH) -> Console:
    """The console of a command's output: the terminal's width, or `piped_width` columns when
    piped (by default full lines).

    rich leaves out colour when NO_COLOR is set (https://no-color.org) or when not a terminal.
    """
    console = Console()
    return console if console.is_terminal else Console(width=piped_width)


def print_audit(audits: list[AccountAudit], json_output: bool, plot: Path | None) -> None:
    """Print the audit as the docs/design.md JSON document, or as tables and a terminal chart."""
    if plot is not None:
        charts.write_png(audits, plot)
    if json_output:
        print(json.dumps(audit_document(audits)))
        return
    charts.print_audit(audits, wide_console(), chart=plot is None)
    if plot is not None:
        wide_console().print(f"chart written to {plot}")
