"""The limit rules: the one table the gates evaluate before a decision and the audit replays after
each event (docs/design.md, invariant 2).

A rule names its limit in the account's `Limits`, whether its figure counts things or is money,
and two comparisons that must not drift apart: `blocks`, asked by the gates of the figure a
decision would lead to, and `breached`, asked by the audit of the figure that came to be. They
differ only for the daily loss: trading stops once the day's loss has reached the limit, and the
audit reports a breach once it went beyond it. Pure: no clock, no I/O.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal, TypeAlias

from projections.fold import Limits

_ZERO = Decimal(0)

LimitGate: TypeAlias = Literal[
    "max_order_notional", "max_open_positions", "max_exposure", "max_underlying_exposure",
    "max_order_rate", "duplicate_order", "daily_loss_limit"]
# Figures are Decimal, or int where they count (open positions in the audit).
Compare: TypeAlias = Callable[[Decimal | int, Decimal | int], bool]


@dataclass(frozen=True, slots=True)
class LimitRule:
    """One limit: where it is set, what it measures and when it is exceeded."""

    gate: LimitGate
    # "count": positions and orders, shown as integers; "money": dollars, shown in cents.
    unit: Literal["count", "money"]
    # The limit in force (None: not set, so never exceeded).
    limit_of: Callable[[Limits], Decimal | None]
    # The gates block a decision whose resulting figure `blocks(figure, limit)`.
    blocks: Compare
    # The audit opens a breach when a figure that happened is `breached(figure, limit)`.
    breached: Compare

    def limit(self, limits: Limits) -> Decimal | None:
        return self.limit_of(limits)


RULES: Final[dict[LimitGate, LimitRule]] = {
    "max_order_notional": LimitRule(
        "max_order_notional", "money", lambda limits: limits.max_order_notional,
        blocks=operator.gt, breached=operator.gt),
    "max_open_positions": LimitRule(
        "max_open_positions", "count", lambda limits: Decimal(limits.max_open_positions),
        blocks=operator.gt, breached=operator.gt),
    "max_exposure": LimitRule(
        "max_exposure", "money", lambda limits: limits.max_exposure,
        blocks=operator.gt, breached=operator.gt),
    "max_underlying_exposure": LimitRule(
        "max_underlying_exposure", "money", lambda limits: limits.max_underlying_exposure,
        blocks=operator.gt, breached=operator.gt),
    # Intents issued in the 60 s before a decision, counting the one it would issue.
    "max_order_rate": LimitRule(
        "max_order_rate", "count",
        lambda limits: None if limits.max_orders_per_minute is None
        else Decimal(limits.max_orders_per_minute),
        blocks=operator.gt, breached=operator.gt),
    # Its figure is how many identical intents the window holds; no duplicate is allowed.
    "duplicate_order": LimitRule(
        "duplicate_order", "count",
        lambda limits: None if limits.duplicate_window_s is None else _ZERO,
        blocks=operator.gt, breached=operator.gt),
    "daily_loss_limit": LimitRule(
        "daily_loss_limit", "money", lambda limits: limits.daily_loss_limit,
        blocks=operator.ge, breached=operator.gt),
}
# Figures that count things rather than money (the audit's orders-while-halted counts too).
COUNT_GATES: Final[frozenset[str]] = frozenset(
    {gate for gate, rule in RULES.items() if rule.unit == "count"} | {"trading_halted"})
