"""Which PostgreSQL login each process uses: never the administrator for long-running work.

Ingest, relay and projector log in as their job's role, operator commands as the operator; a
dispatcher and a follower log in as their account's own role, so row-level security confines
them to that account and `ledger_append` to their own decisions (ledger/roles.py). Passwords come
from the secrets directory that `ledger migrate` and `ledger accounts add` fill.
"""

from __future__ import annotations

from ledger import roles, secrets
from ledger.db import dsn_for_role
from ledger.errors import ConfigError
from ledger.settings import Settings


def job_dsn(settings: Settings, job: roles.Job) -> str:
    """Return the DSN of a job's role (ingest, relay, projector, operator).

    Raises:
        ConfigError: the role's password file is missing (run `ledger migrate`).
    """
    return _dsn(settings, roles.roles_for(settings).job(job), "ledger migrate")


def account_dsn(settings: Settings, account: str) -> str:
    """Return the DSN of an account's own role (its dispatcher, its followers).

    Raises:
        ConfigError: the role's password file is missing (run `ledger accounts add`).
    """
    return _dsn(settings, roles.roles_for(settings).account(account),
                f"ledger accounts add {account}")


def _dsn(settings: Settings, role: str, remedy: str) -> str:
    path = secrets.password_path(settings.secrets_dir, role)
    if not path.exists():
        raise ConfigError("LEDGER_SECRETS_DIR", str(settings.secrets_dir),
                          f"a password file for {role} (run `{remedy}`)")
    return dsn_for_role(settings.database_url, role, secrets.read_password_file(path))
