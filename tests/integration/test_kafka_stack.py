"""The local Kafka broker answers like a real one: aiokafka and faststream round trips.

Method: a unique topic per test on the broker `make up` started; produce with acks=all and
idempotence, consume with manual commits; a faststream subscriber with an explicit ack policy
receives a published message.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import NewTopic
from faststream import AckPolicy
from faststream.kafka import KafkaBroker

from ledger import kafka
from ledger.settings import Settings

pytestmark = pytest.mark.kafka

RECEIVE_TIMEOUT_S = 30.0


@pytest.fixture
async def topic(base_settings: Settings) -> AsyncIterator[str]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    admin = kafka.admin(base_settings, client_id="test")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def test_aiokafka_when_one_message_is_produced_a_consumer_reads_it_back(
    base_settings: Settings, topic: str
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=base_settings.kafka_servers, acks="all",
                                enable_idempotence=True, **kafka.security(base_settings))
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=base_settings.kafka_servers,
                                group_id=f"g-{topic}", auto_offset_reset="earliest",
                                enable_auto_commit=False, **kafka.security(base_settings))
    await producer.start()
    await consumer.start()
    try:
        await producer.send_and_wait(topic, b'{"hello": "ledger"}', key=b"large")
        message = await asyncio.wait_for(consumer.getone(), RECEIVE_TIMEOUT_S)
        await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()

    assert message.key == b"large"
    assert message.value == b'{"hello": "ledger"}'


async def test_faststream_subscriber_on_the_real_broker_receives_a_published_message(
    base_settings: Settings, topic: str
) -> None:
    broker = KafkaBroker(base_settings.kafka_servers,
                         security=kafka.broker_security(base_settings))
    received: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

    @broker.subscriber(topic, group_id=f"fs-{topic}", auto_offset_reset="earliest",
                       ack_policy=AckPolicy.ACK)
    async def handle(body: dict[str, str]) -> None:
        if not received.done():
            received.set_result(body)

    await broker.start()
    try:
        await broker.publish({"account": "tiny"}, topic, key=b"tiny")
        body = await asyncio.wait_for(received, RECEIVE_TIMEOUT_S)
    finally:
        await broker.stop()

    assert body == {"account": "tiny"}
