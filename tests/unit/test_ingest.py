"""Ingest's message handling, in memory: validation, dead letters, idempotent appends.

Method: faststream's TestKafkaBroker runs the real subscriber and dead-letter publisher of
`services.ingest.build_broker` without a broker; a stub appender stands in for the store and keeps
its idempotency rule (an event id is stored once). The real-broker path is in
tests/integration/test_pipeline.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord
from faststream.kafka import KafkaMessage, TestKafkaBroker

from ledger import deadletters, store
from ledger.errors import UnknownAccount
from ledger.events import Event, natural_key
from ledger.settings import load_settings
from ledger.topics import Topics
from services import ingest


def execution(account: str, fill_id: str, event_type: str = "OrderFilled",
              quantity: str = "1") -> bytes:
    data: dict[str, Any] = {"fill_id": fill_id, "position_id": "P-1", "symbol": "MSFT",
                            "instrument": "equity", "side": "long", "quantity": quantity,
                            "price": "410.25"}
    if event_type == "LimitsSet":
        data = {"max_open_positions": 5, "max_exposure": "10000"}
    return json.dumps({"account": account, "type": event_type,
                       "occurred_at": "2026-02-03T17:29:04Z", "data": data}).encode()


NOW = datetime(2026, 2, 3, 17, 30, tzinfo=UTC)
SKEW = timedelta(seconds=300)


def record(value: bytes | None, key: bytes | None, offset: int = 0) -> Any:
    return ConsumerRecord(topic="executions", partition=0, offset=offset, timestamp=0,
                          timestamp_type=0, key=key, value=value, checksum=None,
                          serialized_key_size=0, serialized_value_size=0, headers=())


class StubStore:
    """Keeps what a store keeps: each event id once, per known account, in order."""

    def __init__(self, accounts: set[str]) -> None:
        self.accounts = accounts
        self.events: dict[str, list[Event]] = {account: [] for account in accounts}

    async def __call__(self, account: str, events: Sequence[Event]) -> ingest.Recorded:
        if account not in self.accounts:
            raise UnknownAccount(account)
        stored = {event.event_id for event in self.events[account]}
        appended: dict[UUID, int] = {}
        duplicates: list[UUID] = []
        for event in events:
            if event.event_id in stored:
                duplicates.append(event.event_id)
                continue
            stored.add(event.event_id)
            self.events[account].append(event)
            appended[event.event_id] = len(self.events[account])
        return ingest.Recorded(result=store.AppendResult(
            account=account, head=len(self.events[account]), appended=appended,
            duplicates=duplicates))


def test_sort_batch_when_messages_are_bad_names_field_and_value_and_keeps_order() -> None:
    messages = [
        record(execution("large", "F1"), b"large", 0),
        record(b"{oops", b"large", 1),
        record(execution("large", "F2", quantity="twelve"), b"large", 2),
        record(execution("large", "L1", event_type="LimitsSet"), b"large", 3),
        record(execution("large", "F3"), b"tiny", 4),
        record(None, b"large", 5),
        record(execution("large", "F4"), b"large", 6),
    ]

    result = ingest.sort_batch(messages, now=NOW, clock_skew=SKEW)

    assert [natural_key(event) for _, event in result.by_account["large"]] == [
        'OrderFilled:fill_id="F1"', 'OrderFilled:fill_id="F4"']
    reasons = [letter.reason for letter in result.dead]
    assert reasons[0].startswith("json: ")
    assert reasons[1] == "data.quantity: 'twelve' is not a decimal"
    assert reasons[2].startswith("type: 'LimitsSet' is not accepted on executions")
    assert reasons[3] == "key: 'tiny' does not match account 'large'"
    assert reasons[4].startswith("value: None is empty")
    assert [letter.message.offset for letter in result.dead] == [1, 2, 3, 4, 5]


@pytest.mark.asyncio
async def test_broker_when_a_batch_mixes_good_bad_and_redelivered_appends_once_and_dead_letters(
) -> None:
    settings = load_settings()
    topics = Topics.from_settings(settings)
    stub = StubStore({"large"})
    counters = ingest.IngestCounters()
    broker = ingest.build_broker(settings, topics, stub, counters)
    dead: list[tuple[bytes, dict[str, str]]] = []

    @broker.subscriber(topics.dead_letters)
    async def capture(body: object, message: KafkaMessage) -> None:
        dead.append((message.body, dict(message.headers)))

    sent = [(b"large", execution("large", "F1")), (b"large", b"{oops"),
            (b"large", execution("large", "F1")), (b"ghost", execution("ghost", "G1"))]

    async with TestKafkaBroker(broker) as test_broker:
        for key, body in sent:
            await test_broker.publish(body, topics.executions, key=key)

    assert [natural_key(event) for event in stub.events["large"]] == ['OrderFilled:fill_id="F1"']
    assert (counters.appended, counters.duplicates, counters.dead_letters) == (1, 1, 2)
    reasons = sorted(headers["dlq.reason"] for _, headers in dead)
    assert reasons[0] == "account: account 'ghost' does not exist: run `ledger accounts add " \
                         "ghost` first"
    assert reasons[1].startswith("json: '{oops'")
    assert sorted(body for body, _ in dead) == sorted([b"{oops", execution("ghost", "G1")])
    assert all(headers["dlq.topic"] == topics.executions for _, headers in dead)
    assert all(headers["dlq.consumer"] == ingest.CONSUMER_GROUP for _, headers in dead)


def _document(event_type: str, data: dict[str, Any], occurred_at: str = "2026-02-03T17:29:04Z",
              account: str = "large") -> bytes:
    return json.dumps({"account": account, "type": event_type, "occurred_at": occurred_at,
                       "data": data}).encode()


@pytest.mark.parametrize(("body", "reason"), [
    (_document("OrderFilled", {"fill_id": "F1", "position_id": "P-1", "symbol": "QCOM P",
                               "instrument": "option", "side": "long", "quantity": "3",
                               "price": "6.00"}),
     "data.multiplier: nothing was given: required for an option (its notional is quantity x "
     "price x multiplier)"),
    (_document("PositionClosed", {"position_id": "P-1", "price": "6.00"}),
     "data.close_id: nothing was given: required on executions (the broker's execution id, "
     "the close's identity)"),
    (_document("OrderFilled", {"fill_id": "F1", "position_id": "P-1", "symbol": "KO",
                               "instrument": "equity", "side": "long", "quantity": "3",
                               "price": "60.00"}, occurred_at="2026-02-03T17:35:05Z"),
     "occurred_at: '2026-02-03T17:35:05Z' is more than 300s in the future (it is now "
     "2026-02-03T17:30:00Z)"),
])
def test_sort_batch_when_the_contract_would_understate_risk_refuses_with_one_line(
        body: bytes, reason: str) -> None:
    result = ingest.sort_batch([record(body, b"large")], now=NOW, clock_skew=SKEW)

    assert result.by_account == {}
    assert [letter.reason for letter in result.dead] == [reason]


def test_sort_batch_when_an_equity_has_no_multiplier_or_a_close_has_its_id_accepts_them(
) -> None:
    messages = [
        record(_document("OrderFilled", {"fill_id": "F1", "position_id": "P-1", "symbol": "KO",
                                         "instrument": "equity", "side": "long",
                                         "quantity": "3", "price": "60.00"}), b"large"),
        record(_document("PositionClosed", {"close_id": "C-1", "position_id": "P-1",
                                            "price": "61.00"},
                         occurred_at="2026-02-03T17:34:59Z"), b"large"),
    ]

    result = ingest.sort_batch(messages, now=NOW, clock_skew=SKEW)

    assert result.dead == []
    assert [event.type for _, event in result.by_account["large"]] == ["OrderFilled",
                                                                       "PositionClosed"]


class _SizeLimitedPublisher:
    """A publisher that refuses values over a size, as a broker refuses a too large message."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent: list[tuple[bytes, dict[str, str]]] = []

    async def publish(self, value: bytes, *, key: bytes, headers: dict[str, str]) -> None:
        if len(value) > self.limit:
            raise MessageSizeTooLargeError()
        self.sent.append((value, headers))


