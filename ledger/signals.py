"""A message on `signals`: its key names the account, its value is the signal.

The one check of such a message, used by the dispatcher of its account (which decides what
passes) and by the signal watch (which dead-letters what does not, so that a bad signal is
explained once, whether its account's dispatcher runs or not). Pure: no I/O, no clock (`now` is
given).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ledger.errors import InvalidEvent
from ledger.events import Signal, decode_signal, refuse_future


def key_account(key: bytes | None) -> str | None:
    """Return the account a message's key names (None for no key)."""
    return key.decode("utf-8", "replace") if key is not None else None


def read_signal(key: bytes | None, value: bytes | None, now: datetime,
                clock_skew: timedelta) -> Signal:
    """Return the signal a message carries.

    Raises:
        InvalidEvent: the value is empty, malformed or invalid, names another account than its
            key, or occurred more than `clock_skew` after `now`.
    """
    if value is None:
        raise InvalidEvent("value", None, "is empty: expected a signal as JSON")
    signal = decode_signal(value)
    account = key_account(key)
    if signal.account != account:
        raise InvalidEvent("account", signal.account, f"does not match the key {account!r}")
    refuse_future(signal.occurred_at, now, clock_skew)
    return signal
