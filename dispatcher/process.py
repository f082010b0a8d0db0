"""One account's dispatcher process: signals in, decisions and intents into the store.

Wired with faststream: a subscriber on `signals` in a consumer group of the account's own
(`ledger-dispatcher-NAME`), acknowledging a message only after its decision committed (a
redelivered signal is recognised by its signal_id and decided once), skipping other accounts'
keys, and refusing malformed signals to `dead-letters`. A second task expires pending intents
past their TTL. The process logs in as the account's own role. If PostgreSQL is unreachable it
emits nothing and the message is read again after a pause. Must not import the CLI.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from faststream.kafka import KafkaBroker, KafkaMessage

from dispatcher.decide import (
    DispatcherConfig,
    Outcome,
    StateCache,
    decide,
    decide_many,
    expire_due,
)
from ledger import consumer, deadletters, failpoints, kafka, metrics
from ledger.clock import Clock, utc_now
from ledger.db import create_pool
from ledger.deadletters import DeadLetter
from ledger.errors import InvalidEvent
from ledger.events import Signal
from ledger.kafka_admin import check_topics
from ledger.logins import account_dsn
from ledger.principals import Job as KafkaJob
from ledger.principals import for_job
from ledger.runtime import OPERATING_ERRORS, one_line, wait_or_stop
from ledger.settings import Settings
from ledger.signals import key_account, read_signal
from ledger.topics import Topics

if TYPE_CHECKING:
    import asyncpg

EXPIRY_INTERVAL_S = 1.0
SIGNAL_BATCH_MAX = 200
# Signals decided in one transaction: one lock, one append, one commit for all of them.
DECISION_BATCH_MAX = 50
POLL_MS = 50
RETRY_PAUSE_S = 1.0

log = logging.getLogger("ledger.dispatcher")

def consumer_group(account: str) -> str:
    return f"ledger-dispatcher-{account}"


@dataclass(kw_only=True)
class DispatcherCounters:
    allowed: int = 0
    blocked: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    expired: int = 0
    dead_letters: int = 0


def _signal_of(record: Any, config: DispatcherConfig, now: datetime) -> Signal | None:
    """Return the record's signal if it is this account's and valid; None otherwise.

    Another account's message is not this dispatcher's; an invalid one of its own account is
    dead-lettered by the signal watch (services/signal_watch.py), which sees every key, so that it
    is explained exactly once whether this dispatcher runs or not.
    """
    if key_account(record.key) != config.account:
        return None
    try:
        return read_signal(record.key, record.value, now, config.clock_skew)
    except InvalidEvent as exc:
        log.info("dispatcher %s: skipped an invalid signal (the signal watch dead-letters "
                 "it): %s", config.account, exc)
        return None


def _count(counters: DispatcherCounters, account: str, signal: Signal, outcome: Outcome,
           received: float, now: datetime) -> None:
    """Count a committed decision; `received` is when its poll reached the dispatcher."""
    metrics.DECISION_SECONDS.labels(account).observe(time.perf_counter() - received)
    if outcome.allowed and not outcome.duplicate:
        waited = (now - signal.occurred_at).total_seconds()
        metrics.SIGNAL_TO_INTENT_SECONDS.labels(account).observe(max(0.0, waited))
    if outcome.duplicate:
        counters.duplicates += 1
        metrics.DECISIONS.labels(account, "duplicate", "").inc()
    elif outcome.allowed:
        counters.allowed += 1
        metrics.DECISIONS.labels(account, "allowed", "").inc()
        metrics.EVENTS_APPENDED.labels("dispatcher").inc(2)
    else:
        code = outcome.code or "unknown"
        counters.blocked[code] = counters.blocked.get(code, 0) + 1
        metrics.DECISIONS.labels(account, "blocked", code).inc()
        metrics.EVENTS_APPENDED.labels("dispatcher").inc(1)


def build_broker(settings: Settings, topics: Topics, config: DispatcherConfig,
                 pool: asyncpg.Pool, counters: DispatcherCounters,
                 clock: Clock = utc_now, cache: StateCache | None = None) -> KafkaBroker:
    """Wire one account's dispatcher: a subscriber on `signals`, a dead-letter publisher."""
    group = consumer_group(config.account)
    broker = consumer.build_broker(settings, client_id=group)
    dead_letters = consumer.dead_letter_publisher(broker, topics.dead_letters)
    cache = cache if cache is not None else StateCache()

    # A batch per poll: this account's signals decided in order, up to DECISION_BATCH_MAX of
    # them in one transaction under the head lock (decide_many); offsets are committed once the
    # whole batch is decided (an error rewinds to the batch start, and the signals already
    # decided are recognised by their signal_id).
    @consumer.batch_subscriber(broker, settings, consumer.Subscription(
        topic=topics.signals, group_id=group, title="signals",
        description="Strategies' signals keyed by account: {signal_id, account, occurred_at, "
                    "symbol, instrument, side, quantity, limit_price, multiplier}.",
        max_records=SIGNAL_BATCH_MAX, poll_ms=POLL_MS,
        commit_every_s=settings.kafka_commit_interval_s))
    async def on_signals(bodies: Any, message: KafkaMessage) -> None:
        received = time.perf_counter()
        now = clock()
        mine = [(record, signal) for record in kafka.records_of(message)
                if (signal := _signal_of(record, config, now)) is not None]
        while mine:
            decided = await _decide_together(mine[:DECISION_BATCH_MAX], received)
            mine = mine[decided:]

    async def refuse(record: Any, reason: str) -> None:
        counters.dead_letters += 1
        metrics.DEAD_LETTERS.labels(consumer_group(config.account)).inc()
        await deadletters.publish(dead_letters, [DeadLetter(message=record, reason=reason)],
                                  consumer_group(config.account))

    async def _decide_together(batch: list[tuple[Any, Signal]], received: float) -> int:
        """Decide a run of signals in one transaction; return how many were decided."""
        if len(batch) == 1:
            await _decide_alone(*batch[0], received)
            return 1
        try:
            async with consumer.read_again_on_outage(f"dispatcher {config.account}",
                                                     RETRY_PAUSE_S), pool.acquire() as conn:
                outcomes = await decide_many(conn, config, [s for _, s in batch], clock(), cache)
        except BaseException as exc:
            cache.state = None
            if isinstance(exc, OPERATING_ERRORS) or not isinstance(exc, Exception):
                raise
            # One of them is at fault (or a bug it alone triggers): nothing of the run was
            # committed; each is decided again alone, so that only that one is refused.
            log.warning("dispatcher %s: a run of %d signals failed (%s); deciding each alone",
                        config.account, len(batch), one_line(exc))
            for record, signal in batch:
                await _decide_alone(record, signal, received)
            return len(batch)
        decided_at = clock()
        # The outcomes are those of a prefix of the batch (decide_many): the rest is decided next.
        for (_, signal), outcome in zip(batch, outcomes, strict=False):
            failpoints.hit("dispatcher.after_decide")
            _count(counters, config.account, signal, outcome, received, decided_at)
        return len(outcomes)

    async def _decide_alone(record: Any, signal: Signal, received: float) -> None:
        try:
            async with consumer.read_again_on_outage(f"dispatcher {config.account}",
                                                     RETRY_PAUSE_S), pool.acquire() as conn:
                outcome = await decide(conn, config, signal, clock(), cache)
        except BaseException as exc:
            cache.state = None
            if isinstance(exc, OPERATING_ERRORS) or not isinstance(exc, Exception):
                raise
            # This signal's own fault (or a bug it alone triggers): nothing was committed for
            # it; it goes to the dead letters and the partition moves on.
            log.error("dispatcher %s: signal %s refused: %s", config.account, signal.signal_id,
                      one_line(exc))
            await refuse(record, f"decision failed, nothing emitted: {one_line(exc)}")
            return
        failpoints.hit("dispatcher.after_decide")
        _count(counters, config.account, signal, outcome, received, clock())

    return broker


