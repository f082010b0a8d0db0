"""The projector: `ledger-events` -> per-account projection tables, exactly once in effect.

Wired with faststream: a batch subscriber (offsets committed only after the handler returned,
that is after the database commit; an error rewinds to the batch start) and a dead-letter
publisher. For each account in a batch, one transaction: lock the account's projection row, skip
what is already applied (sequence <= applied_sequence), and fold the rest with the one fold of
projections/fold.py. Kafka only carries the news: a message is used only if the store holds the
same event_id at that sequence, a gap is filled by reading the store, and a sequence beyond the
stream's head (never committed) is refused to `dead-letters`. The rows and `applied_sequence`
are written together, so a crash at any instant leaves them consistent. Must not import the CLI.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from faststream.kafka import KafkaBroker, KafkaMessage

from ledger import consumer, deadletters, failpoints, kafka, metrics, store
from ledger.db import create_pool
from ledger.deadletters import DeadLetter
from ledger.errors import InvalidEvent
from ledger.events import Event, decode_event
from ledger.kafka_admin import check_topics
from ledger.logins import job_dsn
from ledger.principals import Job as KafkaJob
from ledger.principals import for_job
from ledger.roles import Job
from ledger.runtime import OPERATING_ERRORS, one_line, wait_or_stop
from ledger.settings import Settings
from ledger.topics import Topics
from projections import tables
from projections.account_metrics import AccountGauges
from projections.fold import AccountState, fold

if TYPE_CHECKING:
    import asyncpg

    from ledger.db import Conn

CONSUMER_GROUP = "ledger-projector"
# Larger batches mean fewer transactions per account; the rows written stay per position.
BATCH_RECORDS_MAX = 2000
POLL_TIMEOUT_MS = 200
RETRY_PAUSE_S = 2.0
# Events one catch-up from the store applies to one account at a time (a transaction each).
CATCH_UP_EVENTS_MAX = 10_000
# States kept between batches, so a busy account is not re-read from its rows every batch; each
# is used only while its sequence equals the locked row's applied_sequence.
CACHED_ACCOUNTS_MAX = 10_000

log = logging.getLogger("ledger.projector")


@dataclass(kw_only=True)
class ProjectorCounters:
    applied: int = 0
    duplicates: int = 0
    filled_from_store: int = 0
    dead_letters: int = 0


@dataclass(kw_only=True)
class Projector:
    """Applies batches of ledger events to the projection tables."""

    counters: ProjectorCounters = field(default_factory=ProjectorCounters)
    cache: dict[str, AccountState] = field(default_factory=dict)
    gauges: AccountGauges = field(default_factory=AccountGauges)

    async def apply_batch(self, pool: asyncpg.Pool, records: Sequence[Any]) -> list[DeadLetter]:
        """Apply a batch; return the messages refused (malformed, unknown, not in the store).

        Accounts are independent (a transaction never spans two), so their transactions run
        side by side on connections of their own and their round trips overlap.
        """
        dead: list[DeadLetter] = []
        by_account: dict[str, list[tuple[Any, Event]]] = {}
        for record in records:
            try:
                event = _decode(record)
            except InvalidEvent as exc:
                dead.append(DeadLetter(message=record, reason=str(exc)))
                continue
            by_account.setdefault(event.account, []).append((record, event))
        refused = await asyncio.gather(*(self._apply_in_transaction(pool, account, items)
                                         for account, items in by_account.items()))
        dead.extend(letter for letters in refused for letter in letters)
        self.counters.dead_letters += len(dead)
        metrics.DEAD_LETTERS.labels(CONSUMER_GROUP).inc(len(dead))
        return dead

    async def _apply_in_transaction(self, pool: asyncpg.Pool, account: str,
                                    items: list[tuple[Any, Event]]) -> list[DeadLetter]:
        try:
            async with pool.acquire() as conn:
                async with conn.transaction():
                    refused = await self._apply_account(conn, account, items)
                failpoints.hit("projector.mid_batch")
                return refused
        except OPERATING_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - classified: this account's own fault
            # An event of this account that cannot be applied (say, a stored event no model
            # decodes): its projection stays where it is, and the dispatcher, which must then
            # fold a growing tail, fails closed; the messages go to the dead letters and the
            # other accounts of the batch, and the partition, go on.
            self.cache.pop(account, None)
            log.error("projector: %s cannot be projected past sequence %d: %s", account,
                      min(_seq(e) for _, e in items) - 1, one_line(exc))
            reason = f"account {account} cannot be projected: {one_line(exc)}"
            return [DeadLetter(message=record, reason=reason) for record, _ in items]

    async def _apply_account(self, conn: Conn, account: str,
                             items: list[tuple[Any, Event]]) -> list[DeadLetter]:
        head = await conn.fetchval("SELECT head FROM streams WHERE account = $1", account)
        if head is None:
            return [DeadLetter(message=r, reason=f"account: {account!r} has no stream")
                    for r, _ in items]
        before = await self._locked_state(conn, account)
        beyond = [DeadLetter(message=r, reason=f"sequence: {e.sequence} is beyond the head "
                                                f"{head} of stream {account}: never committed")
                  for r, e in items if _seq(e) > head]
        fresh = {_seq(e): (r, e) for r, e in items if before.sequence < _seq(e) <= head}
        self.counters.duplicates += sum(1 for _, e in items if _seq(e) <= before.sequence)
        if not fresh:
            return beyond
        events, refused = await _verified(conn, account, before.sequence, max(fresh), fresh)
        self.counters.filled_from_store += len(events) - (len(fresh) - len(refused))
        after = fold(events, before)
        await tables.save_state(conn, before, after)
        self.counters.applied += after.sequence - before.sequence
        metrics.EVENTS_PROJECTED.inc(after.sequence - before.sequence)
        self._remember(after, events)
        return beyond + refused

    async def catch_up(self, pool: asyncpg.Pool, account: str, head: int) -> int:
        """Apply an account's events up to `head` straight from the store; return how many.

        Kafka only carries the news: when it brings none (the last messages were consumed but
        the projection's commit was lost in a database crash, or the relay is down), the
        projection still reaches the head.
        """
        async with pool.acquire() as conn, conn.transaction():
            before = await self._locked_state(conn, account)
            last = min(head, before.sequence + CATCH_UP_EVENTS_MAX)
            if last <= before.sequence:
                return 0
            events = [e async for e in store.iterate_stream(conn, account, before.sequence, last)]
            after = fold(events, before)
            await tables.save_state(conn, before, after)
        applied = after.sequence - before.sequence
        self.counters.filled_from_store += applied
        self.counters.applied += applied
        metrics.EVENTS_PROJECTED.inc(applied)
        self._remember(after, events)
        return applied

    async def _locked_state(self, conn: Conn, account: str) -> AccountState:
        applied = await tables.applied_sequence(conn, account, lock=True)
        cached = self.cache.get(account)
        if cached is not None and cached.sequence == applied:
            return cached
        return await tables.load_state(conn, account)

    def _remember(self, state: AccountState, events: Sequence[Event]) -> None:
        if len(self.cache) >= CACHED_ACCOUNTS_MAX and state.account not in self.cache:
            self.cache.pop(next(iter(self.cache)))
        self.cache[state.account] = state
        self.gauges.show(state, events)

    async def introduce(self, pool: asyncpg.Pool, account: str) -> None:
        """Set an account's gauges from its rows: one this process has not shown yet, or showed
        at a sequence the rows have passed (the watch decides which).

        Its state comes from its rows; its last decision and reconciliation outcome from the
        store (two index scans backwards from the head).
        """
        async with pool.acquire() as conn:
            state = await tables.load_state(conn, account)
            marks = await conn.fetch(_LAST_MARKS_SQL, account)
        for mark in marks:
            self.gauges.note(account, mark["type"], int(mark["sequence"]), mark["occurred_at"])
        self.gauges.show(state)

    def forget(self) -> None:
        """Drop cached states (after a failed transaction their rows may differ)."""
        self.cache.clear()


async def _verified(conn: Conn, account: str, applied: int, last: int,
                    fresh: dict[int, tuple[Any, Event]]) -> tuple[list[Event], list[DeadLetter]]:
    """Return the events applied+1..last, from Kafka where the store agrees, else from the store.

    A message whose event_id is not the store's at its sequence is refused: Kafka distributes,
    PostgreSQL decides.
    """
    rows = await conn.fetch("SELECT sequence, event_id FROM events WHERE account = $1 "
                            "AND sequence > $2 AND sequence <= $3 ORDER BY sequence",
                            account, applied, last)
    stored = {int(row["sequence"]): row["event_id"] for row in rows}
    refused = [DeadLetter(message=record, reason=f"event_id: '{event.event_id}' is not the "
                                                  f"event at sequence {sequence} of {account}")
               for sequence, (record, event) in fresh.items()
               if stored.get(sequence) != event.event_id]
    usable = {s: e for s, (_, e) in fresh.items() if stored.get(s) == e.event_id}
    if len(usable) == last - applied:
        return [usable[s] for s in range(applied + 1, last + 1)], refused
    from_store = [e async for e in store.iterate_stream(conn, account, applied, last)]
    return from_store, refused


_LAST_MARKS_SQL = """
(SELECT type, sequence, occurred_at FROM events
 WHERE account = $1 AND type = 'SignalEvaluated' ORDER BY sequence DESC LIMIT 1)
UNION ALL
(SELECT type, sequence, occurred_at FROM events
 WHERE account = $1 AND type IN ('PositionsReconciled', 'ReconciliationFailed')
 ORDER BY sequence DESC LIMIT 1)
"""


def _decode(record: Any) -> Event:
    if record.value is None:
        raise InvalidEvent("value", None, "is empty: expected an event as JSON")
    event = decode_event(record.value)
    if event.sequence is None:
        raise InvalidEvent("sequence", None, "is missing: ledger events carry their sequence")
    return event


def _seq(event: Event) -> int:
    assert event.sequence is not None
    return event.sequence




def build_broker(settings: Settings, topics: Topics, pool: asyncpg.Pool,
                 projector: Projector) -> KafkaBroker:
    """Wire the projector: a batch subscriber on `ledger-events`, a dead-letter publisher."""
    broker = consumer.build_broker(settings, client_id=CONSUMER_GROUP)
    dead_letters = consumer.dead_letter_publisher(broker, topics.dead_letters)

    @consumer.batch_subscriber(broker, settings, consumer.Subscription(
        topic=topics.ledger_events, group_id=CONSUMER_GROUP, title="ledger-events",
        description="Committed events, per account in sequence order, published by the relay; "
                    "headers account, sequence, event_id, type.",
        max_records=BATCH_RECORDS_MAX, poll_ms=POLL_TIMEOUT_MS,
        commit_every_s=settings.kafka_commit_interval_s))
    async def on_ledger_events(bodies: list[bytes], message: KafkaMessage) -> None:
        try:
            async with consumer.read_again_on_outage("projector", RETRY_PAUSE_S):
                dead = await projector.apply_batch(pool, kafka.records_of(message))
        except BaseException:
            # What was cached may be half-applied: the next batch starts from the tables.
            projector.forget()
            raise
        await deadletters.publish(dead_letters, dead, CONSUMER_GROUP)

    return broker


WATCH_INTERVAL_S = 2.0
# Accounts whose gauges one look of the watch sets from their rows (at the start, or when another
# projector of the group moved them on): many spread over several looks instead of holding one up.
INTRODUCED_PER_LOOK_MAX = 200


async def _catch_up(pool: asyncpg.Pool, projector: Projector, account: str, applied: int,
                    head: int, stuck: set[tuple[str, int]]) -> None:
    try:
        caught = await projector.catch_up(pool, account, head)
    except OPERATING_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - one account must not stop the others
        projector.cache.pop(account, None)
        if (account, applied) not in stuck:
            stuck.add((account, applied))
            log.error("projector: %s cannot be projected past sequence %d: %s", account,
                      applied, one_line(exc))
        return
    log.info("projector: %s stalled at %d of %d; %d events applied from the store",
             account, applied, head, caught)


async def _watch(pool: asyncpg.Pool, projector: Projector, stop: asyncio.Event) -> None:
    """Keep the lag gauges current, and catch up from the store any account that stalled.

    An account's book gauges come from its rows when this process has not shown it yet, or
    showed it at a sequence the rows have passed: another projector of the group applied its
    partition since, and a gauge left behind would hold old figures for good.

    An account behind its head whose applied sequence did not move since the last look gets
    its tail from the store: whatever Kafka did or did not deliver, the projection converges.
    """
    stalled_at: dict[str, int] = {}
    # Accounts that cannot be projected past a sequence, so that each is reported once.
    stuck: set[tuple[str, int]] = set()
    while not await wait_or_stop(stop, WATCH_INTERVAL_S):
        try:
            rows = await pool.fetch(
                "SELECT s.account, s.head, coalesce(p.applied_sequence, 0) AS applied "
                "FROM streams s LEFT JOIN projection_accounts p USING (account)")
            behind = {}
            stale = projector.gauges.behind({row["account"]: int(row["applied"]) for row in rows})
            for account in stale[:INTRODUCED_PER_LOOK_MAX]:
                await projector.introduce(pool, account)
            for row in rows:
                account, head, applied = row["account"], int(row["head"]), int(row["applied"])
                metrics.PROJECTION_LAG.labels(account).set(head - applied)
                if head > applied:
                    behind[account] = applied
                    if stalled_at.get(account) == applied:
                        await _catch_up(pool, projector, account, applied, head, stuck)
            stalled_at = behind
        except OPERATING_ERRORS as exc:
            projector.forget()
            log.warning("projector: watch skipped: %s", type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - the watch must outlive any one account
            projector.forget()
            log.error("projector: watch failed: %s", one_line(exc))


async def run(settings: Settings, stop: asyncio.Event,
              projector: Projector | None = None) -> None:
    """Run the projector until stop is set, riding out database and broker outages."""
    projector = projector if projector is not None else Projector()
    settings = for_job(settings, KafkaJob.projector)

    async def open_attempt() -> consumer.Running:
        topics = await check_topics(settings, KafkaJob.projector)
        # The projection is derived: should a crash of PostgreSQL lose its last commits, the
        # next batch for that account finds a gap and reads it from the store.
        pool = await create_pool(job_dsn(settings, Job.projector), synchronous_commit=False)
        return consumer.Running(
            broker=build_broker(settings, topics, pool, projector), pool=pool,
            companions=[_watch(pool, projector, stop)], on_close=projector.forget,
            started=f"consuming {topics.ledger_events}")

    await consumer.serve("projector", stop, open_attempt)
