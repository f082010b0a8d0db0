"""The dispatcher against the real stack: no over-trading under concurrency, lag and outages.

Method: several OS processes decide signals for one account at once (`ledger dispatch`, and the
Kafka path with `ledger run dispatcher`); afterwards every prefix of the account's stream is
replayed through the fold and open + pending must never exceed a limit. Lag is made by appending
fills behind the projector's back; expiry by a one-second TTL; a database outage by an immediate
PostgreSQL stop.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from console import commands
from dispatcher.decide import DispatcherConfig, StateCache, decide, decide_many, expire_due
from ledger import kafka, store
from ledger.db import connect
from ledger.errors import AppendRefused
from ledger.events import Event, Signal, SignalEvaluated, build_event, decode_signal
from ledger.kafka_admin import ensure_topics
from ledger.logins import account_dsn
from ledger.settings import Settings
from projections import rebuild
from projections.fold import fold, initial_state
from tests.conftest import LEDGER_BIN, cli_env, eventually, run_cli, with_topics
from tests.factories import fill, limits
from tests.integration.test_pipeline import read_to_end
from tests.processes import LedgerProcess
from tests.stack import postgres_start, postgres_stop_immediate

pytestmark = [pytest.mark.pg]

SETTLE_TIMEOUT_S = 90.0


def signal_line(account: str, signal_id: str, quantity: str = "3", price: str = "6.00", *,
                occurred_at: str = "2026-02-03T17:29:04Z") -> str:
    """A $1,800 put signal by default (3 x 6.00 x 100)."""
    return json.dumps({"signal_id": signal_id, "account": account,
                       "occurred_at": occurred_at, "symbol": "MSFT 260220P00400000",
                       "instrument": "option", "side": "long", "quantity": quantity,
                       "limit_price": price, "multiplier": "100"})


async def stream(admin: asyncpg.Connection, account: str) -> list[Event]:
    return await store.read_stream(admin, account, batch_size=100_000)


def assert_never_over_limits(account: str, events: list[Event]) -> None:
    """Replay every prefix: open + pending never exceeds a limit in force."""
    state = initial_state(account)
    for event in events:
        state = fold([event], state)
        if state.limits is None:
            continue
        assert state.open_positions + state.pending_count <= state.limits.max_open_positions, \
            f"over max positions at sequence {state.sequence}"
        assert state.exposure <= state.limits.max_exposure, \
            f"over max exposure at sequence {state.sequence}: {state.exposure}"


async def new_account(settings: Settings, admin: asyncpg.Connection, name: str,
                      max_positions: int = 5, max_exposure: str = "10000") -> str:
    await commands.add_account(settings, name, None)
    await store.append(admin, name, [limits(name, max_positions, max_exposure)])
    return name


@pytest.mark.slow
async def test_dispatch_when_four_processes_race_100_signals_issues_exactly_5_intents(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path,
    account_name: Callable[[str], str],
) -> None:
    account = await new_account(settings, admin, account_name("race"))
    lines = [signal_line(account, f"S-{index:03d}") for index in range(100)]
    files = []
    for worker in range(4):
        shuffled = lines[:]
        random.Random(worker).shuffle(shuffled)
        path = tmp_path / f"signals-{worker}.jsonl"
        path.write_text("\n".join(shuffled) + "\n")
        files.append(path)

    processes = [await asyncio.create_subprocess_exec(
        str(LEDGER_BIN), "dispatch", account, "--signals", str(path), "--json",
        env=cli_env(settings), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        for path in files]
    outputs = await asyncio.gather(*(p.communicate() for p in processes))

    assert [p.returncode for p in processes] == [0, 0, 0, 0], [err for _, err in outputs]
    reports = [json.loads(out) for out, _ in outputs]
    assert sum(r["allowed"] for r in reports) == 5
    assert sum(r["signals"] for r in reports) == 400
    events = await stream(admin, account)
    assert sum(e.type == "SignalEvaluated" for e in events) == 100
    assert sum(e.type == "IntentIssued" for e in events) == 5
    assert_never_over_limits(account, events)


async def test_decide_when_projector_is_behind_folds_the_tail_and_blocks_correctly(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str],
) -> None:
    account = await new_account(settings, admin, account_name("lag"))
    assert run_cli(settings, "rebuild", "--account", account).returncode == 0
    # Four fills the projection has not seen: the dispatcher must see them anyway.
    await store.append(admin, account, [fill(account, f"X-{i}", position_id=f"P-{i}",
                                             quantity="3", price="6.00") for i in range(4)])
    conn = await connect(account_dsn(settings, account))
    try:
        config = DispatcherConfig(account=account, fold_bound=1000)
        first = await decide(conn, config, decode_signal(signal_line(account, "A")),
                             datetime.now(UTC))
        second = await decide(conn, config, decode_signal(signal_line(account, "B")),
                              datetime.now(UTC))
    finally:
        await conn.close()

    assert first.allowed
    assert not second.allowed
    assert second.code == "max_open_positions"
    assert "Positions 4 + 1 pending + 1 > 5" in second.reason
    decisions = [e for e in await stream(admin, account) if e.type == "SignalEvaluated"]
    freshness = decisions[0].data.gates[0]
    assert (freshness.gate, freshness.passed, freshness.value) == ("projection_stale", True,
                                                                   Decimal(4))


async def test_decide_when_lag_exceeds_the_fold_bound_fails_closed_and_records_why(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str],
) -> None:
    account = await new_account(settings, admin, account_name("stale"))
    await store.append(admin, account, [fill(account, f"Y-{i}", position_id=f"P-{i}",
                                             quantity="1", price="1.00") for i in range(10)])
    conn = await connect(account_dsn(settings, account))
    try:
        outcome = await decide(conn, DispatcherConfig(account=account, fold_bound=3),
                               decode_signal(signal_line(account, "S")), datetime.now(UTC))
    finally:
        await conn.close()

    assert not outcome.allowed
    assert outcome.code == "projection_stale"
    assert "Projection 11 events behind head 11, beyond the fold bound 3" in outcome.reason
    events = await stream(admin, account)
    assert [e.type for e in events[-1:]] == ["SignalEvaluated"]
    assert not any(e.type == "IntentIssued" for e in events)


@pytest.mark.parametrize("setup", ["halted", "no_limits"])
async def test_dispatch_when_halted_or_without_limits_emits_nothing_and_records_why(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path,
    account_name: Callable[[str], str], setup: str,
) -> None:
    account = account_name(setup)
    await commands.add_account(settings, account, None)
    if setup == "halted":
        await store.append(admin, account, [limits(account)])
        assert run_cli(settings, "halt", account, "--reason", "risk review").returncode == 0
    path = tmp_path / "signals.jsonl"
    path.write_text(signal_line(account, "S-1") + "\n")

    result = run_cli(settings, "dispatch", account, "--signals", str(path), "--json")

    report = json.loads(result.stdout)
    expected = "trading_halted" if setup == "halted" else "limits_not_set"
    assert report["blocked"] == {expected: 1}
    assert report["decisions"][0]["intent_id"] is None
    events = await stream(admin, account)
    assert not any(e.type == "IntentIssued" for e in events)
    assert events[-1].type == "SignalEvaluated"


async def test_expiry_releases_the_reservation_and_a_late_fill_is_still_recorded(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str],
) -> None:
    account = await new_account(settings, admin, account_name("ttl"), max_positions=1)
    config = DispatcherConfig(account=account, intent_ttl=timedelta(seconds=1))
    start = datetime.now(UTC)
    conn = await connect(account_dsn(settings, account))
    try:
        first = await decide(conn, config, decode_signal(signal_line(account, "A")), start)
        blocked = await decide(conn, config, decode_signal(signal_line(account, "B")), start)
        expired = await expire_due(conn, config, start + timedelta(seconds=2))
        released = await decide(conn, config, decode_signal(signal_line(account, "C")),
                                start + timedelta(seconds=2))
    finally:
        await conn.close()
    assert first.intent_id is not None
    late_fill = fill(account, "LATE-1", position_id=f"P-{first.intent_id}", quantity="3",
                     price="6.00", intent_id=first.intent_id)
    await store.append(admin, account, [late_fill])

    assert (first.allowed, blocked.allowed, released.allowed) == (True, False, True)
    assert expired == [first.intent_id]
    state = await rebuild.fold_stream(admin, account)
    assert f"P-{first.intent_id}" in state.positions
    assert list(state.pending) == [released.intent_id]


async def test_dispatch_when_a_signal_line_is_bad_decides_nothing_and_names_the_line(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path,
    account_name: Callable[[str], str],
) -> None:
    account = await new_account(settings, admin, account_name("bad"))
    path = tmp_path / "signals.jsonl"
    path.write_text(signal_line(account, "S-1") + "\n"
                    + signal_line(account, "S-2", quantity="twelve") + "\n")

    result = run_cli(settings, "dispatch", account, "--signals", str(path))

    assert result.returncode == 1
    assert "line 2: quantity: 'twelve' is not a decimal" in result.stderr.decode()
    assert [e.type for e in await stream(admin, account)] == ["LimitsSet"]


@pytest.mark.kafka
@pytest.mark.slow
async def test_run_dispatcher_when_replicas_consume_a_burst_decides_each_signal_once(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path, topic_prefix: str,
    account_name: Callable[[str], str],
) -> None:
    test_settings = with_topics(settings, topic_prefix)
    topics = await ensure_topics(test_settings)
    account = await new_account(test_settings, admin, account_name("kaf"))
    other = account_name("other")
    replicas = [LedgerProcess(test_settings, tmp_path / f"r{i}", "dispatcher", "--account",
                              account) for i in range(2)]
    for replica in replicas:
        replica.log_path.parent.mkdir()
        replica.start()
    producer = kafka.producer(test_settings, client_id="test-strategy")
    await producer.start()
    try:
        messages: list[tuple[bytes, bytes]] = [
            (account.encode(), signal_line(account, f"K-{i}", occurred_at=now()).encode())
            for i in range(100)]
        messages.insert(50, (account.encode(), b'{"signal_id": "broken"'))
        messages.insert(60, (other.encode(), signal_line(other, "O-1", occurred_at=now())
                             .encode()))
        messages += messages[:10]  # redelivered
        for key, value in messages:
            await producer.send(topics.signals, value=value, key=key)
        await producer.flush()

        async def all_decided() -> bool:
            return sum(e.type == "SignalEvaluated" for e in await stream(admin, account)) == 100

        await eventually(all_decided, SETTLE_TIMEOUT_S)
    finally:
        await producer.stop()
        for replica in replicas:
            replica.stop()

    events = await stream(admin, account)
    assert sum(e.type == "IntentIssued" for e in events) == 5
    assert_never_over_limits(account, events)


@pytest.mark.kafka
@pytest.mark.slow
async def test_run_dispatcher_when_postgres_is_down_emits_nothing_then_decides_after_recovery(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path, topic_prefix: str,
    account_name: Callable[[str], str],
) -> None:
    test_settings = with_topics(settings, topic_prefix)
    topics = await ensure_topics(test_settings)
    account = await new_account(test_settings, admin, account_name("pgdown"))
    dispatcher = LedgerProcess(test_settings, tmp_path, "dispatcher", "--account", account)
    dispatcher.start()
    producer = kafka.producer(test_settings, client_id="test-strategy")
    await producer.start()
    fresh: asyncpg.Connection | None = None
    try:
        await producer.send_and_wait(topics.signals,
                                     signal_line(account, "BEFORE", occurred_at=now()).encode(),
                                     key=account.encode())
        await eventually(lambda: _decisions(admin, account, 1), SETTLE_TIMEOUT_S)
        postgres_stop_immediate()
        for index in range(3):
            await producer.send_and_wait(
                topics.signals, signal_line(account, f"DOWN-{index}", occurred_at=now()).encode(),
                key=account.encode())
        await asyncio.sleep(2)  # the dispatcher retries against a database that is not there
        postgres_start()
        fresh = await connect(test_settings.database_url)
        await eventually(lambda: _decisions(fresh, account, 4), SETTLE_TIMEOUT_S)
        events = await stream(fresh, account)
    finally:
        await producer.stop()
        dispatcher.stop()
        if fresh is not None:
            await fresh.close()

    decided = [e.data.signal_id for e in events
               if e.type == "SignalEvaluated"]
    assert decided[0] == "BEFORE"
    assert sorted(decided[1:]) == ["DOWN-0", "DOWN-1", "DOWN-2"]
    assert_never_over_limits(account, events)
    assert "nothing emitted" in dispatcher.log()


@pytest.mark.kafka
@pytest.mark.slow
async def test_run_dispatcher_after_an_outage_blocks_the_backlog_as_signal_stale(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path, topic_prefix: str,
    account_name: Callable[[str], str],
) -> None:
    """Signals sent while no dispatcher ran are not traded at their stale prices later."""
    test_settings = with_topics(settings, topic_prefix)
    topics = await ensure_topics(test_settings)
    account = await new_account(test_settings, admin, account_name("stale"))
    producer = kafka.producer(test_settings, client_id="test-strategy")
    await producer.start()
    try:
        for index in range(3):
            await producer.send_and_wait(
                topics.signals, signal_line(account, f"OLD-{index}", occurred_at=now()).encode(),
                key=account.encode())
    finally:
        await producer.stop()
    await asyncio.sleep(1.5)  # the outage: the backlog ages past the dispatcher's limit of 1 s
    dispatcher = LedgerProcess(test_settings, tmp_path, "dispatcher", "--account", account,
                               env={"LEDGER_SIGNAL_MAX_AGE_S": "1"}).start()
    try:
        await eventually(lambda: _decisions(admin, account, 3), SETTLE_TIMEOUT_S)
    finally:
        dispatcher.stop()

    decisions = [e.data for e in await stream(admin, account)
                 if isinstance(e.data, SignalEvaluated)]
    assert [d.allowed for d in decisions] == [False] * 3
    for decision in decisions:
        stale = next(g for g in decision.gates if g.gate == "signal_stale")
        assert stale.passed is False
        assert stale.limit == 1
        assert stale.value is not None
        assert stale.value > 1


def now() -> str:
    """The time a strategy stamps a signal it sends now."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _decisions(conn: asyncpg.Connection, account: str, count: int) -> bool:
    try:
        rows = await conn.fetchval(
            "SELECT count(*) FROM events WHERE account = $1 AND type = 'SignalEvaluated'",
            account)
    except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
        return False
    return bool(rows == count)





