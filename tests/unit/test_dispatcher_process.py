"""The dispatcher's message handling, in memory: a signal that breaks its decision is
dead-lettered alone, never redelivered forever, and the signals after it are decided.

Method: faststream's TestKafkaBroker runs the real subscriber and dead-letter publisher of
`dispatcher.process.build_broker` without a broker; the decision (`decide`) is replaced by a stub
that fails for one signal with an error of its own, as a bug that one input triggers would.
The real decision path is tested against PostgreSQL in tests/integration/test_dispatcher.py.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from faststream.kafka import KafkaMessage, TestKafkaBroker

from dispatcher import process
from dispatcher.decide import DispatcherConfig, Outcome
from ledger.events import Signal
from ledger.settings import load_settings
from ledger.topics import Topics

NOW = datetime(2026, 2, 3, 17, 30, tzinfo=UTC)


class _Pool:
    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[None]:
        yield None


def _signal(signal_id: str) -> bytes:
    return json.dumps({"signal_id": signal_id, "account": "large",
                       "occurred_at": "2026-02-03T17:29:59Z", "symbol": "KO",
                       "instrument": "equity", "side": "long", "quantity": "1",
                       "limit_price": "60.00"}).encode()


@pytest.mark.asyncio
async def test_broker_when_a_decision_fails_for_one_signal_dead_letters_it_and_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    decided: list[str] = []

    async def decide(conn: Any, config: Any, signal: Signal, now: Any,
                     cache: Any = None) -> Outcome:
        if signal.signal_id == "S-2":
            raise ArithmeticError("a bug this signal alone triggers")
        decided.append(signal.signal_id)
        return Outcome(signal_id=signal.signal_id, allowed=False, code="max_exposure",
                       reason="", intent_id=None, as_of_sequence=1)

    monkeypatch.setattr(process, "decide", decide)
    settings = load_settings()
    topics = Topics.from_settings(settings)
    counters = process.DispatcherCounters()
    broker = process.build_broker(settings, topics, DispatcherConfig(account="large"),
                                  _Pool(), counters, clock=lambda: NOW)  # type: ignore[arg-type]
    dead: list[tuple[bytes, dict[str, str]]] = []

    @broker.subscriber(topics.dead_letters)
    async def capture(body: object, message: KafkaMessage) -> None:
        dead.append((message.body, dict(message.headers)))

    async with TestKafkaBroker(broker) as test_broker:
        for signal_id in ("S-1", "S-2", "S-3"):
            await test_broker.publish(_signal(signal_id), topics.signals, key=b"large")

    assert decided == ["S-1", "S-3"]
    assert [(body, headers["dlq.reason"]) for body, headers in dead] == [
        (_signal("S-2"), "decision failed, nothing emitted: ArithmeticError: a bug this "
                         "signal alone triggers")]
    assert counters.dead_letters == 1
