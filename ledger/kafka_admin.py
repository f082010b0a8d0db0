"""The cluster's side of the ledger: topics, users (SCRAM credentials) and ACLs.

Only the administrator (`ledger-admin`, a super user of the brokers) provisions; processes only
check that their topics exist and are theirs (`check_topics`). aiokafka's admin client has no
call for SCRAM credentials and creates one ACL per request, so the wire requests are declared
here on aiokafka's protocol types (Kafka's AlterUserScramCredentials v0, DescribeUserScram-
Credentials v0, CreateAcls v1) and sent through its client. Must not import the store or the CLI.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.protocol.admin import DescribeAclsRequest
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Array,
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    String,
    TaggedFields,
)

from ledger import kafka, secrets
from ledger.errors import ConfigError
from ledger.principals import Binding, Job, Operation, PatternType, ResourceType, job_bindings
from ledger.settings import KAFKA_ADMIN_USER, Settings
from ledger.topics import Topics

SCRAM_SHA_512 = 2  # Kafka's ScramMechanism code
# Kafka accepts 4096..16384 iterations for SCRAM-SHA-512; every login of the user pays for them.
SCRAM_ITERATIONS = 4096
SALT_BYTES = 32
ALLOW = 3
ANY = 1
HOST_ANY = "*"
# On three brokers a write is acknowledged by two at least; one broker may die without losing
# an acknowledged message, and a second one stops producers (they wait) instead of risking it.
REPLICAS_MAX = 3
MIN_IN_SYNC_MAX = 2


# -- wire requests aiokafka lacks ------------------------------------------------------------

class _AlterScramResponse(Response):  # type: ignore[misc]
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", CompactArray(("user", CompactString("utf-8")), ("error_code", Int16),
                                 ("error_message", CompactString("utf-8")),
                                 ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class _AlterScramStruct(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = _AlterScramResponse
    SCHEMA = Schema(
        ("deletions", CompactArray(("name", CompactString("utf-8")), ("mechanism", Int8),
                                   ("tags", TaggedFields))),
        ("upsertions", CompactArray(("name", CompactString("utf-8")), ("mechanism", Int8),
                                    ("iterations", Int32), ("salt", CompactBytes),
                                    ("salted_password", CompactBytes), ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class _AlterScram(Request[_AlterScramStruct]):  # type: ignore[misc]
    API_KEY = 51

    def __init__(self, upsertions: list[tuple[Any, ...]], deletions: list[tuple[Any, ...]]):
        self._upsertions, self._deletions = upsertions, deletions

    def build(self, request_struct_class: type[_AlterScramStruct]) -> _AlterScramStruct:
        return request_struct_class(self._deletions, self._upsertions, {})


class _DescribeScramResponse(Response):  # type: ignore[misc]
    API_KEY = 50
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", CompactString("utf-8")),
        ("results", CompactArray(
            ("user", CompactString("utf-8")), ("error_code", Int16),
            ("error_message", CompactString("utf-8")),
            ("credentials", CompactArray(("mechanism", Int8), ("iterations", Int32),
                                         ("tags", TaggedFields))),
            ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class _DescribeScramStruct(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 50
    API_VERSION = 0
    RESPONSE_TYPE = _DescribeScramResponse
    SCHEMA = Schema(
        ("users", CompactArray(("name", CompactString("utf-8")), ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class _DescribeScram(Request[_DescribeScramStruct]):  # type: ignore[misc]
    API_KEY = 50

    def build(self, request_struct_class: type[_DescribeScramStruct]) -> _DescribeScramStruct:
        return request_struct_class(None, {})  # None: every user


class _CreateAclsResponse(Response):  # type: ignore[misc]
    API_KEY = 30
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", Array(("error_code", Int16), ("error_message", String("utf-8")))),
    )


class _CreateAclsStruct(RequestStruct):  # type: ignore[misc]
    API_KEY = 30
    API_VERSION = 1
    RESPONSE_TYPE = _CreateAclsResponse
    SCHEMA = Schema(
        ("creations", Array(("resource_type", Int8), ("resource_name", String("utf-8")),
                            ("pattern_type", Int8), ("principal", String("utf-8")),
                            ("host", String("utf-8")), ("operation", Int8),
                            ("permission", Int8))),
    )


class _CreateAcls(Request[_CreateAclsStruct]):  # type: ignore[misc]
    API_KEY = 30

    def __init__(self, bindings: Iterable[Binding]):
        self._creations = [(b.resource_type, b.resource, b.pattern_type, f"User:{b.principal}",
                            HOST_ANY, b.operation, ALLOW) for b in bindings]

    def build(self, request_struct_class: type[_CreateAclsStruct]) -> _CreateAclsStruct:
        return request_struct_class(self._creations)


def _raise_for(code: int, message: str | None, what: str) -> None:
    if code:
        error = for_code(code)
        raise error(f"{what}: {message or error.__name__}")


async def _send(admin: AIOKafkaAdminClient, request: Request[Any]) -> Any:
    # Any broker forwards these to the active controller.
    client = admin._client
    return await client.send(client.get_random_node(), request)


# -- users -----------------------------------------------------------------------------------

def salted_password(password: str, salt: bytes, iterations: int = SCRAM_ITERATIONS) -> bytes:
    """Return SCRAM's SaltedPassword (Hi in RFC 5802) for SHA-512."""
    return hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)


async def upsert_user(admin: AIOKafkaAdminClient, user: str, password: str) -> None:
    """Create the user's SCRAM-SHA-512 credential, or replace it."""
    salt = os.urandom(SALT_BYTES)
    response = await _send(admin, _AlterScram(
        [(user, SCRAM_SHA_512, SCRAM_ITERATIONS, salt, salted_password(password, salt), {})], []))
    for name, code, message, _tags in response.results:
        _raise_for(code, message, f"Kafka user {name}")