async def test_decision_context_renders_events_as_the_store_reads_them(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str],
) -> None:
    account = await new_account(settings, admin, account_name("context"))
    await store.append(admin, account, [fill(account, f"X-{i}", position_id=f"P-{i}")
                                        for i in range(3)])
    stored = await stream(admin, account)
    conn = await connect(account_dsn(settings, account))
    try:
        async with conn.transaction():
            context = await store.decision_context(conn, account, ["no such key"], 0, 1000)
            raw_tail = await conn.fetchval(
                "SELECT tail FROM ledger_decision_context($1, ARRAY['no such key'], 0, 1000)",
                account)
            raw_store = await conn.fetch(
                f"SELECT {store.EVENT_JSON_SQL} AS body FROM events WHERE account = $1 "
                "ORDER BY sequence", account)
    finally:
        await conn.close()

    assert context.head == len(stored)
    assert context.previous == []
    assert context.tail == stored
    # Byte for byte: the function keeps its own copy of the store's rendering.
    assert list(raw_tail) == [row["body"] for row in raw_store]


async def test_decision_context_beyond_its_bound_or_for_another_account_reads_nothing(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str],
) -> None:
    account = await new_account(settings, admin, account_name("ctxa"))
    other = await new_account(settings, admin, account_name("ctxb"))
    await store.append(admin, account, [fill(account, f"X-{i}", position_id=f"P-{i}")
                                        for i in range(3)])
    conn = await connect(account_dsn(settings, account))
    try:
        async with conn.transaction():
            beyond = await store.decision_context(conn, account, ["k"], 0, 2)
            current = await store.decision_context(conn, account, ["k"], beyond.head, 2)
            unknown = await store.decision_context(conn, account, ["k"], None, 2)
        with pytest.raises(AppendRefused):
            async with conn.transaction():
                await store.decision_context(conn, other, ["k"], 0, 1000)
    finally:
        await conn.close()

    assert beyond.tail is None
    assert current.tail == []
    assert unknown.tail is None


