"""Kafka clients with every option that matters set explicitly, never left to library defaults.

aiokafka is used directly for the ledger's own processes because they need what faststream does
not expose: per-message acknowledgement futures from an idempotent producer (the relay marks an
event published only after the broker acknowledged it), batch reads, and offsets committed by hand
only after the PostgreSQL transaction committed. Must not import the store or the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from faststream.message import StreamMessage
from faststream.security import BaseSecurity, SASLScram512

from ledger import secrets
from ledger.errors import ConfigError
from ledger.settings import Settings

# A send not acknowledged within this fails its future; the relay then publishes the same events
# again from the store (its checkpoint has not moved), so a broker outage delays, never loses.
REQUEST_TIMEOUT_MS = 30_000
LINGER_MS = 2
BATCH_SIZE_MAX_BYTES = 1 << 20
MAX_POLL_RECORDS = 500
# Heartbeats go out several times per session timeout, as Kafka recommends.
HEARTBEATS_PER_SESSION = 3


SASL_MECHANISM = "SCRAM-SHA-512"


def password_file(settings: Settings, user: str) -> Path:
    """Return the file holding a Kafka principal's password."""
    return secrets.password_path(settings.secrets_dir, f"kafka_{user}")


def as_user(settings: Settings, user: str) -> Settings:
    """Return the settings with Kafka clients authenticating as another principal."""
    return settings.model_copy(update={"kafka_user": user})


def security(settings: Settings) -> dict[str, Any]:
    """Return the client options that authenticate as `settings.kafka_user`.

    Raises:
        ConfigError: the principal's password file is missing or readable by others.
    """
    if settings.kafka_security_protocol == "PLAINTEXT":
        return {"security_protocol": "PLAINTEXT"}
    path = password_file(settings, settings.kafka_user)
    if not path.exists():
        raise ConfigError("LEDGER_SECRETS_DIR", str(settings.secrets_dir),
                          f"a password file for Kafka user {settings.kafka_user} "
                          "(run `ledger migrate`, or `ledger kafka user add`)")
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": SASL_MECHANISM,
            "sasl_plain_username": settings.kafka_user,
            "sasl_plain_password": secrets.read_password_file(path)}


def producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    """An idempotent producer that waits for every in-sync replica (acks=all)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_servers,
        **security(settings),
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=LINGER_MS,
        request_timeout_ms=REQUEST_TIMEOUT_MS,
        max_batch_size=BATCH_SIZE_MAX_BYTES,
    )


def consumer(settings: Settings, *topics: str, group_id: str | None,
             client_id: str) -> AIOKafkaConsumer:
    """A consumer whose offsets move only when the caller commits (after its database commit)."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_servers,
        **security(settings),
        client_id=client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=MAX_POLL_RECORDS,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms(settings),
        request_timeout_ms=REQUEST_TIMEOUT_MS,
    )


ADMIN_TIMEOUT_MS = 15_000


def admin(settings: Settings, client_id: str) -> AIOKafkaAdminClient:
    """Return an admin client (not started) authenticating as `settings.kafka_user`."""
    return AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers, client_id=client_id,
                               request_timeout_ms=ADMIN_TIMEOUT_MS, **security(settings))


def broker_security(settings: Settings) -> BaseSecurity | None:
    """Return faststream's form of `security(settings)`."""
    options = security(settings)
    if "sasl_plain_username" not in options:
        return None
    return SASLScram512(options["sasl_plain_username"], options["sasl_plain_password"])


def heartbeat_interval_ms(settings: Settings) -> int:
    """Return a consumer group member's heartbeat interval."""
    return settings.kafka_session_timeout_ms // HEARTBEATS_PER_SESSION


def header(headers: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]] | None,
           name: str) -> str | None:
    """Return a message header as text, or None."""
    for key, value in headers or ():
        if key == name:
            return value.decode("utf-8", "replace")
    return None


def records_of(message: StreamMessage[Any]) -> tuple[Any, ...]:
    """Return the Kafka records behind a faststream message (one, or a batch)."""
    # A batch arrives as a tuple of records from Kafka and as a list from TestKafkaBroker.
    raw = message.raw_message
    return tuple(raw) if isinstance(raw, tuple | list) else (raw,)


async def raw_values(message: StreamMessage[Any]) -> Any:
    """Decode nothing: hand the handler the bytes as they came.

    Validation is the handler's, and a malformed body must reach it (and the dead letters)
    instead of failing in a decoder and being redelivered forever.
    """
    values = [record.value for record in records_of(message)]
    return values if isinstance(message.raw_message, tuple | list) else values[0]


ASSIGNMENT_POLLS_MAX = 100
ASSIGNMENT_POLL_MS = 100


async def reader_at_end(settings: Settings, topic: str, client_id: str) -> AIOKafkaConsumer:
    """Return a consumer without a group, reading every partition of a topic from its end.

    Subscribing (rather than assigning from the metadata the client had at start) also finds a
    topic created a moment earlier; the explicit seek makes "the end" the moment this returns.

    Raises:
        KafkaError: the topic's partitions were not assigned within the polls allowed.
    """
    reader = consumer(settings, group_id=None, client_id=client_id)
    await reader.start()
    reader.subscribe([topic])
    for _ in range(ASSIGNMENT_POLLS_MAX):
        if reader.assignment():
            break
        await reader.getmany(timeout_ms=ASSIGNMENT_POLL_MS)
    else:
        await reader.stop()
        raise KafkaError(f"topic {topic!r} was not assigned to a reader")
    for partition, offset in (await reader.end_offsets(list(reader.assignment()))).items():
        reader.seek(partition, offset)
    return reader