@pytest.mark.asyncio
async def test_dead_letter_when_too_large_to_send_again_is_cut_and_says_so() -> None:
    huge = b"x" * (deadletters.TRUNCATED_BYTES * 4)
    publisher = _SizeLimitedPublisher(limit=deadletters.TRUNCATED_BYTES * 2)

    await deadletters.publish(publisher, [deadletters.DeadLetter(
        message=record(huge, b"large"), reason="symbol: too long")], "ledger-ingest")

    ((value, headers),) = publisher.sent
    assert value == huge[:deadletters.TRUNCATED_BYTES]
    assert headers["dlq.truncated"] == str(len(huge))
    assert headers["dlq.reason"] == "symbol: too long"


class _PoisonedStore(StubStore):
    """A store that fails on one fill id with an error of that event's own (not the network's)."""

    def __init__(self, accounts: set[str], poisoned: str) -> None:
        super().__init__(accounts)
        self.poisoned = poisoned

    async def __call__(self, account: str, events: Sequence[Event]) -> ingest.Recorded:
        if any(getattr(e.data, "fill_id", None) == self.poisoned for e in events):
            raise ValueError(f"cannot record {self.poisoned}")
        return await super().__call__(account, events)


@pytest.mark.asyncio
async def test_broker_when_one_event_fails_to_record_dead_letters_it_alone_and_goes_on() -> None:
    settings = load_settings()
    topics = Topics.from_settings(settings)
    stub = _PoisonedStore({"large"}, poisoned="F2")
    counters = ingest.IngestCounters()
    broker = ingest.build_broker(settings, topics, stub, counters)
    dead: list[tuple[bytes, dict[str, str]]] = []

    @broker.subscriber(topics.dead_letters)
    async def capture(body: object, message: KafkaMessage) -> None:
        dead.append((message.body, dict(message.headers)))

    async with TestKafkaBroker(broker) as test_broker:
        for fill_id in ("F1", "F2", "F3"):
            await test_broker.publish(execution("large", fill_id), topics.executions,
                                      key=b"large")

    assert [natural_key(event) for event in stub.events["large"]] == [
        'OrderFilled:fill_id="F1"', 'OrderFilled:fill_id="F3"']
    assert [(body, headers["dlq.reason"]) for body, headers in dead] == [
        (execution("large", "F2"), "ValueError: cannot record F2")]


