"""The ledger's PostgreSQL roles: one namespace per ledger, one role per job, least privilege.

Every role of one ledger carries its namespace (the database name, or `LEDGER_ROLE_PREFIX`), so
two ledgers on one server share nothing (docs/roles.md):

    NS__owner         NOLOGIN; owns every table and function; the administrator is a member
    NS__dispatchers   NOLOGIN group of the account roles
    NS_NAME           an account's dispatcher (and followers): its own account only
    NS__ingest        what the broker reports        NS__operator  limits and trading states
    NS__relay         its own checkpoint rows        NS__projector the projection tables

No login role may write `events` or `streams`: appends go through `ledger_append`, a SECURITY
DEFINER function that checks the caller against the account and the event type
(migrations/0011). Every role is labelled with the database it belongs to (a role comment,
visible server-wide), so a role of another ledger is refused, never adopted. Passwords are set
as SCRAM verifiers computed here: the password itself never appears in statement text, where a
failed statement would log it. Must not import Kafka clients or the CLI.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import asyncpg

from ledger.db import database_name
from ledger.errors import ConfigError, LedgerError
from ledger.events import types_written_by, validate_account_name
from ledger.settings import Settings

NAMESPACE_PATTERN = r"^[a-z][a-z0-9_]{0,29}$"
_NAMESPACE = re.compile(NAMESPACE_PATTERN)
# PostgreSQL truncates identifiers beyond this many bytes: a longer role name would silently
# become another one.
ROLE_NAME_LENGTH_MAX = 63
SCRAM_ITERATIONS = 4096
SCRAM_SALT_BYTES = 16
_LABEL_PREFIX = "position ledger in database "


class Job(StrEnum):
    """The processes that serve every account, each with a login role of its own."""

    ingest = "ingest"
    relay = "relay"
    projector = "projector"
    operator = "operator"


class RoleConflict(LedgerError):
    """A role of the wanted name exists but is not this ledger's: pick another name or prefix."""

    def __init__(self, role: str, why: str) -> None:
        self.role = role
        self.why = why
        super().__init__(f"role {role!r} {why}")


class PasswordNotRotated(LedgerError):
    """The account's role exists: its password changes only with --rotate-password."""


@dataclass(frozen=True, kw_only=True)
class Roles:
    """The role names of one ledger."""

    namespace: str
    database: str

    @property
    def owner(self) -> str:
        return f"{self.namespace}__owner"

    @property
    def dispatchers(self) -> str:
        return f"{self.namespace}__dispatchers"

    def job(self, job: Job) -> str:
        return f"{self.namespace}__{job.value}"

    def account(self, account: str) -> str:
        """Return the login role of an account.

        Raises:
            InvalidAccountName: the name is not a valid account name.
            ConfigError: the role name would be longer than PostgreSQL allows.
        """
        role = f"{self.namespace}_{validate_account_name(account)}"
        if len(role) > ROLE_NAME_LENGTH_MAX:
            raise ConfigError("account", account,
                              f"a name that gives a role of at most {ROLE_NAME_LENGTH_MAX} "
                              f"characters with the prefix {self.namespace!r}")
        return role

    @property
    def label(self) -> str:
        """The comment every role of this ledger carries."""
        return _LABEL_PREFIX + self.database

    def placeholders(self) -> dict[str, str]:
        """Return the values migrations refer to as @name@: quoted identifiers, one literal."""
        identifiers = {"owner": self.owner, "dispatchers": self.dispatchers,
                       **{job.value: self.job(job) for job in Job}}
        values = {name: _quote_identifier(role) for name, role in identifiers.items()}
        values["namespace"] = "'" + self.namespace + "'"
        return values


def duties(roles: Roles, account: str | None = None) -> list[tuple[str, str]]:
    """Return (role, what it may do) for each login role, the account's first when given."""
    def appends(writer: Literal["dispatcher", "broker", "operator"]) -> str:
        return ", ".join(types_written_by(writer))

    rows = []
    if account is not None:
        rows.append((roles.account(account),
                     f"its dispatcher and followers: reads account {account} only; appends "
                     f"{appends('dispatcher')} to it"))
    rows += [
        (roles.job(Job.ingest), f"ingest: appends {appends('broker')} to any account"),
        (roles.job(Job.operator), f"limits, halt, resume: appends {appends('operator')} "
                                  "to any account"),
        (roles.job(Job.relay), "relay: reads every account; writes only its published "
                               "positions"),
        (roles.job(Job.projector), "projector: reads every account; writes only the "
                                   "projection tables"),
    ]
    return rows


def roles_for(settings: Settings) -> Roles:
    """Return the roles of the ledger the settings point at.

    Raises:
        ConfigError: no usable namespace (set LEDGER_ROLE_PREFIX).
    """
    database = database_name(settings.database_url)
    namespace = settings.role_prefix or database
    if _NAMESPACE.fullmatch(namespace) is None:
        variable = "LEDGER_ROLE_PREFIX" if settings.role_prefix else "database name"
        raise ConfigError(variable, namespace, f"a role namespace matching {NAMESPACE_PATTERN} "
                          "(set LEDGER_ROLE_PREFIX)")
    return Roles(namespace=namespace, database=database)


