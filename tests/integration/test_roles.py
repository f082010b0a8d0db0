"""Invariant 1 (isolation and least privilege) and 7 (append-only), enforced by PostgreSQL itself.

Goal: each login role may write only the events that are its job, only to the accounts it may
write to, and nothing else; one ledger's roles are its own. Method: log in as every login role
(an account's dispatcher role, ingest, relay, projector, operator) against real PostgreSQL and try
every event type on its own account and on another, every direct write to every table, and the
tricks a compromised dispatcher would try (lift its halt, raise its limits, free a reservation,
break its stream); check the catalog too (privileges at table and column level, owners, FORCE'd
row-level security, role attributes, pinned search paths), not only what queries return.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from console import commands
from dispatcher.decide import DispatcherConfig, decide
from ledger import roles, secrets, store
from ledger.db import connect, dsn_for_role
from ledger.errors import AppendRefused
from ledger.events import (
    _TYPE_OF_DATA,
    EVENT_TYPES,
    EVENT_WRITERS,
    Event,
    EventType,
    decode_event,
    decode_signal,
)
from ledger.roles import RoleConflict
from ledger.settings import Settings
from projections import rebuild
from tests.conftest import run_cli
from tests.factories import event_json, fill, limits

pytestmark = pytest.mark.pg

# A fixed instant: every event of these tests is dated before any expiry the tests set up.
AT = "2026-02-03T17:29:04Z"
DIRECT_WRITES = (
    "INSERT INTO events (account, sequence, event_id, type, occurred_at, data) "
    "VALUES ($1, 50, gen_random_uuid(), 'TradingResumed', now(), '{}')",
    "UPDATE streams SET head = head + 5 WHERE account = $1",
    "UPDATE events SET type = 'TradingResumed' WHERE account = $1",
    "DELETE FROM events WHERE account = $1",
    "DELETE FROM streams WHERE account = $1",
)


@dataclass(frozen=True)
class Login:
    """A login role of the ledger under test and what it is."""

    name: str
    kind: str  # "dispatcher", "broker", "relay", "projector", "operator"
    account: str | None = None

    def may_append(self, event_type: EventType, account: str) -> bool:
        """What the table of docs/roles.md says."""
        if self.kind == "dispatcher" and account != self.account:
            return False
        return EVENT_WRITERS[event_type] == self.kind


async def _login(settings: Settings, role: str) -> asyncpg.Connection:
    password = secrets.read_password_file(secrets.password_path(settings.secrets_dir, role))
    return await connect(dsn_for_role(settings.database_url, role, password))


@dataclass(frozen=True)
class Ledger:
    settings: Settings
    names: roles.Roles
    own: str
    other: str

    def logins(self) -> list[Login]:
        return [Login(self.names.account(self.own), "dispatcher", self.own),
                Login(self.names.job(roles.Job.ingest), "broker"),
                Login(self.names.job(roles.Job.relay), "relay"),
                Login(self.names.job(roles.Job.projector), "projector"),
                Login(self.names.job(roles.Job.operator), "operator")]


@pytest.fixture
async def ledger(settings: Settings, admin: asyncpg.Connection,
                 account_name: Callable[[str], str]) -> Ledger:
    own, other = account_name("a"), account_name("b")
    for name in (own, other):
        await commands.add_account(settings, name, None)
        await store.append(admin, name, [limits(name), fill(name, f"{name}-F1"),
                                         _expired_intent(name)])
    return Ledger(settings, roles.roles_for(settings), own, other)


def _expired_intent(account: str) -> Event:
    return decode_event(event_json(account, "IntentIssued", {
        "intent_id": f"I-{account}", "signal_id": f"S-{account}", "position_id": "P-9",
        "symbol": "SPY", "instrument": "equity", "side": "long", "quantity": "1",
        "limit_price": "5.00", "expires_at": "2026-02-03T17:30:00Z"}, occurred_at=AT))


def sample(event_type: EventType, account: str) -> Event:
    """A valid event of each type, with fresh identities: what its rightful writer sends."""
    tag = uuid.uuid4().hex[:8]
    samples: dict[str, dict[str, Any]] = {
        "LimitsSet": {"max_open_positions": 1000, "max_exposure": "99999999"},
        "OrderFilled": {"fill_id": f"F-{tag}", "position_id": f"P-{tag}", "symbol": "SPY",
                        "instrument": "equity", "side": "long", "quantity": "1",
                        "price": "5.00"},
        "PositionClosed": {"close_id": f"C-{tag}", "position_id": f"{account}-P-1",
                           "price": "5.00"},
        "SignalEvaluated": {"signal_id": f"S-{tag}", "signal": json.loads(_signal(account, tag)),
                            "allowed": False, "gates": [], "as_of_sequence": 3},
        "IntentIssued": {"intent_id": f"I-{tag}", "signal_id": f"S-{tag}",
                         "position_id": f"P-{tag}", "symbol": "SPY", "instrument": "equity",
                         "side": "long", "quantity": "1", "limit_price": "5.00",
                         "expires_at": "2026-02-03T17:31:00Z"},
        "IntentRejected": {"intent_id": f"I-{account}", "reason": "venue refused"},
        "IntentExpired": {"intent_id": f"I-{account}", "reason": "not filled in time"},
        "TradingHalted": {"reason": "risk review"},
        "TradingResumed": {"reason": "self-service"},
        "TradingReduced": {"reason": "self-service"},
        "IntentCancelled": {"intent_id": f"I-{account}-{tag}", "reason": "self-service"},
        # A broker view judged: the role that writes it could free a reduced account's
        # capacity or pretend it is in step with the broker.
        "PositionsReconciled": {"as_of": f"2026-02-03T17:{int(tag, 16) % 60:02d}:00Z",
                                "head": 3},
        "ReconciliationFailed": {
            "as_of": f"2026-02-03T16:{int(tag, 16) % 60:02d}:00Z", "head": 3,
            "differences": [{"symbol": "SPY", "side": "long", "broker": "1", "ledger": "0"}]},
        "DiscrepancyFound": {"kind": "close_of_unknown_position",
                             "execution": f'PositionClosed:close_id="C-{tag}"',
                             "position_id": f"P-{tag}", "reason": "self-service"},
    }
    return decode_event(event_json(account, event_type, samples[event_type], occurred_at=AT))


def _signal(account: str, tag: str, **fields: str) -> str:
    return json.dumps({"signal_id": f"S-{tag}", "account": account, "occurred_at": AT,
                       "symbol": "SPY", "instrument": "equity", "side": "long",
                       "quantity": "1", "limit_price": "5.00", **fields})


async def _snapshot(admin: asyncpg.Connection, account: str) -> tuple[Any, ...]:
    row = await admin.fetchrow(
        "SELECT s.head, count(e.*), coalesce(max(e.sequence), 0), "
        "md5(coalesce(string_agg(e.event_id::text || e.type || e.data::text, ',' "
        "ORDER BY e.sequence), '')) FROM streams s LEFT JOIN events e USING (account) "
        "WHERE s.account = $1 GROUP BY s.head", account)
    assert row is not None
    return tuple(row)


# --- Who may append what -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dispatcher", "broker", "relay", "projector", "operator"])
async def test_append_matrix_allows_exactly_what_the_role_table_says(
        ledger: Ledger, admin: asyncpg.Connection, kind: str) -> None:
    login = next(login for login in ledger.logins() if login.kind == kind)
    conn = await _login(ledger.settings, login.name)
    mismatches = []
    try:
        for event_type in EVENT_TYPES:
            for account in (ledger.own, ledger.other):
                before = await _snapshot(admin, account)
                expected = login.may_append(event_type, account)
                try:
                    result = await store.append(conn, account, [sample(event_type, account)])
                except AppendRefused as exc:
                    line = str(exc)
                    assert "\n" not in line
                    for part in (login.name, account, event_type):
                        assert part in line, (part, line)
                    assert await _snapshot(admin, account) == before, (event_type, account)
                    allowed = False
                else:
                    assert len(result.appended) == 1, (event_type, account)
                    allowed = True
                if allowed != expected:
                    mismatches.append((event_type, account, allowed))
    finally:
        await conn.close()

    assert mismatches == []


async def test_every_append_records_the_role_that_made_it(
        ledger: Ledger, admin: asyncpg.Connection) -> None:
    operator = ledger.names.job(roles.Job.operator)
    conn = await _login(ledger.settings, operator)
    try:
        result = await store.append(conn, ledger.own, [sample("TradingHalted", ledger.own)])
    finally:
        await conn.close()

    (sequence,) = result.appended.values()
    recorded_by = await admin.fetchval(
        "SELECT recorded_by FROM events WHERE account = $1 AND sequence = $2",
        ledger.own, sequence)
    assert recorded_by == operator


# --- No direct writes ----------------------------------------------------------------------------


_WRITES_ALLOWED = {
    "relay": {"relay_positions": {"INSERT", "UPDATE"}},
    "projector": {table: {"INSERT", "UPDATE", "DELETE"} for table in
                  ("projection_accounts", "projection_positions", "projection_pending",
                   "projection_recent")},
}
_PRIVILEGES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


async def _tables(admin: asyncpg.Connection) -> list[str]:
    return [row[0] for row in await admin.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]


async def test_catalog_when_inspected_grants_no_login_role_a_direct_write_beyond_its_job(
        ledger: Ledger, admin: asyncpg.Connection) -> None:
    tables = await _tables(admin)
    assert {"events", "streams", "login_roles", "event_types"} <= set(tables)
    found = {}
    for login in ledger.logins():
        granted = {(table, privilege) for table in tables for privilege in _PRIVILEGES
                   if await admin.fetchval("SELECT has_table_privilege($1, $2, $3)",
                                           login.name, table, privilege)}
        expected = {(table, privilege)
                    for table, privileges in _WRITES_ALLOWED.get(login.kind, {}).items()
                    for privilege in privileges}
        found[login.kind] = (granted, expected)
        columns = await admin.fetch(
            "SELECT table_name, column_name, privilege_type FROM "
            "information_schema.column_privileges WHERE grantee = $1 "
            "AND privilege_type <> 'SELECT'", login.name)
        column_writes = {(r["table_name"], r["privilege_type"]) for r in columns}
        assert column_writes <= expected, (login.kind, column_writes)
        for table, column in (("streams", "head"), ("events", "data"), ("events", "type")):
            for privilege in ("INSERT", "UPDATE"):
                assert not await admin.fetchval(
                    "SELECT has_column_privilege($1, $2, $3, $4)",
                    login.name, table, column, privilege), (login.kind, table, column)

    assert {kind: granted for kind, (granted, _) in found.items()} == \
        {kind: expected for kind, (_, expected) in found.items()}


async def test_every_login_role_when_writing_directly_is_refused_and_nothing_changes(
        ledger: Ledger, admin: asyncpg.Connection) -> None:
    before = await _snapshot(admin, ledger.own)
    for login in ledger.logins():
        conn = await _login(ledger.settings, login.name)
        try:
            for statement in DIRECT_WRITES:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement, ledger.own)
            for table in ("events", "streams"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(f"TRUNCATE {table}")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f'SET ROLE "{ledger.names.owner}"')
        finally:
            await conn.close()

    assert await _snapshot(admin, ledger.own) == before


async def test_catalog_shows_one_owner_forced_row_security_and_no_powerful_login(
        ledger: Ledger, admin: asyncpg.Connection) -> None:
    logins = [login.name for login in ledger.logins()]
    for table in await _tables(admin):
        if table == "schema_migrations":
            continue
        owner = await admin.fetchval(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = $1::regclass", table)
        assert owner == ledger.names.owner, table
    for table in ("streams", "events", "relay_positions", "projection_accounts",
                  "projection_positions", "projection_pending", "projection_recent"):
        assert await admin.fetchval(
            "SELECT relrowsecurity AND relforcerowsecurity FROM pg_class "
            "WHERE oid = $1::regclass", table), table
    for role in [*logins, ledger.names.owner, ledger.names.dispatchers]:
        flags = await admin.fetchrow(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, "
            "(SELECT count(*) FROM pg_class WHERE relowner = r.oid) AS owned "
            "FROM pg_roles r WHERE rolname = $1", role)
        assert flags is not None, role
        assert (flags["rolsuper"], flags["rolbypassrls"], flags["rolcreaterole"],
                flags["rolcreatedb"]) == (False, False, False, False), role
        if role != ledger.names.owner:
            assert flags["owned"] == 0, role
    assert await admin.fetchval(
        "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", ledger.names.owner) is False
    unpinned = await admin.fetch(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace AND prosecdef "
        "AND NOT coalesce(array_to_string(proconfig, ',') LIKE '%search_path=%', false)")
    assert unpinned == []
    definers = {row[0] for row in await admin.fetch(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace AND prosecdef")}
    assert {"ledger_append", "ledger_lock_head"} <= definers


# --- A compromised dispatcher --------------------------------------------------------------------


async def test_halted_account_stays_halted_and_keeps_its_limits_whatever_its_role_calls(
        ledger: Ledger, admin: asyncpg.Connection) -> None:
    account, names = ledger.own, ledger.names
    assert run_cli(ledger.settings, "limits", "set", account, "--max-positions", "1",
                   "--max-exposure", "100").returncode == 0
    assert run_cli(ledger.settings, "halt", account, "--reason", "risk review").returncode == 0
    expires_at = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    live = decode_event(event_json(account, "IntentIssued", {
        "intent_id": "I-live", "signal_id": "S-live", "position_id": "P-live", "symbol": "SPY",
        "instrument": "equity", "side": "long", "quantity": "1", "limit_price": "5.00",
        "expires_at": expires_at}, occurred_at=AT))
    early_expiry = decode_event(event_json(account, "IntentExpired", {
        "intent_id": "I-live", "reason": "early"}, occurred_at=AT))
    dispatcher = await _login(ledger.settings, names.account(account))
    try:
        await store.append(dispatcher, account, [live])
        before = await _snapshot(admin, account)
        for attempt in (
            store.append(dispatcher, account, [sample("TradingResumed", account)]),
            store.append(dispatcher, account, [sample("LimitsSet", account)]),
            store.append(dispatcher, account, [sample("IntentRejected", account)]),
            store.append(dispatcher, account, [early_expiry]),
            store.append(dispatcher, ledger.other, [sample("SignalEvaluated", ledger.other)]),
            store.lock_head(dispatcher, ledger.other),
        ):
            with pytest.raises(AppendRefused):
                await attempt
        for statement, args in [
            (DIRECT_WRITES[0], (account,)), (DIRECT_WRITES[1], (account,)),
            ("SELECT ledger_append_filtered($1, 0, ARRAY[gen_random_uuid()], "
             "ARRAY['TradingResumed'], ARRAY[NULL], ARRAY[now()], ARRAY['{}'::jsonb])",
             (account,)),
            (f'SET ROLE "{names.owner}"', ()),
        ]:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await dispatcher.execute(statement, *args)
        unchanged = await _snapshot(admin, account)
        outcome = await decide(dispatcher, DispatcherConfig(account=account),
                               decode_signal(_signal(account, "X")), datetime.now(UTC))
    finally:
        await dispatcher.close()

    state = await rebuild.fold_stream(admin, account)
    assert unchanged == before
    assert state.halted is True
    assert state.limits is not None
    assert (state.limits.max_open_positions, state.limits.max_exposure) == (1, Decimal(100))
    assert "I-live" in state.pending
    assert (outcome.allowed, outcome.code) == (False, "trading_halted")


async def test_account_role_when_reading_any_table_sees_only_its_own_rows(
        ledger: Ledger, admin: asyncpg.Connection) -> None:
    tables = [row[0] for row in await admin.fetch(
        """SELECT c.table_name FROM information_schema.columns c
           JOIN information_schema.tables t USING (table_schema, table_name)
           WHERE c.table_schema = 'public' AND c.column_name = 'account'
             AND t.table_type = 'BASE TABLE' AND c.table_name <> 'login_roles'
           ORDER BY 1""")]
    conn = await _login(ledger.settings, ledger.names.account(ledger.own))
    try:
        seen = {table: {row[0] for row in await conn.fetch(
            f"SELECT DISTINCT account FROM {table}")} for table in tables}
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM login_roles")
        own_events = await conn.fetchval("SELECT count(*) FROM events")
    finally:
        await conn.close()

    assert {"events", "streams", "projection_accounts"} <= set(tables)
    assert all(accounts <= {ledger.own} for accounts in seen.values()), seen
    assert seen["events"] == seen["streams"] == {ledger.own}
    assert own_events == await admin.fetchval(
        "SELECT count(*) FROM events WHERE account = $1", ledger.own)


async def _raw_append(conn: asyncpg.Connection, account: str, event_type: str, data: str,
                      natural_key: str | None) -> None:
    await conn.fetchrow(
        "SELECT * FROM ledger_append($1, NULL, ARRAY[gen_random_uuid()], ARRAY[$2::text], "
        "ARRAY[$3::text], ARRAY[now()], ARRAY[$4::jsonb])", account, event_type, natural_key,
        data)


@pytest.mark.parametrize(("event_type", "data", "key", "expected"), [
    ("Bogus", "{}", None, "type 'Bogus' is not an event type"),
    ("SignalEvaluated", "{}", 'SignalEvaluated:signal_id="S-1"', "lacks the field signal_id"),
    ("SignalEvaluated", "[1, 2]", 'SignalEvaluated:signal_id="S-1"', "is not a JSON object"),
    ("SignalEvaluated", "null", 'SignalEvaluated:signal_id="S-1"', "is not a JSON object"),
    ("IntentIssued", None, None, "has the unknown field extra"),
    ("IntentIssued", None, 'OrderFilled:fill_id="X-1"', "natural_key is not the key"),
    ("IntentIssued", None, 'IntentIssued:intent_id="another"', "natural_key is not the key"),
    ("IntentIssued", None, None, "natural_key is not the key"),
])
async def test_append_when_malformed_is_refused_with_one_line_and_nothing_changes(
        ledger: Ledger, admin: asyncpg.Connection, event_type: str, data: str | None,
        key: str | None, expected: str) -> None:
    intent = sample("IntentIssued", ledger.own).data.model_dump(mode="json")
    if data is None and expected.startswith("has the unknown field"):
        data, key = json.dumps({**intent, "extra": 1}), \
            f'IntentIssued:intent_id="{intent["intent_id"]}"'
    elif data is None:
        data = json.dumps(intent)
    before = await _snapshot(admin, ledger.own)
    conn = await _login(ledger.settings, ledger.names.account(ledger.own))
    try:
        with pytest.raises(asyncpg.PostgresError) as refused:
            await _raw_append(conn, ledger.own, event_type, data, key)
    finally:
        await conn.close()

    assert refused.value.sqlstate == "LG004"
    assert expected in str(refused.value)
    assert "\n" not in str(refused.value)
    assert await _snapshot(admin, ledger.own) == before


async def test_natural_key_of_a_non_ascii_id_is_spelled_as_python_spells_it(
        ledger: Ledger) -> None:
    conn = await _login(ledger.settings, ledger.names.job(roles.Job.ingest))
    try:
        result = await store.append(conn, ledger.own, [fill(
            ledger.own, "F-caf\u00e9-\U0001f600-\x7f-\x1f-\"q\"", position_id="P-9")])
    finally:
        await conn.close()

    assert len(result.appended) == 1


# --- One ledger's roles are its own --------------------------------------------------------------


async def _try_connect(settings: Settings, database_settings: Settings, role: str) -> str | None:
    """Log in as `role` (password from settings' secrets) to database_settings' database."""
    password = secrets.read_password_file(secrets.password_path(settings.secrets_dir, role))
    dsn = dsn_for_role(database_settings.database_url, role, password)
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except asyncpg.PostgresError as exc:
        return str(exc)
    await conn.close()
    return None


@pytest.fixture
async def two_ledgers(make_database: Callable[[], Awaitable[Settings]]
                      ) -> tuple[Settings, Settings]:
    first, second = await make_database(), await make_database()
    for settings in (first, second):
        await commands.add_account(settings, "large", None)
    return first, second


async def test_two_ledgers_on_one_server_share_no_role_and_no_connection(
        two_ledgers: tuple[Settings, Settings]) -> None:
    first, second = two_ledgers
    one, two = roles.roles_for(first), roles.roles_for(second)
    assert one.account("large") != two.account("large")

    for role in (one.account("large"), one.job(roles.Job.ingest)):
        assert await _try_connect(first, first, role) is None
        refusal = await _try_connect(first, second, role)
        assert refusal is not None
        assert "permission denied for database" in refusal

    again = run_cli(second, "accounts", "add", "large")
    assert again.returncode == 0, again.stderr
    assert b"password unchanged" in again.stdout
    assert await _try_connect(first, first, one.account("large")) is None
    assert await _try_connect(second, second, two.account("large")) is None


async def test_accounts_add_rotates_a_password_only_when_asked(
        settings: Settings, account_name: Callable[[str], str]) -> None:
    name = account_name("rot")
    role = roles.roles_for(settings).account(name)
    first = run_cli(settings, "accounts", "add", name)
    path = secrets.password_path(settings.secrets_dir, role)
    old = secrets.read_password_file(path)

    second = run_cli(settings, "accounts", "add", name)
    unchanged = secrets.read_password_file(path)
    rotated = run_cli(settings, "accounts", "add", name, "--rotate-password")
    new = secrets.read_password_file(path)

    assert first.returncode == second.returncode == rotated.returncode == 0
    assert b"password set" in first.stdout
    assert b"password unchanged" in second.stdout
    assert b"password rotated" in rotated.stdout
    assert unchanged == old != new
    assert await _try_connect(settings, settings, role) is None
    stale = dsn_for_role(settings.database_url, role, old)
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(stale, timeout=10)


async def test_accounts_add_output_says_which_role_is_which(
        settings: Settings, account_name: Callable[[str], str]) -> None:
    name = account_name("say")
    names = roles.roles_for(settings)

    result = run_cli(settings, "accounts", "add", name)

    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert f"role {names.account(name)}: created" in out
    assert "appends SignalEvaluated, IntentIssued, IntentExpired to it" in out
    for job in roles.Job:
        assert names.job(job) in out


async def test_migrate_with_another_ledgers_prefix_is_refused(
        make_database: Callable[..., Awaitable[Settings]], settings: Settings) -> None:
    fresh = await make_database(migrated=False)
    borrowed = fresh.model_copy(update={"role_prefix": roles.roles_for(settings).namespace})

    with pytest.raises(RoleConflict, match="belongs to the ledger in database"):
        await commands.migrate(borrowed)


class _Recording:
    """A connection that remembers every statement and argument it was given."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.seen: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.conn, name)

        async def recorded(*args: Any, **kwargs: Any) -> Any:
            self.seen.extend(str(a) for a in args)
            return await method(*args, **kwargs)

        return recorded


async def test_passwords_never_appear_in_statement_text(
        settings: Settings, admin: asyncpg.Connection,
        account_name: Callable[[str], str]) -> None:
    name = account_name("scram")
    names = roles.roles_for(settings)
    await store.create_stream(admin, name)
    password = "correct-horse-battery-staple-" + uuid.uuid4().hex
    recording = _Recording(admin)

    await roles.ensure_account_role(recording, names, name, password,  # type: ignore[arg-type]
                                    rotate=True)

    assert recording.seen
    assert not any(password in text for text in recording.seen)
    assert any("SCRAM-SHA-256$" in text for text in recording.seen)
    conn = await connect(dsn_for_role(settings.database_url, names.account(name), password))
    await conn.close()


def test_accounts_add_when_name_is_unsafe_exits_1_with_one_line(settings: Settings) -> None:
    for bad_name in ["Large", "1st", "a-b", "a b", "ledger;drop", "x" * 60, "_a"]:
        result = run_cli(settings, "accounts", "add", bad_name)

        assert result.returncode == 1
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1
        assert repr(bad_name) in lines[0]


# --- The SQL registry is the contract's -----------------------------------------------------------


async def test_database_registry_of_event_types_equals_the_contracts(
        admin: asyncpg.Connection) -> None:
    rows = await admin.fetch("SELECT type, writer, fields, required FROM event_types")
    writers = {row["type"]: row["writer"] for row in rows}
    fields = {row["type"]: (set(row["fields"]), set(row["required"])) for row in rows}
    expected = {}
    for model, event_type in _TYPE_OF_DATA.items():
        schema = model.model_json_schema()
        expected[event_type] = (set(schema["properties"]), set(schema.get("required", [])))

    assert writers == EVENT_WRITERS
    assert fields == expected
