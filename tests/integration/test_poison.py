"""Poison on every topic: dead-lettered with its reason, and the consumer goes on.

Goal: no message stalls a consumer or disappears. Method: run ingest (with its signal watch),
the relay, the projector and one account's dispatcher as OS processes against real Kafka and
PostgreSQL; write good messages and poison between them into `executions`, `signals` and
`ledger-events` (numbers beyond the contract's bounds, 1e18 prices, a limit of 3e9 positions,
JSON nested 100,000 deep, a string of 900 kB, unknown types, a wrong JSON type in every field);
then every good message must be recorded, decided or projected, and every poison message must
be in `dead-letters` (cut to its first kilobytes when too large to send again) with a reason.
The fuzz test does the same with hypothesis-drawn mutations of valid signals and executions,
keyed to an account with a dispatcher, one without, and one that does not exist: each message
must end decided, stored or dead-lettered.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from console import commands
from ledger import kafka
from ledger.errors import InvalidEvent
from ledger.events import decode_event
from ledger.kafka_admin import ensure_topics
from ledger.settings import Settings
from ledger.signals import read_signal
from ledger.topics import Topics
from tests.conftest import eventually, run_cli, with_topics
from tests.integration.test_pipeline import read_to_end
from tests.processes import LedgerProcess

pytestmark = [pytest.mark.pg, pytest.mark.kafka, pytest.mark.slow]

SETTLE_TIMEOUT_S = 90.0
GRACE_S = "2"
HUGE = "x" * 900_000
DEEP = "[" * 100_000 + "]" * 100_000


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def signal(account: str, signal_id: str, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "signal_id": signal_id, "account": account, "occurred_at": now(),
        "symbol": "KO", "instrument": "equity", "side": "long", "quantity": "1",
        "limit_price": "60.00"}
    document.update(changes)
    return document


def execution(account: str, fill_id: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "fill_id": fill_id, "position_id": f"P-{fill_id}", "symbol": "KO",
        "instrument": "equity", "side": "long", "quantity": "1", "price": "60.00"}
    data.update(changes)
    return {"account": account, "type": "OrderFilled", "occurred_at": now(), "data": data}


def _wrong_types(document: dict[str, Any], scalar_fields: list[str]) -> Iterator[Any]:
    """One copy per field with a JSON value of a type the field never takes."""
    for name in scalar_fields:
        for wrong in ([1], {"a": 1}, True):
            yield {**document, name: wrong}


@dataclass(frozen=True)
class Cluster:
    settings: Settings
    topics: Topics
    traded: str      # has limits and a running dispatcher
    idle: str        # exists, but no dispatcher runs for it
    processes: list[LedgerProcess]


@pytest.fixture
async def cluster(settings: Settings, topic_prefix: str, tmp_path: Path,
                  account_name: Callable[[str], str]) -> Any:
    test_settings = with_topics(settings, topic_prefix)
    topics = await ensure_topics(test_settings)
    traded, idle = account_name("trd"), account_name("idl")
    for account in (traded, idle):
        await commands.add_account(test_settings, account, None)
    assert run_cli(test_settings, "limits", "set", traded, "--max-positions", "1000",
                   "--max-exposure", "100000000").returncode == 0
    env = {"LEDGER_SIGNAL_GRACE_S": GRACE_S}
    processes = [LedgerProcess(test_settings, tmp_path, name, env=env).start()
                 for name in ("ingest", "relay", "projector")]
    processes.append(LedgerProcess(test_settings, tmp_path, "dispatcher", "--account", traded,
                                   env=env).start())
    try:
        yield Cluster(test_settings, topics, traded, idle, processes)
    finally:
        for process in processes:
            process.stop()


async def _produce(settings: Settings, messages: list[tuple[str, str, bytes]]) -> None:
    producer = kafka.producer(settings, client_id="test-poison")
    await producer.start()
    try:
        for topic, key, value in messages:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


def _explained(letters: list[Any]) -> dict[tuple[bytes | None, bytes], str]:
    """Dead letters by (key, value); a cut one by its first bytes, as long as it is."""
    found = {}
    for letter in letters:
        reason = kafka.header(letter.headers, "dlq.reason")
        assert reason, letter
        found[(letter.key, letter.value)] = reason
    return found


def _in_dead_letters(explained: dict[tuple[bytes | None, bytes], str], key: str,
                     value: bytes) -> str | None:
    for (letter_key, letter_value), reason in explained.items():
        if letter_key == key.encode() and (letter_value == value or (
                len(letter_value) < len(value) and value.startswith(letter_value))):
            return reason
    return None


async def _letters(cluster: Cluster) -> list[Any]:
    """Every dead letter so far: the topic read from its start, as far as it goes now."""
    return await read_to_end(cluster.settings, cluster.topics.dead_letters)


async def _decided(admin: asyncpg.Connection, account: str, signal_ids: list[str]) -> bool:
    return bool(await admin.fetchval(
        "SELECT count(*) FROM events WHERE account = $1 AND type = 'SignalEvaluated' "
        "AND data->>'signal_id' = ANY($2::text[])", account, signal_ids) == len(signal_ids))


async def _stored(admin: asyncpg.Connection, account: str, fill_ids: list[str]) -> bool:
    return bool(await admin.fetchval(
        "SELECT count(*) FROM events WHERE account = $1 AND type = 'OrderFilled' "
        "AND data->>'fill_id' = ANY($2::text[])", account, fill_ids) == len(fill_ids))


async def test_poison_on_every_topic_is_dead_lettered_and_the_good_messages_go_through(
        cluster: Cluster, admin: asyncpg.Connection) -> None:
    t, a = cluster.topics, cluster.traded
    huge_signal = json.dumps(signal(a, "S-huge", symbol=HUGE)).encode()
    poison: list[tuple[str, str, bytes]] = [
        (t.signals, a, json.dumps(signal(a, "S-1e18", quantity="1000000000000000000",
                                         limit_price="1000000000000000000")).encode()),
        (t.signals, a, json.dumps(signal(a, "S-bool", quantity=True)).encode()),
        (t.signals, a, DEEP.encode()),
        (t.signals, a, huge_signal),
        (t.signals, a, json.dumps(signal(a, "S-extra", leverage="10x")).encode()),
        (t.executions, a, json.dumps(execution(a, "F-1e18",
                                               quantity="1000000000000000000")).encode()),
        (t.executions, a, json.dumps({**execution(a, "F-type"), "type": "Bogus"}).encode()),
        (t.executions, a, DEEP.encode()),
        (t.executions, a, json.dumps(execution(a, "F-huge", symbol=HUGE)).encode()),
        (t.ledger_events, a, json.dumps({
            "event_id": str(uuid.uuid4()), "account": a, "type": "LimitsSet",
            "occurred_at": now(), "sequence": 2,
            "data": {"max_open_positions": 3_000_000_000, "max_exposure": "10"}}).encode()),
        (t.ledger_events, a, DEEP.encode()),
    ]
    base_signal = signal(a, "S-wrong")
    poison += [(t.signals, a, json.dumps(doc).encode()) for doc in _wrong_types(
        base_signal, ["signal_id", "occurred_at", "symbol", "instrument", "side", "quantity",
                      "limit_price", "multiplier"])]
    base_fill = execution(a, "F-wrong")
    poison += [(t.executions, a, json.dumps({**base_fill, "data": data}).encode())
               for data in _wrong_types(base_fill["data"], ["fill_id", "position_id", "symbol",
                                                            "instrument", "side", "quantity",
                                                            "price", "multiplier"])]
    good_signals = [f"S-good-{i}" for i in range(10)]
    good_fills = [f"F-good-{i}" for i in range(10)]
    messages: list[tuple[str, str, bytes]] = []
    for index, bad in enumerate(poison):
        messages.append(bad)
        messages.append((t.signals, a, json.dumps(
            signal(a, good_signals[index % 10])).encode()))
        messages.append((t.executions, a, json.dumps(
            execution(a, good_fills[index % 10])).encode()))

    await _produce(cluster.settings, messages)
    await eventually(lambda: _decided(admin, a, good_signals), SETTLE_TIMEOUT_S)
    await eventually(lambda: _stored(admin, a, good_fills), SETTLE_TIMEOUT_S)
    async def all_explained() -> bool:
        explained = _explained(await _letters(cluster))
        return all(_in_dead_letters(explained, key, value) is not None
                   for _, key, value in poison)

    await eventually(all_explained, SETTLE_TIMEOUT_S)
    explained = _explained(await _letters(cluster))
    reason = _in_dead_letters(explained, a, poison[0][2])
    assert reason is not None
    assert reason.startswith("quantity: '1000000000000000000' is too large")
    reason = _in_dead_letters(explained, a, poison[9][2])
    assert reason is not None
    assert "max_open_positions" in reason
    for process in cluster.processes:
        assert process.alive(), process.log()[-2000:]


async def test_a_signal_nobody_decides_is_dead_lettered_after_the_grace_period(
        cluster: Cluster, admin: asyncpg.Connection) -> None:
    t = cluster.topics
    idle = json.dumps(signal(cluster.idle, "S-idle")).encode()
    ghost = json.dumps(signal("ghost_account", "S-ghost")).encode()

    await _produce(cluster.settings, [(t.signals, cluster.idle, idle),
                                      (t.signals, "ghost_account", ghost)])

    async def both() -> bool:
        explained = _explained(await _letters(cluster))
        return all(_in_dead_letters(explained, key, value) is not None
                   for key, value in ((cluster.idle, idle), ("ghost_account", ghost)))

    await eventually(both, SETTLE_TIMEOUT_S)
    explained = _explained(await _letters(cluster))
    assert "was not decided within 2s" in (_in_dead_letters(explained, cluster.idle, idle) or "")
    assert "is not an account" in (_in_dead_letters(explained, "ghost_account", ghost) or "")


# --- Fuzz -----------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
    | st.sampled_from(["1e18", "-1", "0", "99999999999.9999999", "6.00", "option", "long"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8)


@st.composite
def mutated(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    changed = dict(document)
    for name in list(changed):
        action = draw(st.sampled_from(["keep", "keep", "keep", "drop", "replace"]))
        if action == "drop":
            del changed[name]
        elif action == "replace":
            changed[name] = draw(json_values)
    if draw(st.booleans()):
        changed[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    return changed


@dataclass(frozen=True)
class Sent:
    """A fuzzed message and what would record it: a signal's id, or an execution's event id."""

    topic: str
    key: str
    value: bytes
    signal_id: str | None = None
    event_id: uuid.UUID | None = None


def _identity(topic: str, key: str, value: bytes, topics: Topics) -> Sent:
    if topic == topics.signals:
        try:
            parsed = read_signal(key.encode(), value, datetime.now(UTC), timedelta(seconds=300))
        except InvalidEvent:
            return Sent(topic, key, value)
        return Sent(topic, key, value, signal_id=parsed.signal_id)
    try:
        return Sent(topic, key, value, event_id=decode_event(value).event_id)
    except InvalidEvent:
        return Sent(topic, key, value)


@st.composite
def fuzzed_messages(draw: st.DrawFn, topics: Topics, accounts: list[str]) -> list[Sent]:
    sent = []
    for index in range(draw(st.integers(min_value=5, max_value=15))):
        key = draw(st.sampled_from(accounts))
        tag = f"{uuid.uuid4().hex[:8]}-{index}"
        if draw(st.booleans()):
            document = draw(mutated(signal(key, f"S-{tag}")))
            sent.append(_identity(topics.signals, key, json.dumps(document).encode(), topics))
        else:
            fill = execution(key, f"F-{tag}")
            fill["data"] = draw(mutated(fill["data"]))
            sent.append(_identity(topics.executions, key, json.dumps(fill).encode(), topics))
    return sent


def test_fuzzed_signals_and_executions_all_end_decided_stored_or_dead_lettered(
        cluster: Cluster) -> None:
    accounts = [cluster.traded, cluster.idle, "ghost_account"]

    @settings(max_examples=4, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(fuzzed_messages(cluster.topics, accounts))
    def run(messages: list[Sent]) -> None:
        asyncio.run(_check_fuzzed(cluster, messages))

    run()


async def _check_fuzzed(cluster: Cluster, messages: list[Sent]) -> None:
    """Wait until every message is explained: decided, stored, or in the dead letters."""
    await _produce(cluster.settings, [(m.topic, m.key, m.value) for m in messages])
    conn = await asyncpg.connect(cluster.settings.database_url)
    try:
        async def explained(message: Sent, letters: dict[tuple[bytes | None, bytes], str]
                            ) -> bool:
            if _in_dead_letters(letters, message.key, message.value) is not None:
                return True
            if message.signal_id is not None:
                return await _decided(conn, message.key, [message.signal_id])
            if message.event_id is not None:
                return bool(await conn.fetchval(
                    "SELECT count(*) FROM events WHERE account = $1 AND event_id = $2",
                    message.key, message.event_id))
            return False

        async def settled() -> bool:
            letters = _explained(await _letters(cluster))
            return all([await explained(message, letters) for message in messages])

        await eventually(settled, SETTLE_TIMEOUT_S)
    finally:
        await conn.close()