async def test_decide_when_a_replica_decides_the_same_signal_while_it_waits_finds_that_decision(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str],
) -> None:
    """The earlier decision is read after the lock is granted, not in a snapshot taken before
    the wait: one statement reading both would miss it and decide the signal twice."""
    account = await new_account(settings, admin, account_name("replica"))
    config = DispatcherConfig(account=account)
    signal = decode_signal(signal_line(account, "S-1"))
    first = await connect(account_dsn(settings, account))
    second = await connect(account_dsn(settings, account))
    try:
        holder = first.transaction()
        await holder.start()
        head = await store.lock_head(first, account)
        waiting = asyncio.create_task(decide(second, config, signal, datetime.now(UTC)))
        await eventually(lambda: _blocked_on_lock(admin, waiting), timeout_s=10)
        events = [build_event(account, datetime.now(UTC), SignalEvaluated(
            signal_id="S-1", signal=signal, allowed=False, gates=(), as_of_sequence=head))]
        await store.append(first, account, events, expected_sequence=head)
        await holder.commit()
        outcome = await asyncio.wait_for(waiting, 30)
    finally:
        await first.close()
        await second.close()

    assert outcome.duplicate
    assert sum(e.type == "SignalEvaluated" for e in await stream(admin, account)) == 1


async def _blocked_on_lock(admin: asyncpg.Connection, waiting: asyncio.Task[object]) -> bool:
    if waiting.done():
        waiting.result()  # it should be waiting: say why it is not
    blocked = await admin.fetchval(
        "SELECT count(*) FROM pg_locks WHERE NOT granted")
    return bool(blocked)


