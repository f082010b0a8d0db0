"""The simulated world around the ledger in the demo: a market, strategies, a broker, a position
manager. They talk to the ledger only the way real ones would: through Kafka topics.

- Market: a seeded random walk of option premiums.
- Strategies: bursts of signals per account on `signals`, far more than the limits allow.
- Broker: reads `order-intents`; after a short random delay fills at the limit price with some
  slippage, or rejects; reports on `executions`.
- Position manager: follows each account's events (the ledger's follow API), and closes positions
  on stop-loss / take-profit (and everything at the end of the morning) on `executions`.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from aiokafka import AIOKafkaProducer

from ledger import kafka
from ledger.clock import utc_now
from ledger.events import Event, IntentIssued, decode_event
from ledger.settings import Settings
from ledger.topics import Topics
from projections.fold import fold, initial_state
from services.follow import follow

CENT = Decimal("0.01")
SYMBOLS = {
    "MSFT 260220P00400000": Decimal("6.00"), "CRM 260220P00300000": Decimal("4.10"),
    "META 260220P00650000": Decimal("28.50"), "AVGO 260220P00330000": Decimal("15.20"),
    "AMD 260220P00150000": Decimal("5.47"), "AAPL 260220P00225000": Decimal("7.35"),
    "QCOM 260220P00160000": Decimal("4.80"), "GOOGL 260220P00190000": Decimal("8.90"),
    "NVDA 260220P00130000": Decimal("9.80"), "ORCL 260220P00250000": Decimal("12.40"),
    "INTC 260220P00030000": Decimal("3.10"),
}
TAKE_PROFIT = Decimal("1.25")
STOP_LOSS = Decimal("0.85")
REJECT_PROBABILITY = 0.12


now = utc_now


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(kw_only=True)
class Tally:
    """What the simulated world did, for the progress display and the final summary."""

    signals: dict[str, int] = field(default_factory=dict)
    fills: dict[str, int] = field(default_factory=dict)
    rejects: dict[str, int] = field(default_factory=dict)
    closes: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def bump(counts: dict[str, int], account: str) -> None:
        counts[account] = counts.get(account, 0) + 1


class Market:
    """Option premiums moving as a seeded random walk."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.prices = dict(SYMBOLS)

    def step(self) -> None:
        for symbol, price in self.prices.items():
            move = Decimal(str(round(self.rng.gauss(0, 0.03), 4)))
            self.prices[symbol] = max(CENT, (price * (1 + move)).quantize(CENT, ROUND_HALF_EVEN))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.step()
            await asyncio.sleep(0.25)


async def strategies(settings: Settings, topics: Topics, producer: AIOKafkaProducer,
                     market: Market, accounts: dict[str, int], rng: random.Random,
                     stop: asyncio.Event, tally: Tally) -> None:
    """Send bursts of signals: each account's burst is several orders at once."""
    while not stop.is_set():
        for account, contracts_max in accounts.items():
            for _ in range(rng.randint(2, 6)):
                symbol = rng.choice(list(market.prices))
                signal = {
                    "signal_id": f"{account}-{uuid.uuid4().hex[:12]}", "account": account,
                    "occurred_at": stamp(now()), "symbol": symbol, "instrument": "option",
                    "side": "long", "quantity": str(rng.randint(1, contracts_max)),
                    "limit_price": str(market.prices[symbol]), "multiplier": "100"}
                await producer.send(topics.signals, json.dumps(signal).encode(),
                                    key=account.encode())
                Tally.bump(tally.signals, account)
        await asyncio.sleep(rng.uniform(1.0, 3.0))


async def broker(settings: Settings, topics: Topics, producer: AIOKafkaProducer,
                 market: Market, rng: random.Random, stop: asyncio.Event, tally: Tally) -> None:
    """Fill or reject every intent after a short random delay."""
    consumer = kafka.consumer(settings, topics.order_intents,
                              group_id=f"demo-broker-{uuid.uuid4().hex[:8]}",
                              client_id="demo-broker")
    await consumer.start()
    pending: set[asyncio.Task[None]] = set()
    try:
        while not stop.is_set():
            polled = await consumer.getmany(timeout_ms=300)
            for message in (m for batch in polled.values() for m in batch):
                intent = decode_event(message.value)
                task = asyncio.create_task(_execute(topics, producer, market, rng, intent, tally))
                pending.add(task)
                task.add_done_callback(pending.discard)
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        await consumer.stop()


async def _execute(topics: Topics, producer: AIOKafkaProducer, market: Market,
                   rng: random.Random, intent: Event, tally: Tally) -> None:
    data = intent.data
    assert isinstance(data, IntentIssued), intent.type
    await asyncio.sleep(rng.uniform(0.2, 2.5))
    account = intent.account
    report: dict[str, object]
    if rng.random() < REJECT_PROBABILITY:
        report = {"account": account, "type": "IntentRejected", "occurred_at": stamp(now()),
                  "data": {"intent_id": data.intent_id,
                           "reason": "broker: no liquidity at the limit"}}
        Tally.bump(tally.rejects, account)
    else:
        slippage = Decimal(str(round(rng.uniform(-0.02, 0.01), 4)))
        price = max(CENT, (data.limit_price * (1 + slippage)).quantize(CENT))
        report = {"account": account, "type": "OrderFilled", "occurred_at": stamp(now()),
                  "data": {"fill_id": f"X-{uuid.uuid4().hex[:12]}",
                           "position_id": data.position_id, "symbol": data.symbol,
                           "instrument": data.instrument, "side": data.side,
                           "quantity": str(data.quantity), "price": str(price),
                           "multiplier": str(data.multiplier), "intent_id": data.intent_id}}
        Tally.bump(tally.fills, account)
    await producer.send(topics.executions, json.dumps(report).encode(), key=account.encode())


async def position_manager(settings: Settings, topics: Topics, producer: AIOKafkaProducer,
                           market: Market, account: str, stop: asyncio.Event,
                           flatten: asyncio.Event, tally: Tally) -> None:
    """Follow one account and close positions on stop-loss / take-profit, all at the end."""
    state = initial_state(account)
    closing: set[str] = set()

    async def watch() -> None:
        nonlocal state
        async for event in follow(settings, account, 1, stop=stop):
            state = fold([event], state)

    watcher = asyncio.create_task(watch())
    try:
        while not stop.is_set():
            await asyncio.sleep(0.4)
            for position in list(state.positions.values()):
                if position.position_id in closing:
                    continue
                price = market.prices.get(position.symbol, position.average_price)
                # A reducing account is flattened as if the morning were over: the desk asked
                # for less risk, and closes are what reduce it.
                reason = _exit_reason(price / position.average_price, flatten.is_set(),
                                      reducing=state.reducing)
                if reason is None:
                    continue
                closing.add(position.position_id)
                close = {"account": account, "type": "PositionClosed",
                         "occurred_at": stamp(now()),
                         "data": {"close_id": f"close-{position.position_id}",
                                  "position_id": position.position_id, "price": str(price),
                                  "reason": reason}}
                await producer.send(topics.executions, json.dumps(close).encode(),
                                    key=account.encode())
                Tally.bump(tally.closes, account)
            closing &= set(state.positions)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


def _exit_reason(ratio: Decimal, flatten: bool, *, reducing: bool = False) -> str | None:
    if ratio >= TAKE_PROFIT:
        return "take_profit"
    if ratio <= STOP_LOSS:
        return "stop_loss"
    if reducing:
        return "reducing"
    return "end_of_morning" if flatten else None

