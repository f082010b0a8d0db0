"""Which PostgreSQL login each process uses: never the administrator for long-running work.

Ingest, relay and projector log in as the service role; a dispatcher and a follower log in as
their account's own role, so row-level security confines them to that account. Passwords come
from the secrets directory that `ledger migrate` and `ledger accounts add` fill.
"""

from __future__ import annotations

from ledger import roles, secrets
from ledger.db import dsn_for_role
from ledger.errors import ConfigError
from ledger.settings import Settings


def service_dsn(settings: Settings) -> str:
    """Return the DSN of the service role (ingest, relay, projector).

    Raises:
        ConfigError: the role's password file is missing (run `ledger migrate`).
    """
    return _dsn(settings, roles.SERVICE_ROLE, "ledger migrate")


def account_dsn(settings: Settings, account: str) -> str:
    """Return the DSN of an account's own role (its dispatcher, its followers).

    Raises:
        ConfigError: the role's password file is missing (run `ledger accounts add`).
    """
    return _dsn(settings, roles.account_role(account), f"ledger accounts add {account}")


def _dsn(settings: Settings, role: str, remedy: str) -> str:
    path = secrets.password_path(settings.secrets_dir, role)
    if not path.exists():
        raise ConfigError("LEDGER_SECRETS_DIR", str(settings.secrets_dir),
                          f"a password file for {role} (run `{remedy}`)")
    return dsn_for_role(settings.database_url, role, secrets.read_password_file(path))