async def expire_loop(pool: asyncpg.Pool, config: DispatcherConfig, stop: asyncio.Event,
                      counters: DispatcherCounters, clock: Clock = utc_now,
                      cache: StateCache | None = None) -> None:
    """Expire intents past their TTL, once a second, until stop is set.

    With the decisions' cache, a pass folds only what was appended since the last decision
    instead of reading the projection's rows (thousands of pending intents in a burst).
    """
    while not await wait_or_stop(stop, EXPIRY_INTERVAL_S):
        try:
            async with pool.acquire() as conn:
                counters.expired += len(await expire_due(conn, config, clock(), cache))
        except OPERATING_ERRORS as exc:
            if cache is not None:
                cache.state = None
            log.warning("dispatcher %s: expiry skipped: %s", config.account, type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - expiry must outlive any one failure
            if cache is not None:
                cache.state = None
            log.error("dispatcher %s: expiry failed: %s", config.account, one_line(exc))


async def run(settings: Settings, config: DispatcherConfig, stop: asyncio.Event,
              counters: DispatcherCounters | None = None) -> None:
    """Run one account's dispatcher until stop is set, riding out outages."""
    counters = counters if counters is not None else DispatcherCounters()
    settings = for_job(settings, KafkaJob.dispatcher)

    async def open_attempt() -> consumer.Running:
        topics = await check_topics(settings, KafkaJob.dispatcher)
        pool = await create_pool(account_dsn(settings, config.account))
        # One cache per attempt, shared by decisions and expiry: a restart proves from the store.
        cache = StateCache()
        return consumer.Running(
            broker=build_broker(settings, topics, config, pool, counters, cache=cache),
            pool=pool, companions=[expire_loop(pool, config, stop, counters, cache=cache)],
            started=f"consuming {topics.signals}")

    await consumer.serve(f"dispatcher {config.account}", stop, open_attempt)
