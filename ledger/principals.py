"""Who may do what on Kafka: the ledger's own processes and the outside clients, by role.

Pure data and the ACL bindings it implies; `ledger/kafka_admin.py` writes them to the cluster.
Every process of the ledger authenticates as its own principal and is granted exactly the topics
and consumer groups its job needs, so a stolen relay password cannot forge an execution and a
strategy cannot read the order intents. Anything not granted is refused: the brokers run with
`allow.everyone.if.no.acl.found=false` and no binding names the anonymous user. Topic names
carry the configured prefix. Must not import the store, Kafka clients or the CLI.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from ledger.errors import ConfigError
from ledger.settings import KAFKA_ADMIN_USER, Settings
from ledger.topics import Topics

USER_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
RESERVED_PREFIX = "ledger-"


class Operation(enum.IntEnum):
    """Kafka's ACL operation codes (the wire values)."""

    READ = 3
    WRITE = 4
    DESCRIBE = 8


class ResourceType(enum.IntEnum):
    TOPIC = 2
    GROUP = 3


class PatternType(enum.IntEnum):
    LITERAL = 3
    PREFIXED = 4


@dataclass(frozen=True, order=True)
class Binding:
    """One ALLOW rule: `principal` may `operation` on a resource (from any host)."""

    principal: str
    resource_type: ResourceType
    pattern_type: PatternType
    resource: str
    operation: Operation

    def describe(self) -> str:
        kind = self.resource_type.name.lower()
        prefix = "*" if self.pattern_type is PatternType.PREFIXED else ""
        return f"{self.operation.name} {kind} {self.resource}{prefix}"


class Job(enum.StrEnum):
    """The ledger's own Kafka clients; each is one principal, `ledger-<job>`."""

    ingest = "ingest"
    relay = "relay"
    projector = "projector"
    dispatcher = "dispatcher"
    follow = "follow"

    @property
    def user(self) -> str:
        return f"{RESERVED_PREFIX}{self.value}"


class Role(enum.StrEnum):
    """What an outside client may be: `ledger kafka user add NAME --role ROLE`."""

    adapter = "adapter"
    strategy = "strategy"
    router = "router"
    observer = "observer"


# Consumer groups of the ledger's processes (the names their modules use).
INGEST_GROUPS = ("ledger-ingest", "ledger-reconcile", "ledger-signal-watch")
PROJECTOR_GROUP = "ledger-projector"
DISPATCHER_GROUP_PREFIX = "ledger-dispatcher-"


def _topic(user: str, topic: str, *operations: Operation) -> list[Binding]:
    return [Binding(user, ResourceType.TOPIC, PatternType.LITERAL, topic, operation)
            for operation in operations]


def _group(user: str, group: str, pattern: PatternType = PatternType.LITERAL) -> list[Binding]:
    # READ joins the group and commits; DESCRIBE reads its committed offsets (lag).
    return [Binding(user, ResourceType.GROUP, pattern, group, operation)
            for operation in (Operation.READ, Operation.DESCRIBE)]


def job_bindings(job: Job, topics: Topics) -> list[Binding]:
    """Return the ACLs of one of the ledger's processes."""
    user, read, write = job.user, Operation.READ, Operation.WRITE
    match job:
        case Job.ingest:  # with the signal watch, which runs inside ingest
            return [*_topic(user, topics.executions, read),
                    *_topic(user, topics.broker_positions, read),
                    *_topic(user, topics.signals, read),
                    *_topic(user, topics.dead_letters, write),
                    *(binding for group in INGEST_GROUPS for binding in _group(user, group))]
        case Job.relay:
            return [*_topic(user, topics.ledger_events, write),
                    *_topic(user, topics.order_intents, write)]
        case Job.projector:
            return [*_topic(user, topics.ledger_events, read),
                    *_topic(user, topics.dead_letters, write),
                    *_group(user, PROJECTOR_GROUP)]
        case Job.dispatcher:
            return [*_topic(user, topics.signals, read),
                    *_topic(user, topics.dead_letters, write),
                    *_group(user, DISPATCHER_GROUP_PREFIX, PatternType.PREFIXED)]
        case Job.follow:
            return _topic(user, topics.ledger_events, read)


def role_bindings(user: str, role: Role, topics: Topics) -> list[Binding]:
    """Return the ACLs of an outside client; its consumer groups must start with its name."""
    read, write = Operation.READ, Operation.WRITE
    match role:
        case Role.adapter:
            return [*_topic(user, topics.executions, write),
                    *_topic(user, topics.broker_positions, write)]
        case Role.strategy:
            return _topic(user, topics.signals, write)
        case Role.router:
            return [*_topic(user, topics.order_intents, read),
                    *_group(user, user, PatternType.PREFIXED)]
        case Role.observer:
            return [*_topic(user, topics.ledger_events, read),
                    *_topic(user, topics.dead_letters, read),
                    *_group(user, user, PatternType.PREFIXED)]


def role_of(user: str, bindings: set[Binding], topics: Topics) -> Role | None:
    """Return the role whose ACLs a user holds exactly, or None (none, or a mixture)."""
    for role in Role:
        if set(role_bindings(user, role, topics)) == bindings:
            return role
    return None


def check_user_name(name: str) -> str:
    """Return an outside user's name if it may be one.

    Raises:
        ConfigError: the name is malformed or belongs to the ledger's own principals.
    """
    if not USER_PATTERN.fullmatch(name):
        raise ConfigError("NAME", name, "lowercase letters, digits, '.', '_' or '-' (≤ 63)")
    if name.startswith(RESERVED_PREFIX) or name == KAFKA_ADMIN_USER:
        raise ConfigError("NAME", name, f"a name not starting with {RESERVED_PREFIX!r} "
                          "(reserved for the ledger's own processes)")
    return name


def for_job(settings: Settings, job: Job) -> Settings:
    """Return the settings a process of `job` runs with: Kafka clients as its own principal."""
    return settings.model_copy(update={"kafka_user": job.user})