def _quote_identifier(name: str) -> str:
    # Names are built from validated parts (namespace and account patterns): no quote inside.
    assert '"' not in name, name
    return f'"{name}"'


def scram_verifier(password: str, salt: bytes | None = None,
                   iterations: int = SCRAM_ITERATIONS) -> str:
    """Return the SCRAM-SHA-256 verifier PostgreSQL stores for a password (RFC 5802/7677).

    Raises:
        ConfigError: the password is not printable ASCII (PostgreSQL would SASLprep it).
    """
    if not password or not all(" " < c <= "~" for c in password):
        raise ConfigError("password", "***", "printable ASCII without spaces")
    salt = os.urandom(SCRAM_SALT_BYTES) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


# --- Catalog ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Existing:
    can_login: bool
    unsafe: bool
    label: str | None


async def _existing(conn: asyncpg.Connection, role: str) -> _Existing | None:
    row = await conn.fetchrow(
        """SELECT rolcanlogin, rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb AS unsafe,
                  shobj_description(oid, 'pg_authid') AS label
           FROM pg_roles WHERE rolname = $1""", role)
    if row is None:
        return None
    return _Existing(can_login=row["rolcanlogin"], unsafe=row["unsafe"], label=row["label"])


async def can_login(conn: asyncpg.Connection, role: str) -> bool:
    """Return whether the role exists and may log in."""
    existing = await _existing(conn, role)
    return existing is not None and existing.can_login


async def _ensure_role(conn: asyncpg.Connection, roles: Roles, role: str) -> _Existing | None:
    """Create a NOLOGIN role of this ledger, or check that the existing one is this ledger's.

    Returns what existed before (None when it was created here).

    Raises:
        RoleConflict: the role belongs to another ledger, or has powers no ledger role has.
    """
    existing = await _existing(conn, role)
    if existing is None:
        await conn.execute(f"CREATE ROLE {_quote_identifier(role)} NOLOGIN NOSUPERUSER "
                           "NOBYPASSRLS NOCREATEDB NOCREATEROLE")
        # The label names a database, which may hold any character: quoted by the server.
        statement = await conn.fetchval("SELECT format('COMMENT ON ROLE %I IS %L', $1::text, "
                                        "$2::text)", role, roles.label)
        await conn.execute(str(statement))
        return None
    if existing.label != roles.label:
        owner = existing.label.removeprefix(_LABEL_PREFIX) if existing.label else None
        raise RoleConflict(role, f"belongs to the ledger in database {owner!r}: set "
                           "LEDGER_ROLE_PREFIX or choose another name" if owner else
                           "exists and is not a ledger role: choose another name or prefix")
    if existing.unsafe:
        raise RoleConflict(role, "has SUPERUSER, BYPASSRLS, CREATEROLE or CREATEDB: "
                           "a ledger role may have none of them")
    return existing


async def ensure_ledger_roles(conn: asyncpg.Connection, roles: Roles) -> None:
    """Create the owner, the dispatchers' group and the job roles (NOLOGIN until given a password).

    The administrator becomes a member of the owner, so that migrations create and alter what
    the owner owns.

    Raises:
        RoleConflict: a role of these names belongs to another ledger.
    """
    for role in (roles.owner, roles.dispatchers, *(roles.job(job) for job in Job)):
        await _ensure_role(conn, roles, role)
    await conn.execute(f"GRANT {_quote_identifier(roles.owner)} TO CURRENT_USER")


async def ensure_login(conn: asyncpg.Connection, role: str, password: str,
                       *, rotate: bool) -> bool:
    """Let a role log in with a password; an existing login keeps its password unless rotate.

    Returns True when the password was set.
    """
    existing = await _existing(conn, role)
    assert existing is not None, role
    if existing.can_login and not rotate:
        return False
    await conn.execute(f"ALTER ROLE {_quote_identifier(role)} LOGIN PASSWORD "
                       f"'{scram_verifier(password)}'")
    return True


async def ensure_account_role(conn: asyncpg.Connection, roles: Roles, account: str,
                              password: str | None, *, rotate: bool) -> bool:
    """Create the account's login role (a member of the dispatchers' group) or check it.

    `password` is None when an existing role should keep its own. Returns True when the role
    was created.

    Raises:
        InvalidAccountName: the name is not safe in a role name.
        RoleConflict: a role of that name belongs to another ledger.
    """
    role = roles.account(account)
    existing = await _ensure_role(conn, roles, role)
    await conn.execute(f"GRANT {_quote_identifier(roles.dispatchers)} TO "
                       f"{_quote_identifier(role)}")
    await conn.execute(
        "INSERT INTO login_roles (role, kind, account) VALUES ($1, 'dispatcher', $2) "
        "ON CONFLICT (role) DO NOTHING", role, account)
    if password is not None:
        await ensure_login(conn, role, password, rotate=rotate)
    return existing is None