@pytest.mark.asyncio
async def test_apply_batch_when_one_event_of_a_batch_fails_records_its_neighbours() -> None:
    stub = _PoisonedStore({"large"}, poisoned="F2")
    batch = ingest.sort_batch([record(execution("large", f"F{i}"), b"large", i)
                               for i in (1, 2, 3)], now=NOW, clock_skew=SKEW)

    dead = await ingest.apply_batch(stub, batch, ingest.IngestCounters())

    assert [letter.message.offset for letter in dead] == [2]
    assert [natural_key(event) for event in stub.events["large"]] == [
        'OrderFilled:fill_id="F1"', 'OrderFilled:fill_id="F3"']


@pytest.mark.parametrize(("event_type", "data"), [
    ("PositionsReconciled", {"as_of": "2026-02-03T17:45:00Z", "head": 3}),
    ("DiscrepancyFound", {"kind": "close_of_unknown_position",
                          "execution": 'PositionClosed:close_id="C-1"', "position_id": "P-1",
                          "reason": "forged"}),
])
def test_sort_batch_when_an_adapter_sends_ingests_own_conclusions_refuses_them(
    event_type: str, data: dict[str, object],
) -> None:
    # Ingest's role writes these, but a broker adapter must not claim the ledger reconciled.
    forged = json.dumps({"account": "large", "type": event_type,
                         "occurred_at": "2026-02-03T17:45:00Z", "data": data}).encode()

    result = ingest.sort_batch([record(forged, b"large", 0)], now=NOW, clock_skew=SKEW)

    assert result.by_account == {}
    assert [letter.reason.split(" is not accepted")[0] for letter in result.dead] == [
        f"type: {event_type!r}"]
