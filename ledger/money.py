"""Money as people and documents read it: one rounding, one format (docs/design.md).

Money is Decimal everywhere; it is rounded only here, at the edge where a figure is shown: to
cents, half-even (banker's rounding, so a column of rounded figures does not drift one way).
Pure: no clock, no I/O.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from ledger.events import DECIMAL_CONTEXT, format_decimal

MONEY_STEP = Decimal("0.01")
MONEY_ROUNDING = ROUND_HALF_EVEN


def to_cents(amount: Decimal) -> Decimal:
    """Round an amount to cents, half-even."""
    return amount.quantize(MONEY_STEP, rounding=MONEY_ROUNDING, context=DECIMAL_CONTEXT)


def money_json(amount: Decimal) -> str:
    """An amount as a JSON document states it: a string of cents, "1234.50", "-5.00"."""
    return format_decimal(to_cents(amount))


def money_text(amount: Decimal) -> str:
    """An amount as a person reads it: "$1,234.50", "-$5.00"."""
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(to_cents(amount)):,}"
