"""Run `ledger` with a planted bug: `python -m tests.faults.bugged BUG ledger-args...`.

Each bug is a small, plausible mistake of the kind the campaign exists to catch; the planted-bug
tests run a schedule with one of them and expect the checker to fail on the invariant it breaks.
The bugs live here, in the tests, as monkeypatches: the product carries no switch for them.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ledger.events import Event, PositionClosedEvent


def lost_write() -> None:
    """Ingest acknowledges (commits the offset of) every third valid execution, unstored."""
    from services import ingest

    original = ingest.apply_batch
    seen = [0]

    async def apply_batch(append: Any, batch: ingest.Sorted, counters: Any) -> Any:
        for account, items in batch.by_account.items():
            kept = []
            for item in items:
                seen[0] += 1
                if seen[0] % 3:
                    kept.append(item)
            batch.by_account[account] = kept
        batch.by_account = {a: items for a, items in batch.by_account.items() if items}
        return await original(append, batch, counters)

    vars(ingest)["apply_batch"] = apply_batch


def relay_skips() -> None:
    """The relay marks a page published but leaves out every fifth event of it."""
    import aiokafka

    original_send = aiokafka.AIOKafkaProducer.send
    count = [0]

    async def send(self: Any, topic: str, *args: Any, **kwargs: Any) -> Any:
        if topic.endswith("ledger-events"):
            count[0] += 1
            if count[0] % 5 == 0:
                return _done()
        return await original_send(self, topic, *args, **kwargs)

    aiokafka.AIOKafkaProducer.send = send


def _done() -> Any:
    import asyncio

    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


def projector_drops_closes() -> None:
    """The projector's fold ignores closes (a fold of its own, which the rebuild does not share)."""
    from projections import projector

    original: Callable[..., Any] = vars(projector)["fold"]

    def fold(events: Sequence[Event], state: Any) -> Any:
        kept = [_closing_nothing(e) if isinstance(e, PositionClosedEvent) else e
                for e in events]
        return original(kept, state)

    vars(projector)["fold"] = fold


def _closing_nothing(event: PositionClosedEvent) -> Event:
    # Keep the sequence moving: the bug is in what the event does, not in the bookkeeping.
    data = event.data.model_copy(update={"position_id": "no-such-position"})
    return event.model_copy(update={"data": data})


def skip_lock() -> None:
    """The dispatcher of the incident: no head lock, and it trusts its projection as current.

    It reads the projection's rows, evaluates the gates on them as if they were the head, and
    appends the decision without expecting any sequence. Quiet: nothing fails, it only decides
    on a view that may be behind, and two deciders interleave.
    """
    from console import commands
    from dispatcher import decide, gates, process
    from ledger import store
    from projections import tables

    async def unlocked(conn: Any, config: Any, signal: Any, now: Any,
                       cache: Any = None) -> Any:
        async with conn.transaction():
            previous = await decide._previous_decision(conn, config.account, signal.signal_id)
            if previous is not None:
                return previous
            state = await tables.load_state(conn, config.account)
            freshness = gates.Freshness(head=state.sequence, state_sequence=state.sequence,
                                        fold_bound=config.fold_bound)
            decision = gates.evaluate(state, signal, now, freshness)
            events = decide._decision_events(config, signal, decision, state.sequence, now)
            await store.append(conn, config.account, events)
        return decide.Outcome(
            signal_id=signal.signal_id, allowed=decision.allowed, code=decision.code,
            reason=decision.reason, as_of_sequence=state.sequence,
            intent_id=decide.intent_id_for(config.account, signal.signal_id)
            if decision.allowed else None)

    async def unlocked_many(conn: Any, config: Any, signals: Any, now: Any,
                            cache: Any = None) -> Any:
        return [await unlocked(conn, config, signal, now) for signal in signals]

    vars(process)["decide"] = unlocked
    vars(process)["decide_many"] = unlocked_many
    vars(commands)["decide"] = unlocked


def ignores_pending() -> None:
    """The dispatcher's gates count open positions only, not the intents still in flight."""
    from dispatcher import gates

    original = gates.evaluate

    def evaluate(state: Any, signal: Any, now: Any, freshness: Any, **policy: Any) -> Any:
        return original(dataclasses.replace(state, pending={}), signal, now, freshness,
                        **policy)

    vars(gates)["evaluate"] = evaluate


