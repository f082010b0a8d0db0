"""Write examples/incident.jsonl: a recorded morning in which a dispatcher without these gates
over-traded, modelled on the real incident.

Account `incident`, limits 5 positions and $10,000. Its dispatcher counted positions without
filtering by account and read "Positions 0/5, Exposure $0" every time, so in 13 minutes it opened
twelve put positions (MSFT, CRM, META, AVGO, AMD, AAPL, QCOM twice, GOOGL, NVDA, ORCL, INTC;
$1,640 to $17,100 each); the position manager later closed six of them on stop-loss or
take-profit. The decisions are recorded as the faulty dispatcher made them, with the figures it
saw, so the audit shows both what happened and what the gates believed.

    .venv/bin/python examples/make_incident.py > examples/incident.jsonl
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

ACCOUNT = "incident"
START = datetime(2026, 2, 3, 17, 29, 4, tzinfo=UTC)

# symbol, contracts, premium: notional = contracts x premium x 100, from $1,640 to $17,100.
TRADES = [
    ("MSFT 260220P00400000", "12", "6.00"),   # $7,200
    ("CRM 260220P00300000", "4", "4.10"),     # $1,640
    ("META 260220P00650000", "6", "28.50"),   # $17,100
    ("AVGO 260220P00330000", "5", "15.20"),   # $7,600
    ("AMD 260220P00150000", "10", "5.47"),    # $5,470
    ("AAPL 260220P00225000", "8", "7.35"),    # $5,880
    ("QCOM 260220P00160000", "7", "4.80"),    # $3,360
    ("GOOGL 260220P00190000", "9", "8.90"),   # $8,010
    ("QCOM 260220P00155000", "6", "3.95"),    # $2,370
    ("NVDA 260220P00130000", "15", "9.80"),   # $14,700
    ("ORCL 260220P00250000", "11", "12.40"),  # $13,640
    ("INTC 260220P00030000", "40", "3.10"),   # $12,400
]
# The position manager's closes: (index of the trade, minutes after the open, price, reason).
CLOSES = [
    (1, 16, "3.05", "stop_loss"),
    (4, 18, "7.10", "take_profit"),
    (6, 19, "3.60", "stop_loss"),
    (8, 21, "5.20", "take_profit"),
    (2, 24, "21.40", "stop_loss"),
    (11, 26, "4.05", "take_profit"),
]


def _time(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _event(event_type: str, at: datetime, data: dict[str, Any],
           event_id: str | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {"account": ACCOUNT, "type": event_type,
                                "occurred_at": _time(at), "data": data}
    if event_id is not None:
        document["event_id"] = event_id
    return document


def events() -> list[dict[str, Any]]:
    history = [_event("LimitsSet", START - timedelta(hours=8),
                      {"max_open_positions": 5, "max_exposure": "10000.00"},
                      event_id="5d1f2a3b-0000-4000-8000-000000000001")]
    for index, (symbol, quantity, price) in enumerate(TRADES):
        at = START + timedelta(seconds=index * 70)
        signal_id = f"SIG-{index + 1:02d}"
        intent_id = f"INT-{index + 1:02d}"
        position_id = f"P-{index + 1:02d}"
        signal = {"signal_id": signal_id, "account": ACCOUNT, "occurred_at": _time(at),
                  "symbol": symbol, "instrument": "option", "side": "long",
                  "quantity": quantity, "limit_price": price, "multiplier": "100"}
        notional = Decimal(quantity) * Decimal(price) * 100
        # What the faulty gates saw: no positions, no exposure, every time.
        gates = [
            {"gate": "max_open_positions", "passed": True, "value": "1", "limit": "5",
             "reason": "Positions 0/5"},
            {"gate": "max_exposure", "passed": True, "value": str(notional),
             "limit": "10000.00", "reason": f"Exposure $0 + ${notional:,.2f}"},
        ]
        history.append(_event("SignalEvaluated", at, {
            "signal_id": signal_id, "signal": signal, "allowed": True, "gates": gates,
            "as_of_sequence": 0}))
        history.append(_event("IntentIssued", at, {
            "intent_id": intent_id, "signal_id": signal_id, "position_id": position_id,
            "symbol": symbol, "instrument": "option", "side": "long", "quantity": quantity,
            "limit_price": price, "multiplier": "100",
            "expires_at": _time(at + timedelta(seconds=60))}))
        history.append(_event("OrderFilled", at + timedelta(seconds=4), {
            "fill_id": f"X-{1001 + index}", "position_id": position_id, "symbol": symbol,
            "instrument": "option", "side": "long", "quantity": quantity, "price": price,
            "multiplier": "100", "intent_id": intent_id}))
    for index, minutes, price, reason in CLOSES:
        at = START + timedelta(seconds=index * 70, minutes=minutes)
        history.append(_event("PositionClosed", at, {
            "close_id": f"XC-{index + 1:02d}", "position_id": f"P-{index + 1:02d}",
            "price": price, "reason": reason}))
    return sorted(history, key=lambda e: e["occurred_at"])


if __name__ == "__main__":
    for document in events():
        sys.stdout.write(json.dumps(document) + "\n")
