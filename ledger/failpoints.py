"""Named failpoints: crash this process (SIGKILL) at a chosen instant, for the fault campaign.

`LEDGER_FAILPOINTS="relay.after_send=0.05,ingest.after_commit=0.1"` arms each named point with
the probability of killing the process each time it is reached; `LEDGER_FAILPOINT_SEED` makes the
draws repeatable. Unset (production), `hit` is a dictionary lookup. The points sit where a crash
is most interesting: between a database commit and the Kafka step that follows it, and back.
"""

from __future__ import annotations

import os
import random
import signal

POINTS = (
    "ingest.after_commit",      # stored, offsets not committed: the batch is read again
    "relay.before_send",        # read from the store, nothing sent
    "relay.after_send",         # sent and acknowledged, not marked published: sent again
    "projector.mid_batch",      # some accounts of a batch committed, offsets not committed
    "dispatcher.after_decide",  # decision committed, signal offset not committed
)


def _armed(text: str) -> dict[str, float]:
    armed: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, probability = item.partition("=")
        if name not in POINTS:
            raise ValueError(f"LEDGER_FAILPOINTS: {name!r} is not one of {', '.join(POINTS)}")
        armed[name] = float(probability or "1")
    return armed


_ARMED = _armed(os.environ.get("LEDGER_FAILPOINTS", ""))
_RANDOM = random.Random(os.environ.get("LEDGER_FAILPOINT_SEED"))


def hit(name: str) -> None:
    """Crash here, without cleanup, if this point is armed and its draw says so."""
    probability = _ARMED.get(name)
    if probability is not None and _RANDOM.random() < probability:
        os.kill(os.getpid(), signal.SIGKILL)