def ignores_rate_limit() -> None:
    """The dispatcher's gates never block on max_order_rate: the rule it reads says never."""
    from dispatcher import gates
    from projections.rules import RULES

    rules = dict(RULES)
    rules["max_order_rate"] = dataclasses.replace(RULES["max_order_rate"],
                                                  blocks=lambda figure, limit: False)
    vars(gates)["RULES"] = rules


def swallows_malformed() -> None:
    """Ingest drops what it cannot decode instead of sending it to the dead letters."""
    from services import ingest

    original = ingest.sort_batch

    def sort_batch(messages: Any, **options: Any) -> Any:
        result = original(messages, **options)
        result.dead = []
        return result

    vars(ingest)["sort_batch"] = sort_batch


def relay_sends_dead_orders() -> None:
    """The relay routes every intent it publishes, dead or alive (the review's finding)."""
    from services import relay

    original = relay._live_intents

    async def all_live(conn: Any, intents: Any) -> Any:
        checked = await original(conn, intents)
        return {account: dataclasses.replace(liveness, live={
                    int(row["sequence"]): "unchecked" for row in intents[account]})
                for account, liveness in checked.items()}

    vars(relay)["_live_intents"] = all_live


def reconciles_blind() -> None:
    """Ingest compares the broker's positions per symbol alone, blind to the side: both sides
    of a symbol are summed into one line (reported as long), so a side flipped at the broker
    passes, and a difference on a short line is recorded as one on the long side."""
    from decimal import Decimal

    from ledger.events import Difference
    from services import reconcile

    def per_symbol(lines: Any) -> dict[str, Decimal]:
        held: dict[str, Decimal] = {}
        for symbol, quantity in lines:
            held[symbol] = held.get(symbol, Decimal(0)) + quantity
        return held

    def compare(positions: Any, view: Any) -> list[Difference]:
        ours = per_symbol((p.symbol, p.quantity) for p in positions.values())
        theirs = per_symbol((line.symbol, line.quantity) for line in view.positions)
        zero = Decimal(0)
        return [Difference(symbol=symbol, side="long", broker=theirs.get(symbol, zero),
                           ledger=ours.get(symbol, zero))
                for symbol in sorted(ours.keys() | theirs.keys())
                if ours.get(symbol, zero) != theirs.get(symbol, zero)]

    vars(reconcile)["compare"] = compare


def _note(path: str, line: str) -> None:
    with open(path, "a") as log:
        log.write(line + "\n")


def self_promoting() -> None:
    """A dispatcher that, after each decision, resumes its own account and raises its limits.

    What the incident's dispatcher would have done given the chance. Its own role may not
    append either event: each refusal is written to LEDGER_BUG_LOG, so the test can tell a bug
    that was refused from one that never ran.
    """
    import os
    from datetime import UTC, datetime
    from decimal import Decimal

    from dispatcher import process
    from ledger import store
    from ledger.errors import AppendRefused
    from ledger.events import LimitsSet, TradingResumed, build_event

    original = vars(process)["decide"]

    async def decide(conn: Any, config: Any, signal: Any, now: Any, cache: Any = None) -> Any:
        outcome = await original(conn, config, signal, now, cache)
        for data in (TradingResumed(reason="self-service"),
                     LimitsSet(max_open_positions=1000, max_exposure=Decimal("99999999"))):
            event = build_event(config.account, datetime.now(UTC), data)
            try:
                async with conn.transaction():
                    await store.append(conn, config.account, [event])
            except AppendRefused as exc:
                _note(os.environ["LEDGER_BUG_LOG"], str(exc))
        return outcome

    vars(process)["decide"] = decide


BUGS: dict[str, Callable[[], None]] = {
    "lost-write": lost_write,
    "relay-skips": relay_skips,
    "projector-drops-closes": projector_drops_closes,
    "skip-lock": skip_lock,
    "ignores-pending": ignores_pending,
    "ignores-rate-limit": ignores_rate_limit,
    "swallows-malformed": swallows_malformed,
    "self-promoting": self_promoting,
    "relay-sends-dead-orders": relay_sends_dead_orders,
    "reconciles-blind": reconciles_blind,
}


def main() -> None:
    bug, *args = sys.argv[1:]
    BUGS[bug]()
    from console import cli

    sys.argv = ["ledger", *args]
    cli.main()


if __name__ == "__main__":
    main()