async def delete_user(admin: AIOKafkaAdminClient, user: str) -> None:
    """Remove the user's credential (its ACLs stay until deleted)."""
    response = await _send(admin, _AlterScram([], [(user, SCRAM_SHA_512, {})]))
    for name, code, message, _tags in response.results:
        _raise_for(code, message, f"Kafka user {name}")


async def users(admin: AIOKafkaAdminClient) -> list[str]:
    """Return every user holding a SCRAM credential, sorted."""
    response = await _send(admin, _DescribeScram())
    _raise_for(response.error_code, response.error_message, "describing Kafka users")
    return sorted(user for user, _code, _message, _credentials, _tags in response.results)


# -- ACLs --------------------------------------------------------------------------------------

async def grant(admin: AIOKafkaAdminClient, bindings: Iterable[Binding]) -> None:
    """Create ALLOW bindings (creating an existing one changes nothing)."""
    wanted = list(bindings)
    if not wanted:
        return
    response = await _send(admin, _CreateAcls(wanted))
    for binding, (code, message) in zip(wanted, response.results, strict=True):
        _raise_for(code, message, f"ACL {binding.describe()} for {binding.principal}")


async def bindings_of(admin: AIOKafkaAdminClient, user: str | None = None) -> set[Binding]:
    """Return the ALLOW bindings of a user (every user's when None) on topics and groups."""
    principal = None if user is None else f"User:{user}"
    response = await _send(admin, DescribeAclsRequest(
        resource_type=ANY, resource_name=None, resource_pattern_type_filter=ANY,
        principal=principal, host=None, operation=ANY, permission_type=ANY))
    _raise_for(response.error_code, response.error_message, "describing ACLs")
    found: set[Binding] = set()
    for resource_type, name, pattern_type, acls in response.resources:
        if resource_type not in iter(ResourceType) or pattern_type not in iter(PatternType):
            continue
        for acl_principal, _host, operation, permission in acls:
            if permission != ALLOW or operation not in iter(Operation):
                continue
            found.add(Binding(acl_principal.removeprefix("User:"), ResourceType(resource_type),
                              PatternType(pattern_type), name, Operation(operation)))
    return found


# -- topics and provisioning -------------------------------------------------------------------

@contextlib.asynccontextmanager
async def opened(settings: Settings, client_id: str = "ledger-admin") -> AsyncIterator[
        AIOKafkaAdminClient]:
    """Yield a started admin client authenticating as `settings.kafka_user`."""
    admin = kafka.admin(settings, client_id)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def _broker_count(admin: AIOKafkaAdminClient) -> int:
    cluster = await admin.describe_cluster()
    return len(cluster["brokers"])


async def create_topics(admin: AIOKafkaAdminClient, settings: Settings) -> Topics:
    """Create the ledger's missing topics, replicated min(3, brokers) times."""
    topics = Topics.from_settings(settings)
    existing = set(await admin.list_topics())
    missing = [name for name in topics.all() if name not in existing]
    if missing:
        alive = await _broker_count(admin)
        if alive < settings.kafka_brokers:
            # Created now, they would keep fewer replicas for good.
            raise ConfigError("LEDGER_KAFKA_BROKERS", str(settings.kafka_brokers),
                              f"that many brokers answering before topics are created "
                              f"(only {alive} do)")
        replicas = min(REPLICAS_MAX, alive)
        configs = {"min.insync.replicas": str(min(MIN_IN_SYNC_MAX, replicas)),
                   "unclean.leader.election.enable": "false"}
        # Another process creating them first is what we wanted anyway.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(name, num_partitions=settings.topic_partitions,
                                                replication_factor=replicas,
                                                topic_configs=configs)
                                       for name in missing])
    return topics


async def provision(settings: Settings, *, users: bool = True) -> Topics:
    """Create the topics of `settings.topic_prefix` and the ACLs of the ledger's processes on
    them; with `users`, also each process's SCRAM user, its password kept in the secrets
    directory (the stored one if there is one). Run as the administrator; repeatable."""
    async with opened(settings) as admin:
        topics = await create_topics(admin, settings)
        if users:
            for job in Job:
                password = secrets.load_or_create_password(settings.secrets_dir,
                                                           f"kafka_{job.user}")
                await upsert_user(admin, job.user, password)
        await grant(admin, (binding for job in Job for binding in job_bindings(job, topics)))
    return topics


async def ensure_topics(settings: Settings) -> Topics:
    """Return the topics; as the administrator, create and grant what is missing first.

    A process running as its own principal cannot create anything: it gets the names, and its
    first read or write of a topic it may not use fails with an authorization error that names
    the principal (`check_topics` says so at start).
    """
    if settings.kafka_user == KAFKA_ADMIN_USER:
        return await provision(settings, users=False)
    return Topics.from_settings(settings)


async def check_topics(settings: Settings, job: Job) -> Topics:
    """Verify at a process's start that each topic its job uses exists and is visible to it.

    Raises:
        ConfigError: a topic is missing or not granted to the process's principal.
        KafkaError: no broker answered (or accepted the principal's password).
    """
    topics = Topics.from_settings(settings)
    needed = sorted({b.resource for b in job_bindings(job, topics)
                     if b.resource_type is ResourceType.TOPIC})
    # A broker that cannot be reached is an operating error (the caller retries, as for any
    # outage); so is a refused login, which aiokafka cannot tell from one.
    async with opened(settings, client_id=job.user) as admin:
        visible = set(await admin.list_topics())
    for name in needed:
        if name not in visible:
            raise ConfigError("topic", name, f"a topic granted to {settings.kafka_user} "
                              "(run `ledger migrate` as the administrator)")
    return topics
