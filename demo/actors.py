"""The simulated world around the ledger in the demo: a market, strategies, a broker, a position
manager. They talk to the ledger only the way real ones would: through Kafka topics (and the
ledger's follow API).

- Market: a seeded random walk of option premiums.
- Strategies: bursts of signals per account on `signals`, far more than the limits allow.
- Broker: reads `order-intents`; after a short random delay fills at the limit price or better
  (a limit order never fills beyond its limit), or rejects; reports on `executions`. It keeps its
  own book of each account's open positions from the fills it reports and the closes reported
  through it (its own truth: it never reads the ledger's positions), and every few seconds
  publishes each account's positions on `broker-positions`, which ingest reconciles with the
  ledger.
- Position manager: follows each account's events (the ledger's follow API), and closes positions
  on stop-loss / take-profit (and everything at the end of the morning, or while the account is
  reducing) on `executions`, through the broker's book.
- The glitch (`Glitch`, scripted once by the morning): the broker reports one fill twice under
  two fill ids. Its book counts the fill once, as a real broker's would; the ledger books both;
  the broker's next positions differ from the ledger's, which fails the reconciliation and moves
  the account to reducing until an operator resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Any

from aiokafka import AIOKafkaProducer

from ledger import kafka
from ledger.clock import utc_now
from ledger.events import (
    Difference,
    Event,
    IntentIssued,
    PositionsReconciled,
    ReconciliationFailed,
    decode_event,
    underlying,
)
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
# How often the broker publishes each account's positions.
STATEMENT_EVERY_S = 3.0
# How long the broker holds an account's executions back while the ledger judges its positions
# (see `Book`); beyond it they flow again, and a difference they cause fails closed. Short next
# to the intents' time to live (10 s in the demo): a fill held longer would be a late fill.
JUDGED_WAIT_S = 5.0
# The glitch waits this long with no intent of its account in flight (see `glitch`).
QUIET_S = 3.0

Report = dict[str, Any]

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
                     stop: asyncio.Event, tally: Tally, quiet: Collection[str] = ()) -> None:
    """Send bursts of signals: each account's burst is several orders at once. The accounts in
    `quiet` send nothing for the moment (the glitch waits for a quiet account)."""
    while not stop.is_set():
        for account, contracts_max in accounts.items():
            if account in quiet:
                continue
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


@dataclass(frozen=True, kw_only=True)
class Held:
    """One open position in the broker's book, and the fill that opened it, as reported."""

    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    multiplier: Decimal
    fill: Report

    @property
    def notional(self) -> Decimal:
        return self.quantity * self.price * self.multiplier


class Book:
    """The broker's own book: each account's open positions, from the executions reported
    through it (the broker's fills, the position manager's closes). Never read from the ledger.

    Every execution is sent under its account's lock and booked once Kafka acknowledged it; the
    positions are published under the same lock, so a statement includes exactly the executions
    already on `executions`, which ingest records before it compares. The ledger compares with
    its head, not with the executions up to the statement's `as_of`: an execution reported while
    a statement waits to be judged would show as a difference that is nobody's fault. So the lock
    is held until the ledger has judged the statement (the broker follows the account's outcomes
    through the follow API, at most `JUDGED_WAIT_S`); the account's executions wait meanwhile.
    """

    def __init__(self, topics: Topics, producer: AIOKafkaProducer,
                 accounts: Collection[str]) -> None:
        self.topics = topics
        self.producer = producer
        self.accounts = list(accounts)
        self.held: dict[str, dict[str, Held]] = {account: {} for account in accounts}
        # Every fill reported, in order.
        self.fills: dict[str, list[Report]] = {account: [] for account in accounts}
        self.locks = {account: asyncio.Lock() for account in accounts}
        # The intents received and not answered yet, and when the last one arrived (loop time).
        self.working: dict[str, set[str]] = {account: set() for account in accounts}
        self.last_intent_at: dict[str, float] = dict.fromkeys(accounts, 0.0)
        # The ledger's outcome per statement `as_of`: the differences (none: a match).
        self.outcomes: dict[str, dict[datetime, tuple[Difference, ...]]] = {
            account: {} for account in accounts}
        self._judged = asyncio.Condition()

    async def report(self, account: str, report: Report) -> None:
        """Report one execution (stamped now), acknowledged, then book it."""
        async with self.locks[account]:
            await self.report_locked(account, report)

    async def report_locked(self, account: str, report: Report, *, book: bool = True) -> None:
        """Report one execution, the account's lock held; book it unless told not to."""
        report["occurred_at"] = stamp(now())
        await self._send(self.topics.executions, account, report)
        if book:
            self._book(account, report)

    async def publish_locked(self, account: str) -> tuple[Difference, ...] | None:
        """Publish the account's positions, the lock held, and wait until the ledger judged
        them; return its differences (none: a match), or None if not judged in time."""
        as_of = now()
        lines: dict[tuple[str, str], Decimal] = {}
        for held in self.held[account].values():
            lines[(held.symbol, held.side)] = lines.get((held.symbol, held.side),
                                                        Decimal(0)) + held.quantity
        statement = {"account": account, "as_of": stamp(as_of),
                     "positions": [{"symbol": symbol, "side": side, "quantity": str(quantity)}
                                   for (symbol, side), quantity in sorted(lines.items())]}
        await self._send(self.topics.broker_positions, account, statement)
        async with self._judged:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._judged.wait_for(lambda: as_of in self.outcomes[account]),
                    JUDGED_WAIT_S)
        return self.outcomes[account].get(as_of)

    def reconciled(self, account: str) -> bool:
        """Whether the ledger has matched one of the account's statements."""
        return any(not differences for differences in self.outcomes[account].values())

    def holding(self, account: str, symbol: str, side: str) -> Decimal:
        """Return what the book holds of one symbol and side."""
        return sum((h.quantity for h in self.held[account].values()
                    if (h.symbol, h.side) == (symbol, side)), Decimal(0))

    async def watch(self, settings: Settings, account: str, stop: asyncio.Event) -> None:
        """Follow the account's reconciliation outcomes (the ledger's answer to statements)."""
        async for event in follow(settings, account, 1, stop=stop):
            data = event.data
            if isinstance(data, PositionsReconciled | ReconciliationFailed):
                async with self._judged:
                    self.outcomes[account][data.as_of] = (
                        data.differences if isinstance(data, ReconciliationFailed) else ())
                    self._judged.notify_all()

    async def _send(self, topic: str, account: str, body: Report) -> None:
        acknowledged = await self.producer.send(topic, json.dumps(body).encode(),
                                                key=account.encode())
        await acknowledged

    def _book(self, account: str, report: Report) -> None:
        data, book = report["data"], self.held[account]
        if report["type"] == "OrderFilled":
            self.fills[account].append(report)
            position_id, quantity = data["position_id"], Decimal(data["quantity"])
            before = book.get(position_id)
            book[position_id] = Held(
                symbol=data["symbol"], side=data["side"], price=Decimal(data["price"]),
                multiplier=Decimal(data["multiplier"]), fill=report,
                quantity=quantity if before is None else before.quantity + quantity)
        elif report["type"] == "PositionClosed":
            book.pop(data["position_id"], None)