async def test_decide_many_records_exactly_what_deciding_one_at_a_time_records(
    settings: Settings, admin: asyncpg.Connection, account_name: Callable[[str], str],
) -> None:
    """A run decided in one transaction equals the same signals decided one by one: same
    verdicts, same gates, same figures, same intents (limits bind halfway through the run,
    and a signal repeats inside the run and across runs)."""
    alone = await new_account(settings, admin, account_name("alone"))
    together = await new_account(settings, admin, account_name("together"))
    rng = random.Random(11)
    ids = [f"S-{index:02d}" for index in range(24)]
    ids[9] = ids[3]   # a repeat inside the first run
    ids[20] = ids[1]  # a repeat of a decision of an earlier run
    prices = [f"{rng.randint(100, 900) / 100:.2f}" for _ in ids]
    at = datetime.now(UTC)

    def signals_of(account: str) -> list[Signal]:
        return [decode_signal(signal_line(account, signal_id, quantity="2", price=price))
                for signal_id, price in zip(ids, prices, strict=True)]

    outcomes = {}
    for account, runs in ((alone, [[s] for s in signals_of(alone)]),
                          (together, [signals_of(together)[:12], signals_of(together)[12:]])):
        conn = await connect(account_dsn(settings, account))
        config = DispatcherConfig(account=account)
        cache = StateCache()
        try:
            outcomes[account] = [o for run in runs
                                 for o in await decide_many(conn, config, run, at, cache)]
        finally:
            await conn.close()

    def verdicts(account: str) -> list[tuple[object, ...]]:
        return [(o.signal_id, o.allowed, o.code, o.reason, o.duplicate, o.as_of_sequence)
                for o in outcomes[account]]

    async def recorded(account: str) -> list[tuple[object, ...]]:
        # Intent and position ids are derived from the account's name: left out.
        return [(e.type, e.sequence,
                 e.data.model_dump_json(exclude={"signal": {"account"}, "intent_id": True,
                                                 "position_id": True}).replace(account, "A"))
                for e in await stream(admin, account) if e.type != "LimitsSet"]

    assert verdicts(alone) == verdicts(together)
    assert [o.allowed for o in outcomes[alone] if not o.duplicate].count(True) == 5
    assert sum(o.duplicate for o in outcomes[together]) == 2
    assert await recorded(alone) == await recorded(together)


