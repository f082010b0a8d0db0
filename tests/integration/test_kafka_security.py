"""Kafka's door: every client authenticates, and each principal may do only its job.

Against the local cluster (SASL/SCRAM-SHA-512, StandardAuthorizer, nothing allowed without an
ACL): anonymous and wrong-password clients are turned away; the outside roles and the ledger's
own processes each try what they must not (forge an execution, read the order intents, publish
a ledger event) and are refused, while their own job succeeds.
"""

from __future__ import annotations

import asyncio
import stat
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from console import kafka_users
from ledger import kafka, secrets
from ledger.principals import Job, Role
from ledger.settings import Settings
from ledger.topics import Topics
from tests.conftest import run_cli, with_topics

pytestmark = [pytest.mark.kafka]

ATTEMPT_TIMEOUT_S = 20.0
# A principal that may write no topic at all is refused before any topic: an idempotent producer
# must first obtain a producer id, which needs a write grant somewhere.
WRITE_REFUSED = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)
ALL_TOPICS = ("executions", "ledger-events", "signals", "order-intents", "dead-letters",
              "broker-positions")


async def _produce(settings: Settings, topic: str) -> None:
    producer = kafka.producer(settings, client_id="test-door")
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"{}", key=b"large"),
                               ATTEMPT_TIMEOUT_S)
    finally:
        await producer.stop()


async def _reads(settings: Settings, topic: str, group: str | None = None) -> bool:
    """True when the principal reads the record the fixture put at the start of partition 0;
    False when the cluster refuses: the topic is invisible to it (no DESCRIBE) or its fetch is
    refused (DESCRIBE without READ)."""
    consumer = kafka.consumer(settings, group_id=group, client_id="test-door")
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return False
        if group is None:
            consumer.assign([TopicPartition(topic, 0)])
            consumer.seek(TopicPartition(topic, 0), 0)
        else:
            consumer.subscribe([topic])
        deadline = asyncio.get_running_loop().time() + ATTEMPT_TIMEOUT_S
        while asyncio.get_running_loop().time() < deadline:
            try:
                if any(await consumer.getmany(timeout_ms=500)):
                    return True
            except TopicAuthorizationFailedError:
                return False
        raise AssertionError(f"{settings.kafka_user} neither read {topic} nor was refused")
    finally:
        await consumer.stop()


@pytest.fixture
async def prefixed(settings: Settings, topic_prefix: str) -> Settings:
    """This test's topics, each holding one record at the start of partition 0."""
    prefixed = with_topics(settings, topic_prefix)
    for name in ALL_TOPICS:
        producer = kafka.producer(prefixed, client_id="test-seed")
        await producer.start()
        try:
            await producer.send_and_wait(prefixed.topic(name), b"{}", partition=0)
        finally:
            await producer.stop()
    return prefixed


def _user(settings: Settings, role: Role) -> Settings:
    name = f"t{uuid.uuid4().hex[:10]}-{role.value}"
    done = run_cli(settings, "kafka", "user", "add", name, "--role", role.value)
    assert done.returncode == 0, done.stderr.decode()
    return kafka.as_user(settings, name)


async def test_a_client_without_credentials_cannot_even_connect(prefixed: Settings) -> None:
    topics = Topics.from_settings(prefixed)
    producer = AIOKafkaProducer(bootstrap_servers=prefixed.kafka_servers,
                                security_protocol="PLAINTEXT", request_timeout_ms=3000)
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(producer.start(), ATTEMPT_TIMEOUT_S)
    await producer.stop()
    consumer = AIOKafkaConsumer(topics.order_intents, bootstrap_servers=prefixed.kafka_servers,
                                security_protocol="PLAINTEXT", request_timeout_ms=3000)
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(consumer.start(), ATTEMPT_TIMEOUT_S)
    await consumer.stop()


async def test_a_wrong_password_is_refused(prefixed: Settings) -> None:
    strategy = _user(prefixed, Role.strategy)
    producer = AIOKafkaProducer(
        bootstrap_servers=prefixed.kafka_servers, security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=strategy.kafka_user,
        sasl_plain_password="not-the-password", request_timeout_ms=3000)
    with pytest.raises(KafkaError):
        await asyncio.wait_for(producer.start(), ATTEMPT_TIMEOUT_S)
    await producer.stop()


async def test_a_strategy_writes_signals_and_cannot_forge_executions(prefixed: Settings) -> None:
    topics = Topics.from_settings(prefixed)
    strategy = _user(prefixed, Role.strategy)
    await _produce(strategy, topics.signals)
    for topic in (topics.executions, topics.broker_positions, topics.ledger_events,
                  topics.order_intents):
        with pytest.raises(TopicAuthorizationFailedError):
            await _produce(strategy, topic)
    assert not await _reads(strategy, topics.signals)


async def test_an_adapter_writes_executions_and_cannot_read_order_intents(
        prefixed: Settings) -> None:
    topics = Topics.from_settings(prefixed)
    adapter = _user(prefixed, Role.adapter)
    await _produce(adapter, topics.executions)
    await _produce(adapter, topics.broker_positions)
    assert not await _reads(adapter, topics.order_intents)
    assert not await _reads(adapter, topics.executions)
    with pytest.raises(TopicAuthorizationFailedError):
        await _produce(adapter, topics.signals)