async def statements(settings: Settings, book: Book, stop: asyncio.Event) -> None:
    """Publish each account's positions every `STATEMENT_EVERY_S`, each judged before its
    account's executions flow again."""
    watchers = [asyncio.create_task(book.watch(settings, account, stop))
                for account in book.accounts]

    async def publish(account: str) -> None:
        while not stop.is_set():
            async with book.locks[account]:
                await book.publish_locked(account)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATEMENT_EVERY_S)

    try:
        await asyncio.gather(*(publish(account) for account in book.accounts))
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)


async def broker(settings: Settings, topics: Topics, book: Book, market: Market,
                 rng: random.Random, stop: asyncio.Event, tally: Tally) -> None:
    """Fill or reject every intent after a short random delay."""
    consumer = kafka.consumer(settings, topics.order_intents,
                              group_id=f"demo-broker-{uuid.uuid4().hex[:8]}",
                              client_id="demo-broker")
    await consumer.start()
    pending: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    try:
        while not stop.is_set():
            polled = await consumer.getmany(timeout_ms=300)
            for message in (m for batch in polled.values() for m in batch):
                intent = decode_event(message.value)
                # Cancels (on a halt) change nothing here: every intent is answered quickly.
                if not isinstance(intent.data, IntentIssued) or intent.account not in book.held:
                    continue
                book.working[intent.account].add(intent.data.intent_id)
                book.last_intent_at[intent.account] = loop.time()
                task = asyncio.create_task(_execute(book, market, rng, intent, tally))
                pending.add(task)
                task.add_done_callback(pending.discard)
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        await consumer.stop()


async def _execute(book: Book, market: Market, rng: random.Random, intent: Event,
                   tally: Tally) -> None:
    data = intent.data
    assert isinstance(data, IntentIssued), intent.type
    await asyncio.sleep(rng.uniform(0.2, 2.5))
    account = intent.account
    report: Report
    if rng.random() < REJECT_PROBABILITY:
        report = {"account": account, "type": "IntentRejected",
                  "data": {"intent_id": data.intent_id,
                           "reason": "broker: no liquidity at the limit"}}
        Tally.bump(tally.rejects, account)
    else:
        # At the limit or up to 2 % better: a buy never pays more than its limit.
        better = Decimal(str(round(rng.uniform(0, 0.02), 4)))
        price = max(CENT, (data.limit_price * (1 - better)).quantize(CENT, ROUND_DOWN))
        if data.side == "short":
            price = (data.limit_price * (1 + better)).quantize(CENT, ROUND_DOWN)
        report = {"account": account, "type": "OrderFilled",
                  "data": {"fill_id": f"X-{uuid.uuid4().hex[:12]}",
                           "position_id": data.position_id, "symbol": data.symbol,
                           "instrument": data.instrument, "side": data.side,
                           "quantity": str(data.quantity), "price": str(price),
                           "multiplier": str(data.multiplier), "intent_id": data.intent_id}}
        Tally.bump(tally.fills, account)
    try:
        await book.report(account, report)
    finally:
        book.working[account].discard(data.intent_id)


