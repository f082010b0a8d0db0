"""`ledger kafka user add|list`: outside clients' principals on the cluster, by role.

A user is a SCRAM-SHA-512 credential plus the ACLs of its role on this ledger's topics
(ledger/principals.py). The password is generated, written to LEDGER_SECRETS_DIR/kafka_NAME.password
(0600) and never printed; the one who runs the adapter, strategy or router hands that file over.
Runs as the administrator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiokafka.errors import KafkaError

from ledger import kafka, kafka_admin, secrets
from ledger.errors import ConfigError, LedgerError
from ledger.principals import (
    Binding,
    Job,
    ResourceType,
    Role,
    check_user_name,
    role_bindings,
    role_of,
)
from ledger.settings import KAFKA_ADMIN_USER, Settings
from ledger.topics import Topics

BROKER_USER = "ledger-broker"  # made by the local stack with the cluster (stack/stack.sh)


class KafkaUserExists(LedgerError):
    """The user already has a credential; its grants are left as they are."""

    def __init__(self, name: str, role: str) -> None:
        super().__init__(f"Kafka user {name} already exists (role {role}); nothing changed")
        self.name = name


@dataclass(frozen=True)
class KafkaUser:
    """One principal of the cluster as `ledger kafka user list` shows it."""

    name: str
    role: str  # an outside role, "process <job>", "administrator", or "none"
    grants: list[str]

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "role": self.role, "grants": self.grants}


def _need_sasl(settings: Settings) -> None:
    if settings.kafka_security_protocol != "SASL_PLAINTEXT":
        raise ConfigError("LEDGER_KAFKA_SECURITY_PROTOCOL", settings.kafka_security_protocol,
                          "SASL_PLAINTEXT (users exist only where clients authenticate)")


async def add_user(settings: Settings, name: str, role: Role) -> Path:
    """Create an outside user with its role's grants; return its password file.

    Raises:
        ConfigError: the name is malformed or reserved, or the cluster does not authenticate.
        KafkaUserExists: the user exists already.
    """
    _need_sasl(settings)
    check_user_name(name)
    topics = Topics.from_settings(settings)
    try:
        async with kafka_admin.opened(settings) as admin:
            if name in await kafka_admin.users(admin):
                held = await kafka_admin.bindings_of(admin, name)
                known = role_of(name, held, topics)
                raise KafkaUserExists(name, known.value if known else "none")
            password = secrets.replace_password(settings.secrets_dir, f"kafka_{name}")
            await kafka_admin.upsert_user(admin, name, password)
            await kafka_admin.grant(admin, role_bindings(name, role, topics))
    except KafkaError as exc:
        raise ConfigError("LEDGER_KAFKA_BOOTSTRAP", settings.kafka_bootstrap,
                          f"a cluster where {settings.kafka_user} may manage users "
                          f"({exc})") from None
    return kafka.password_file(settings, name)


async def ensure_user(settings: Settings, name: str, role: Role) -> Settings:
    """Make sure a user exists with its role's grants on this ledger's topics (the demo's
    actors, one ledger per run); return the settings that authenticate as it."""
    _need_sasl(settings)
    check_user_name(name)
    async with kafka_admin.opened(settings) as admin:
        # The credential is set from the file every time: users are the cluster's, files are
        # this machine's, and another secrets directory (a test's) may have changed it since.
        password = secrets.load_or_create_password(settings.secrets_dir, f"kafka_{name}")
        await kafka_admin.upsert_user(admin, name, password)
        await kafka_admin.grant(admin, role_bindings(name, role, Topics.from_settings(settings)))
    return kafka.as_user(settings, name)


def _describe(name: str, held: set[Binding], topics: Topics) -> str:
    if name == KAFKA_ADMIN_USER:
        return "administrator"
    if name == BROKER_USER:
        return "brokers (between themselves)"
    for job in Job:
        if job.user == name:
            return f"process {job.value}"
    role = role_of(name, held, topics)
    return role.value if role is not None else ("none" if not held else "custom")


async def list_users(settings: Settings) -> list[KafkaUser]:
    """Return every user with a credential, with its role as its grants on this ledger say."""
    _need_sasl(settings)
    topics = Topics.from_settings(settings)
    try:
        async with kafka_admin.opened(settings) as admin:
            names = await kafka_admin.users(admin)
            every = await kafka_admin.bindings_of(admin)
    except KafkaError as exc:
        raise ConfigError("LEDGER_KAFKA_BOOTSTRAP", settings.kafka_bootstrap,
                          f"a cluster where {settings.kafka_user} may list users ({exc})") from None
    ours = set(topics.all())
    found = []
    for name in names:
        # Grants on other ledgers' topics (other prefixes) are not this ledger's to show.
        held = {b for b in every if b.principal == name
                and (b.resource in ours or b.resource_type is ResourceType.GROUP)}
        found.append(KafkaUser(name, _describe(name, held, topics),
                               sorted(b.describe() for b in held)))
    return found