async def test_a_router_reads_intents_only_in_groups_named_after_it(prefixed: Settings) -> None:
    topics = Topics.from_settings(prefixed)
    router = _user(prefixed, Role.router)
    assert await _reads(router, topics.order_intents, group=f"{router.kafka_user}-main")
    with pytest.raises(GroupAuthorizationFailedError):
        await _reads(router, topics.order_intents, group="ledger-projector")
    with pytest.raises(WRITE_REFUSED):
        await _produce(router, topics.order_intents)


# What each process may do, written here independently of ledger/principals.py (the code under
# test), from each process's job: what it reads and what it writes, nothing else.
EXPECTED: dict[Job, dict[str, set[str]]] = {
    Job.ingest: {"READ": {"executions", "broker-positions", "signals"}, "WRITE": {"dead-letters"}},
    Job.relay: {"READ": set(), "WRITE": {"ledger-events", "order-intents"}},
    Job.projector: {"READ": {"ledger-events"}, "WRITE": {"dead-letters"}},
    Job.dispatcher: {"READ": {"signals"}, "WRITE": {"dead-letters"}},
    Job.follow: {"READ": {"ledger-events"}, "WRITE": set()},
}


def _can(job: Job, topic: str, operation: str) -> bool:
    return topic in EXPECTED[job][operation]


@pytest.mark.parametrize("job", list(Job), ids=lambda job: job.value)
async def test_each_process_principal_may_do_its_job_and_nothing_else(
        prefixed: Settings, job: Job) -> None:
    """Writes to every topic and reads from every topic as the process's principal: granted
    exactly where its bindings say (a relay cannot forge executions, a dispatcher cannot
    publish order intents, ingest cannot publish ledger events)."""
    as_job = kafka.as_user(prefixed, job.user)
    for name in ALL_TOPICS:
        topic = prefixed.topic(name)
        if _can(job, name, "WRITE"):
            await _produce(as_job, topic)
        else:
            with pytest.raises(WRITE_REFUSED):
                await _produce(as_job, topic)
        assert await _reads(as_job, topic) == _can(job, name, "READ"), topic


def test_user_add_keeps_the_password_in_a_private_file_and_never_prints_it(
        settings: Settings) -> None:
    name = f"t{uuid.uuid4().hex[:10]}-obs"
    done = run_cli(settings, "kafka", "user", "add", name, "--role", "observer")
    assert done.returncode == 0, done.stderr.decode()
    path = kafka.password_file(settings, name)
    password = secrets.read_password_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert password.encode() not in done.stdout + done.stderr
    listed = run_cli(settings, "kafka", "user", "list")
    line = next(line for line in listed.stdout.decode().splitlines() if line.startswith(name))
    assert line.split("\t")[1] == "observer"
    assert password.encode() not in listed.stdout
    again = run_cli(settings, "kafka", "user", "add", name, "--role", "adapter")
    assert again.returncode == 1
    assert again.stderr.decode().count("\n") == 1
    assert "already exists (role observer)" in again.stderr.decode()
    assert secrets.read_password_file(path) == password


@pytest.mark.parametrize(("name", "expected"), [
    ("ledger-relay", "reserved"), ("ledger-admin", "reserved"), ("Bad Name", "lowercase"),
])
def test_user_add_refuses_reserved_and_malformed_names(settings: Settings, name: str,
                                                       expected: str) -> None:
    done = run_cli(settings, "kafka", "user", "add", name, "--role", "adapter")
    assert done.returncode == 1
    assert expected in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


def test_config_shows_the_security_settings_with_the_password_masked(settings: Settings) -> None:
    done = run_cli(settings, "config")
    out = done.stdout.decode()
    assert "LEDGER_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT" in out
    assert "LEDGER_KAFKA_USER=ledger-admin" in out
    password = secrets.read_password_file(kafka.password_file(settings, "ledger-admin"))
    assert "LEDGER_KAFKA_PASSWORD=*** (first line of " in out
    assert password not in out


async def test_ensure_user_sets_the_credential_from_this_machines_file_every_time(
        prefixed: Settings, tmp_path: Path) -> None:
    """Users are the cluster's, password files a machine's: a second secrets directory that
    reset a user's password must not lock out the first one's (the demo's actors)."""
    topics = Topics.from_settings(prefixed)
    name = f"t{uuid.uuid4().hex[:10]}-strategy"
    admin_file = kafka.password_file(prefixed, prefixed.kafka_user)
    elsewhere = prefixed.model_copy(update={"secrets_dir": tmp_path})
    secrets.replace_password(tmp_path, f"kafka_{prefixed.kafka_user}",
                             secrets.read_password_file(admin_file))

    await kafka_users.ensure_user(prefixed, name, Role.strategy)
    other = await kafka_users.ensure_user(elsewhere, name, Role.strategy)
    await _produce(other, topics.signals)
    mine = await kafka_users.ensure_user(prefixed, name, Role.strategy)

    await _produce(mine, topics.signals)
    with pytest.raises(KafkaError):
        await _produce(other, topics.signals)
