"""Event and signal factories for tests: every event is built through the public JSON contract."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ledger.events import Event, decode_event

MORNING = "2026-02-03T17:29:04Z"


def event_json(account: str, event_type: str, data: dict[str, Any], *,
               occurred_at: str = MORNING, event_id: str | None = None) -> str:
    document: dict[str, Any] = {"account": account, "type": event_type,
                                "occurred_at": occurred_at, "data": data}
    if event_id is not None:
        document["event_id"] = event_id
    return json.dumps(document)


def fill(account: str, fill_id: str, *, position_id: str = "P-1", quantity: str = "1",
         price: str = "6.00", multiplier: str = "100", symbol: str = "MSFT 260220P00400000",
         occurred_at: str = MORNING, intent_id: str | None = None) -> Event:
    data: dict[str, Any] = {"fill_id": fill_id, "position_id": position_id, "symbol": symbol,
                            "instrument": "option", "side": "long", "quantity": quantity,
                            "price": price, "multiplier": multiplier}
    if intent_id is not None:
        data["intent_id"] = intent_id
    return decode_event(event_json(account, "OrderFilled", data, occurred_at=occurred_at))


def limits(account: str, max_positions: int = 5, max_exposure: str = "10000", *,
           occurred_at: str = MORNING, event_id: str | None = None) -> Event:
    data = {"max_open_positions": max_positions, "max_exposure": max_exposure}
    return decode_event(event_json(account, "LimitsSet", data, occurred_at=occurred_at,
                                   event_id=event_id))


def close(account: str, position_id: str, price: str = "7.00", *,
          occurred_at: str = MORNING, close_id: str | None = None,
          quantity: str | None = None) -> Event:
    """A close as the broker reports it: its execution id defaults to one per position and time."""
    data: dict[str, Any] = {"close_id": close_id or f"C-{position_id}-{occurred_at}",
                            "position_id": position_id, "price": price, "reason": "take_profit"}
    if quantity is not None:
        data["quantity"] = quantity
    return decode_event(event_json(account, "PositionClosed", data, occurred_at=occurred_at))


def signal_evaluated_data(account: str, index: int, at: datetime, *,
                          allowed: bool) -> dict[str, Any]:
    """The data of a SignalEvaluated for signal S-index: a fold changes nothing but sequence."""
    signal = {
        "signal_id": f"S-{index}", "account": account,
        "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "symbol": "SYM-P-0",
        "instrument": "option", "side": "long", "quantity": "1", "limit_price": "1.00",
        "multiplier": "100",
    }
    return {"signal_id": f"S-{index}", "signal": signal, "allowed": allowed, "gates": [],
            "as_of_sequence": index}