@dataclass(frozen=True, kw_only=True)
class Doubled:
    """The fill the broker reported twice, and what came of it."""

    fill: Report
    again_id: str
    # What the broker's book holds of the fill's symbol and side, and what the ledger does.
    broker: Decimal
    ledger: Decimal
    # The ledger's outcome of the positions published right after (None: not judged in time).
    differences: tuple[Difference, ...] | None


@dataclass(kw_only=True)
class Glitch:
    """The scripted glitch: once `start` is set, the broker reports one of `account`'s fills
    again under another fill id (as a broker's drop copy may after a reconnect), then publishes
    its positions at once.

    Its book counts the fill once; the ledger books both, so the positions differ: the ledger
    records ReconciliationFailed and moves the account to reducing. The glitch is placed where it
    cannot push the account over a limit by itself (the audit judges the ledger's figures): at a
    quiet moment (the account's strategy holds its signals, no intent in flight for `QUIET_S`, so
    nothing is pending), on the newest fill whose repetition keeps the broker's own figures
    within `max_exposure`, `max_underlying_exposure` and `max_open_positions`: an open position's
    fill if one fits (the ledger then holds it twice), else an earlier fill of a closed position
    (the ledger then holds it again).
    """

    account: str
    max_open_positions: int
    max_exposure: Decimal
    max_underlying_exposure: Decimal
    start: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # The accounts whose strategy holds its signals for the moment.
    quiet: set[str] = field(default_factory=set)
    # What happened, once done.
    doubled_fill: Doubled | None = None

    def target(self, book: Book) -> Report | None:
        """Return the newest fill the broker may report again within the limits, if any."""
        open_now = book.held[self.account]
        exposure = sum((h.notional for h in open_now.values()), Decimal(0))
        on: dict[str, Decimal] = {}
        for h in open_now.values():
            on[underlying(h.symbol)] = on.get(underlying(h.symbol), Decimal(0)) + h.notional
        closed = [f for f in book.fills[self.account] if f["data"]["position_id"] not in open_now]
        for fill in [h.fill for h in reversed(open_now.values())] + closed[::-1]:
            data = fill["data"]
            notional = (Decimal(data["quantity"]) * Decimal(data["price"])
                        * Decimal(data["multiplier"]))
            positions = len(open_now) + (data["position_id"] not in open_now)
            if (exposure + notional <= self.max_exposure
                    and on.get(underlying(data["symbol"]), Decimal(0)) + notional
                    <= self.max_underlying_exposure
                    and positions <= self.max_open_positions):
                return fill
        return None


async def glitch(book: Book, scripted: Glitch, stop: asyncio.Event) -> None:
    """Play the scripted glitch once its `start` is set."""
    await _first(scripted.start, stop)
    account, loop = scripted.account, asyncio.get_running_loop()
    while not stop.is_set():
        if scripted.target(book) is None:
            await asyncio.sleep(0.25)
            continue
        scripted.quiet.add(account)
        quiet_from = loop.time()
        while not stop.is_set():
            if not book.working[account] and (
                    loop.time() - max(quiet_from, book.last_intent_at[account]) >= QUIET_S):
                break
            await asyncio.sleep(0.1)
        async with book.locks[account]:
            fill = scripted.target(book)
            if fill is not None and not stop.is_set():
                data = fill["data"]
                again = {**fill, "data": {**data, "fill_id": f"X-{uuid.uuid4().hex[:12]}"}}
                # Reported again, not booked again: the broker's book counts one fill.
                await book.report_locked(account, again, book=False)
                held = book.holding(account, data["symbol"], data["side"])
                differences = await book.publish_locked(account)
                scripted.doubled_fill = Doubled(
                    fill=fill, again_id=again["data"]["fill_id"], broker=held,
                    ledger=held + Decimal(data["quantity"]), differences=differences)
                scripted.quiet.discard(account)
                scripted.done.set()
                return
        scripted.quiet.discard(account)


async def _first(event: asyncio.Event, stop: asyncio.Event) -> None:
    """Wait until either event is set."""
    waits = [asyncio.create_task(event.wait()), asyncio.create_task(stop.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def position_manager(settings: Settings, book: Book, market: Market, account: str,
                           stop: asyncio.Event, flatten: asyncio.Event, tally: Tally) -> None:
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
                         # One close per holding: a position id the broker reported again
                         # after its close is a holding of its own, closed under its own id.
                         "data": {"close_id": f"close-{position.position_id}-"
                                              f"{position.opened_at:%H%M%S%f}",
                                  "position_id": position.position_id, "price": str(price),
                                  "reason": reason}}
                await book.report(account, close)
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
