"""The ledger's open positions against the broker's: the differences, per (symbol, side).

The broker's view (`BrokerPositions`) is what the account holds at the broker at its `as_of`;
the ledger's is the fold at its head. Both are summed per (symbol, side), since either may hold
one symbol in several positions or lines; a (symbol, side) where the two quantities differ is a
`Difference`, with "0" for the side that holds none. An empty list is a match. Ingest records a
match as `PositionsReconciled` and a mismatch as `ReconciliationFailed` (services/reconcile.py);
this module only compares. Pure: no I/O, no clock.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping

from ledger.events import DECIMAL_CONTEXT, BrokerPositions, Difference, Side
from projections.fold import Position

_ZERO = decimal.Decimal(0)
Holdings = dict[tuple[str, Side], decimal.Decimal]


def ledger_holdings(positions: Mapping[str, Position]) -> Holdings:
    """Return the ledger's open quantity per (symbol, side)."""
    return _summed((p.symbol, p.side, p.quantity) for p in positions.values())


def broker_holdings(view: BrokerPositions) -> Holdings:
    """Return the broker's open quantity per (symbol, side); lines of zero hold nothing."""
    return _summed((line.symbol, line.side, line.quantity) for line in view.positions)


def compare(positions: Mapping[str, Position], view: BrokerPositions) -> list[Difference]:
    """Return every (symbol, side) where the broker and the ledger hold different quantities,
    sorted by symbol then side; an empty list when they agree."""
    ours, theirs = ledger_holdings(positions), broker_holdings(view)
    return [
        Difference(symbol=symbol, side=side, broker=_plain(theirs.get((symbol, side), _ZERO)),
                   ledger=_plain(ours.get((symbol, side), _ZERO)))
        for symbol, side in sorted(ours.keys() | theirs.keys())
        if ours.get((symbol, side), _ZERO) != theirs.get((symbol, side), _ZERO)
    ]


def _summed(lines: Iterable[tuple[str, Side, decimal.Decimal]]) -> Holdings:
    held: Holdings = {}
    with decimal.localcontext(DECIMAL_CONTEXT):
        for symbol, side, quantity in lines:
            if quantity:
                held[(symbol, side)] = held.get((symbol, side), _ZERO) + quantity
    return held


def _plain(quantity: decimal.Decimal) -> decimal.Decimal:
    """Return a quantity as a person writes it: "12", not "12.000" nor "1.2E+1"."""
    if quantity == 0:
        return _ZERO
    normal = quantity.normalize(DECIMAL_CONTEXT)
    exponent = normal.as_tuple().exponent
    assert isinstance(exponent, int), quantity
    return normal.quantize(decimal.Decimal(1)) if exponent > 0 else normal
