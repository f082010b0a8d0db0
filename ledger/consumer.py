"""The one consumer runtime: how ingest, the projector and each dispatcher read Kafka.

Every consumer of the ledger has the same life: a faststream broker with one batch subscriber
and a dead-letter publisher, a database pool, perhaps a companion task (the signal watch, the
projection watch, the expiry loop); started, run until stop, torn down in reverse, and started
again after an operating error with a bounded backoff (`runtime.keep_running`).

Offsets are committed only when the handler returns (NACK_ON_ERROR), that is after the database
commit and the dead letters' acknowledgement; an error rewinds to the batch start. Errors are
classified once, here (docs/consumers.md): an operating error is the infrastructure's, so the
batch is read again after a pause; anything else is the message's own, and the caller turns it
into a dead letter and goes on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.middlewares import AckPolicy

from ledger import kafka
from ledger.runtime import OPERATING_ERRORS, keep_running
from ledger.settings import Settings

log = logging.getLogger("ledger.consumer")

DEAD_LETTERS_DESCRIPTION = ("Messages no consumer could use: original bytes and key, with headers "
                            "dlq.reason, dlq.topic, dlq.partition, dlq.offset, dlq.consumer.")


@dataclass(frozen=True, kw_only=True)
class Subscription:
    """What one consumer reads, and how much at a time."""

    topic: str
    group_id: str
    title: str
    description: str
    max_records: int
    poll_ms: int
    # Offsets committed at most this often (0: after every batch). Each commit is a write the
    # broker replicates; a consumer that reads a busy topic in small batches spent more of the
    # broker's time on commits than on fetches. An error still rewinds to the batch start;
    # what a restart reads again since the last commit is recognised downstream (signal_id,
    # account and sequence) and changes nothing. On a quiet topic the last batches stay
    # uncommitted until the next one arrives.
    commit_every_s: float = 0.0


def build_broker(settings: Settings, client_id: str) -> KafkaBroker:
    """Return a broker whose publishes are idempotent and acknowledged by every replica."""
    return KafkaBroker(settings.kafka_servers, security=kafka.broker_security(settings),
                       client_id=client_id, acks="all",
                       enable_idempotence=True, request_timeout_ms=kafka.REQUEST_TIMEOUT_MS,
                       logger=log, log_level=logging.DEBUG)


def dead_letter_publisher(broker: KafkaBroker, topic: str) -> Any:
    """Return the publisher of a consumer's dead letters."""
    return broker.publisher(topic, title="dead-letters", description=DEAD_LETTERS_DESCRIPTION)


def batch_subscriber(broker: KafkaBroker, settings: Settings,
                     subscription: Subscription) -> Callable[[Any], Any]:
    """Return the decorator of a batch handler: raw values, committed only when it returns
    (and, with `commit_every_s`, only when the last commit is that old)."""
    paced = subscription.commit_every_s > 0
    subscriber = broker.subscriber(
        subscription.topic, batch=True, max_records=subscription.max_records,
        batch_timeout_ms=subscription.poll_ms, group_id=subscription.group_id,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.MANUAL if paced else AckPolicy.NACK_ON_ERROR,
        decoder=kafka.raw_values, title=subscription.title,
        description=subscription.description,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms(settings))
    if not paced:
        return subscriber

    def decorate(handler: Callable[[Any, KafkaMessage], Awaitable[None]]) -> Any:
        committed_at = float("-inf")

        @functools.wraps(handler)
        async def with_paced_commits(bodies: Any, message: KafkaMessage) -> None:
            nonlocal committed_at
            try:
                await handler(bodies, message)
            except BaseException:
                await message.nack()  # as NACK_ON_ERROR does: read the batch again
                raise
            now = asyncio.get_running_loop().time()
            if now - committed_at >= subscription.commit_every_s:
                await message.ack()
                committed_at = now

        return subscriber(with_paced_commits)

    return decorate


@asynccontextmanager
async def read_again_on_outage(name: str, pause_s: float) -> AsyncIterator[None]:
    """Let an operating error rewind the batch, after a pause so an outage is not hammered.

    Anything else passes through unchanged: it is the caller's to dead-letter.
    """
    try:
        yield
    except OPERATING_ERRORS as exc:
        log.warning("%s: %s; nothing emitted, the batch will be read again in %.1fs", name,
                    type(exc).__name__,
                    pause_s)
        await asyncio.sleep(pause_s)
        raise


@dataclass(kw_only=True)
class Running:
    """One attempt's resources, torn down in reverse order when it ends."""

    broker: KafkaBroker
    pool: asyncpg.Pool
    # Run beside the subscriber; one that ends with an error ends the attempt (and it restarts).
    companions: list[Coroutine[Any, Any, None]] = field(default_factory=list)
    # Forget what lives only in memory, so the next attempt starts from the store.
    on_close: Callable[[], None] | None = None
    # Other clients of the attempt, closed after the broker.
    closing: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    started: str = ""


async def serve(name: str, stop: asyncio.Event,
                open_attempt: Callable[[], Awaitable[Running]]) -> None:
    """Run a consumer until stop is set, opening a fresh attempt after each operating error."""

    async def attempt(stop: asyncio.Event) -> None:
        running = await open_attempt()
        tasks: list[asyncio.Task[Any]] = [asyncio.create_task(companion)
                                          for companion in running.companions]
        stopping = asyncio.create_task(stop.wait())
        try:
            await running.broker.start()
            if running.started:
                log.info("%s: %s", name, running.started)
            await asyncio.wait({stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done():
                    task.result()  # a companion's operating error: this attempt ends
        finally:
            for task in (*tasks, stopping):
                task.cancel()
            await asyncio.gather(*tasks, stopping, return_exceptions=True)
            await running.broker.stop()
            for close in running.closing:
                await close()
            await running.pool.close()
            if running.on_close is not None:
                running.on_close()

    await keep_running(name, stop, attempt)
