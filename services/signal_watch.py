"""Nothing disappears from `signals`: a signal that no dispatcher decides is dead-lettered.

A dispatcher reads `signals` and skips every key but its account's, so a signal keyed to an
account without a running dispatcher (or without a stream at all) would otherwise vanish
without a trace. The watch, run beside ingest, reads `signals` in a consumer group of its own:

- a signal keyed to an account that has no stream goes to `dead-letters` at once;
- an invalid one (malformed, out of bounds, another account than its key, from the future) goes
  there at once too, with the field at fault; its account's dispatcher skips it, so it is
  explained exactly once whether that dispatcher runs or not;
- a valid signal is pending until the store holds its decision (`SignalEvaluated`); one still
  undecided `LEDGER_SIGNAL_GRACE_S` after it was produced goes to `dead-letters` with the reason
  ("no dispatcher decided it"), and `ledger_signals_undecided_total{account}` counts it.

Offsets are committed up to the oldest message still pending, so a restart re-reads exactly what
was not settled (a dead letter may then be sent twice; never none). A decision that comes after
the grace period is still recorded: the dead letter then says it came late. Must not import the
CLI.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ledger import deadletters, kafka, metrics
from ledger.clock import Clock, utc_now
from ledger.deadletters import DeadLetter
from ledger.errors import InvalidEvent
from ledger.events import decision_key
from ledger.runtime import OPERATING_ERRORS, one_line, wait_or_stop
from ledger.settings import Settings
from ledger.signals import key_account, read_signal
from ledger.topics import Topics

CONSUMER_GROUP = "ledger-signal-watch"
POLL_MS = 500
CHECK_INTERVAL_S = 1.0
# Pending signals kept at once; beyond this the oldest are settled early.
PENDING_MAX = 100_000

log = logging.getLogger("services.signal_watch")



@dataclass(kw_only=True)
class _Pending:
    record: Any
    account: str
    signal_id: str
    produced_at: datetime


@dataclass(kw_only=True)
class WatchCounters:
    decided: int = 0
    dead_letters: int = 0


class _ProducerPublisher:
    """What `deadletters.publish` needs of a publisher, on an aiokafka producer."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def publish(self, value: bytes | None, *, key: bytes | None,
                      headers: dict[str, str]) -> None:
        await self._producer.send_and_wait(self._topic, value, key=key,
                                           headers=[(k, v.encode()) for k, v in headers.items()])


@dataclass(kw_only=True)
class SignalWatch:
    """The watch's state: what is pending per partition, in offset order."""

    pool: asyncpg.Pool
    grace: timedelta
    clock_skew: timedelta
    publisher: Any
    clock: Clock = utc_now
    counters: WatchCounters = field(default_factory=WatchCounters)
    pending: dict[TopicPartition, dict[int, _Pending]] = field(default_factory=dict)
    known_accounts: set[str] = field(default_factory=set)

    async def take(self, records: list[Any]) -> None:
        """Note new signals; dead-letter at once those keyed to an account without a stream."""
        refused: list[DeadLetter] = []
        now = self.clock()
        for record in records:
            partition = TopicPartition(record.topic, record.partition)
            queue = self.pending.setdefault(partition, {})
            account = key_account(record.key)
            if account is None or not await self._exists(account):
                refused.append(DeadLetter(message=record, reason=(
                    f"key: {account!r} is not an account: no dispatcher can decide this signal")))
                continue
            try:
                signal = read_signal(record.key, record.value, now, self.clock_skew)
            except InvalidEvent as exc:
                refused.append(DeadLetter(message=record, reason=str(exc)))
                continue
            produced = datetime.fromtimestamp(record.timestamp / 1000, tz=UTC)
            queue[record.offset] = _Pending(record=record, account=account,
                                            signal_id=signal.signal_id, produced_at=produced)
        await self._dead_letter(refused)
        if sum(len(queue) for queue in self.pending.values()) > PENDING_MAX:
            await self.settle(force=True)

    async def settle(self, *, force: bool = False) -> None:
        """Drop what the store has decided; dead-letter what is past the grace period."""
        now = self.clock()
        due = [p for queue in self.pending.values() for p in queue.values()
               if force or now - p.produced_at >= self.grace]
        if not due:
            return
        decided = await self._decided(due)
        due_ids = {id(item) for item in due}
        late = []
        for queue in self.pending.values():
            for offset, item in list(queue.items()):
                if id(item) not in due_ids:
                    continue
                del queue[offset]
                if (item.account, item.signal_id) in decided:
                    self.counters.decided += 1
                    continue
                metrics.SIGNALS_UNDECIDED.labels(item.account).inc()
                late.append(DeadLetter(message=item.record, reason=(
                    f"signal_id: {item.signal_id!r} was not decided within "
                    f"{self.grace.total_seconds():g}s: no dispatcher of account "
                    f"{item.account!r} is running (a later decision is still recorded)")))
                log.warning("signal %s of %s undecided after %s: dead-lettered", item.signal_id,
                            item.account, self.grace)
        await self._dead_letter(late)

    def committable(self) -> dict[TopicPartition, int]:
        """Return, per partition with something settled, the offset to commit: the oldest
        pending one (all before it are settled)."""
        return {partition: min(queue) for partition, queue in self.pending.items() if queue}

    async def _exists(self, account: str) -> bool:
        if account in self.known_accounts:
            return True
        found = bool(await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM streams WHERE account = $1)", account))
        if found:
            self.known_accounts.add(account)
        return found

    async def _decided(self, items: list[_Pending]) -> set[tuple[str, str]]:
        by_account: dict[str, list[str]] = {}
        for item in items:
            by_account.setdefault(item.account, []).append(decision_key(item.signal_id))
        decided: set[tuple[str, str]] = set()
        for account, keys in by_account.items():
            rows = await self.pool.fetch(
                "SELECT data->>'signal_id' FROM events WHERE account = $1 "
                "AND natural_key = ANY($2::text[])", account, keys)
            decided.update((account, row[0]) for row in rows)
        return decided

    async def _dead_letter(self, letters: list[DeadLetter]) -> None:
        if letters:
            await deadletters.publish(self.publisher, letters, CONSUMER_GROUP)
            self.counters.dead_letters += len(letters)
            metrics.DEAD_LETTERS.labels(CONSUMER_GROUP).inc(len(letters))