@pytest.mark.kafka
@pytest.mark.slow
async def test_run_dispatcher_killed_with_offsets_uncommitted_rereads_and_decides_each_once(
    settings: Settings, admin: asyncpg.Connection, tmp_path: Path, topic_prefix: str,
    account_name: Callable[[str], str],
) -> None:
    """Offsets are committed at most once per interval (here: once, then not for ten minutes),
    so a dispatcher killed with -9 has decided and committed signals whose offsets never were:
    its successor reads them again, recognises each, and the router sees each intent once
    after deduplication by intent id."""
    test_settings = with_topics(settings, topic_prefix)
    topics = await ensure_topics(test_settings)
    account = await new_account(test_settings, admin, account_name("reread"), 1000, "1000000")
    slow_commits = {"LEDGER_KAFKA_COMMIT_INTERVAL_S": "600"}
    first = LedgerProcess(test_settings, tmp_path, "dispatcher", "--account", account,
                          name="first", env=slow_commits)
    second = LedgerProcess(test_settings, tmp_path, "dispatcher", "--account", account,
                           name="second", env=slow_commits)
    relay_process = LedgerProcess(test_settings, tmp_path, "relay")
    producer = kafka.producer(test_settings, client_id="test-strategy")
    await producer.start()

    async def send(ids: range) -> None:
        for index in ids:
            await producer.send(topics.signals, key=account.encode(), value=signal_line(
                account, f"R-{index}", quantity="1", price="1.00", occurred_at=now()).encode())
        await producer.flush()

    try:
        first.start()
        relay_process.start()
        await send(range(0, 1))
        await eventually(lambda: _decisions(admin, account, 1), SETTLE_TIMEOUT_S)
        await send(range(1, 40))
        await eventually(lambda: _decisions(admin, account, 40), SETTLE_TIMEOUT_S)
        first.kill()
        uncommitted = 40 - await _committed_offsets(test_settings, account, topics.signals)
        second.start()
        await send(range(40, 60))
        await eventually(lambda: _decisions(admin, account, 60), SETTLE_TIMEOUT_S)
        await eventually(lambda: _published(admin, account), SETTLE_TIMEOUT_S)
    finally:
        await producer.stop()
        second.stop()
        relay_process.stop()

    assert uncommitted >= 39, "the first dispatcher committed past its first batch"
    events = await stream(admin, account)
    decided = [e.data.signal_id for e in events if isinstance(e.data, SignalEvaluated)]
    assert sorted(decided) == sorted(f"R-{index}" for index in range(60))
    # The relay publishes every account of the session's database: this one's only.
    routed = [json.loads(m.value)["data"]["intent_id"]
              for m in await read_to_end(test_settings, topics.order_intents)
              if m.key == account.encode()]
    issued = [e.data.intent_id for e in events if e.type == "IntentIssued"]
    assert len(issued) == 60
    assert set(routed) == set(issued)
    assert len(routed) >= len(issued)


async def _committed_offsets(settings: Settings, account: str, topic: str) -> int:
    admin = kafka.admin(settings, client_id="test")
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(f"ledger-dispatcher-{account}")
    finally:
        await admin.close()
    return sum(meta.offset for partition, meta in offsets.items()
               if partition.topic == topic and meta.offset > 0)


async def _published(admin: asyncpg.Connection, account: str) -> bool:
    published = await admin.fetchval(
        "SELECT published_sequence FROM relay_positions WHERE account = $1", account)
    head = await admin.fetchval("SELECT head FROM streams WHERE account = $1", account)
    return bool(published == head)
