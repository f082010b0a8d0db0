"""Topic names (with the configured prefix) and their creation at start-up.

aiokafka's admin client is used directly: faststream has no API to create topics with a chosen
partition count. Must not import the store or the CLI.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from ledger.settings import Settings

REPLICATION_FACTOR = 1
ADMIN_TIMEOUT_MS = 15_000


@dataclass(frozen=True, kw_only=True)
class Topics:
    """The full names of the ledger's topics."""

    executions: str
    ledger_events: str
    signals: str
    order_intents: str
    dead_letters: str
    broker_positions: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        return cls(
            executions=settings.topic("executions"),
            ledger_events=settings.topic("ledger-events"),
            signals=settings.topic("signals"),
            order_intents=settings.topic("order-intents"),
            dead_letters=settings.topic("dead-letters"),
            broker_positions=settings.topic("broker-positions"),
        )

    def all(self) -> list[str]:
        return [self.executions, self.ledger_events, self.signals, self.order_intents,
                self.dead_letters, self.broker_positions]


async def ensure_topics(settings: Settings) -> Topics:
    """Create the ledger's topics that are missing, with the configured partition count."""
    topics = Topics.from_settings(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                request_timeout_ms=ADMIN_TIMEOUT_MS)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, num_partitions=settings.topic_partitions,
                            replication_factor=REPLICATION_FACTOR)
                   for name in topics.all() if name not in existing]
        if missing:
            # Another process creating them first is what we wanted anyway.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()
    return topics
