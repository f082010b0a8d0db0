"""Login roles: one per account (`ledger_NAME`) and one for the services that handle every account.

Isolation is PostgreSQL's job (row-level security, FORCE'd): this module only creates roles as
members of the group roles that migrations/0001_roles.sql defines and the policies name. Account
roles are never superusers, never BYPASSRLS and own no table. Must not import Kafka clients or
the CLI.
"""

from __future__ import annotations

import asyncpg

from ledger.errors import LedgerError
from ledger.events import validate_account_name

ACCOUNT_ROLE_PREFIX = "ledger_"
ACCOUNTS_GROUP = "ledger__accounts"
SERVICE_ROLE = "ledger__service"


class RoleConflict(LedgerError):
    """A role of the wanted name exists but is not what the ledger made: pick another name."""

    def __init__(self, role: str) -> None:
        self.role = role
        super().__init__(f"role {role!r} exists and is not a ledger account role: "
                         "choose another account name")


def account_role(account: str) -> str:
    """Return the login role of an account."""
    return ACCOUNT_ROLE_PREFIX + validate_account_name(account)


async def ensure_account_role(conn: asyncpg.Connection, account: str, password: str) -> bool:
    """Create the account's login role, or reset its password; return True if it was created.

    Raises:
        InvalidAccountName: the name is not safe in a role name.
        RoleConflict: a role of that name exists outside the accounts group.
    """
    role = account_role(account)
    existing = await conn.fetchrow(
        """SELECT r.rolsuper, r.rolbypassrls,
                  pg_has_role(r.oid, g.oid, 'MEMBER') AS is_account
           FROM pg_roles r, pg_roles g
           WHERE r.rolname = $1 AND g.rolname = $2""",
        role, ACCOUNTS_GROUP,
    )
    if existing is not None and (
        not existing["is_account"] or existing["rolsuper"] or existing["rolbypassrls"]
    ):
        raise RoleConflict(role)
    if existing is None:
        template = (f"CREATE ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE "
                    f"PASSWORD %L IN ROLE {ACCOUNTS_GROUP}")
    else:
        # Only a superuser may restate NOSUPERUSER; the checks above already proved it.
        template = "ALTER ROLE %I LOGIN PASSWORD %L"
    statement = await conn.fetchval("SELECT format($1::text, $2::text, $3::text)",
                                    template, role, password)
    await conn.execute(str(statement))
    return existing is None


async def ensure_service_login(conn: asyncpg.Connection, password: str) -> None:
    """Let the service role log in with the given password."""
    statement = await conn.fetchval(
        "SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)",
        SERVICE_ROLE, password,
    )
    await conn.execute(str(statement))