async def run_watch(settings: Settings, topics: Topics, pool: asyncpg.Pool,
                    stop: asyncio.Event, counters: WatchCounters | None = None) -> None:
    """Watch `signals` until stop is set; raises an operating error for the caller to retry."""
    consumer: AIOKafkaConsumer = kafka.consumer(settings, topics.signals,
                                                group_id=CONSUMER_GROUP,
                                                client_id=CONSUMER_GROUP)
    producer = kafka.producer(settings, client_id=CONSUMER_GROUP)
    watch = SignalWatch(pool=pool, grace=timedelta(seconds=settings.signal_grace_s),
                        clock_skew=timedelta(seconds=settings.max_clock_skew_s),
                        publisher=_ProducerPublisher(producer, topics.dead_letters),
                        counters=counters or WatchCounters())
    await producer.start()
    await consumer.start()
    committed: dict[TopicPartition, int] = {}
    loop = asyncio.get_running_loop()
    settled_at = committed_at = float("-inf")
    try:
        while not stop.is_set():
            polled = await consumer.getmany(timeout_ms=POLL_MS)
            try:
                await watch.take([record for batch in polled.values() for record in batch])
                # Nothing is due before its grace period: looking once a second is enough, and
                # not at every fetch (thousands of signals pending at a few hundred a second).
                if loop.time() - settled_at >= CHECK_INTERVAL_S:
                    settled_at = loop.time()
                    await watch.settle()
            except OPERATING_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - the watch must outlive any one record
                log.error("signal watch: %s", one_line(exc))
            offsets = watch.committable()
            # Partitions with nothing pending: everything read so far is settled.
            for partition in consumer.assignment():
                if partition not in offsets:
                    offsets[partition] = await consumer.position(partition)
            # A commit is a write the broker replicates: only what moved, at most once a
            # second (a restart re-reads a second of signals, already settled or still
            # pending), and all of it again after a rebalance, when another member may have
            # committed meanwhile.
            if set(committed) - consumer.assignment():
                committed.clear()
            moved = {partition: offset for partition, offset in offsets.items()
                     if committed.get(partition) != offset}
            if moved and loop.time() - committed_at >= CHECK_INTERVAL_S:
                await consumer.commit(moved)
                committed.update(moved)
                committed_at = loop.time()
            if not polled:
                await wait_or_stop(stop, CHECK_INTERVAL_S)
    finally:
        await consumer.stop()
        await producer.stop()
