"""What a fault-campaign run observed: the client's history and, once everything settled, the
store, the projection and the topics. The checker judges only this; the harness only produces it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from ledger.events import BrokerPosition, Difference, Event
from projections.fold import AccountState

# ok: the client saw success. failed: the client saw a definite refusal (nothing may be stored).
# unknown: the call was cut off (a crash, a timeout, a lost connection): stored at most once.
Outcome = Literal["ok", "failed", "unknown"]


@dataclass(kw_only=True)
class Operation:
    """One client call, as invoked and as it ended.

    kind:
      "append"    - events appended straight to the store (limits, halts, resumes, closes)
      "execution" - events produced to the `executions` topic for ingest (fills, closes)
      "signal"    - a signal produced to the `signals` topic for a dispatcher
    For "append" and "execution", `event_ids` are the ids of the events sent; for "signal",
    `signal_id` names the signal. Outcome of a Kafka produce: ok when acknowledged, unknown when
    the send raised (the broker may still hold it).
    """

    kind: Literal["append", "execution", "signal"]
    account: str
    event_ids: tuple[uuid.UUID, ...] = ()
    signal_id: str | None = None
    outcome: Outcome = "unknown"
    invoked_at: float = 0.0
    completed_at: float | None = None
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class Record:
    """One Kafka record as read back from a topic after the run."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    # When the producer sent it (Kafka's CreateTime), milliseconds since the epoch.
    timestamp_ms: int = 0

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", errors="replace")
        return None


@dataclass(frozen=True, kw_only=True)
class Hostile:
    """A message the hostile producer wrote straight into a topic, and what must become of it.

    expect "dead-letter": it must appear in `dead-letters` (same value and key) with a reason.
    expect "harmless": a duplicate or replay of a real event; it must change nothing (checks 1-4
    cover that) and need not be dead-lettered.
    """

    topic: str
    key: bytes | None
    value: bytes | None
    expect: Literal["dead-letter", "harmless"]
    kind: str  # "malformed-json", "unknown-account", "future-sequence", "duplicate", ...
    acknowledged: bool = True


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """One broker view the campaign's broker published on `broker-positions`, and what it meant.

    `positions`: the lines as sent. `accounted`: the event ids of the executions (fills and
    closes) the broker's book held when it sent them: every one it had sent and seen
    acknowledged (or found stored), none in flight. `injected`: None for an honest snapshot
    (its lines are the book's); for a mismatch planted on purpose, the differences it must be
    judged to have (broker: the snapshot's, ledger: the book's), and `kind` names the change.
    `acknowledged`: the topic acknowledged the send (else it may or may not have arrived).
    `sent_at`: time.monotonic() when it was sent, the history's clock.
    """

    account: str
    as_of: datetime
    positions: tuple[BrokerPosition, ...]
    accounted: frozenset[uuid.UUID] = frozenset()
    injected: tuple[Difference, ...] | None = None
    kind: str = "honest"
    acknowledged: bool = True
    sent_at: float = 0.0


@dataclass(kw_only=True)
class Observation:
    """Everything the checker looks at, for the accounts of one run."""

    seed: int
    accounts: list[str]
    # Every stored event of those accounts, per account in sequence order (ledger fields set).
    store: dict[str, list[Event]]
    # The projection tables of those accounts, loaded after the projector caught up.
    projection: dict[str, AccountState]
    # `ledger-events` and `dead-letters`, read from the beginning, each partition in offset order.
    ledger_events: list[Record]
    dead_letters: list[Record]
    history: list[Operation]
    hostile: list[Hostile] = field(default_factory=list)
    # Who appended each stored event: account -> sequence -> login role (events.recorded_by).
    writers: dict[str, dict[int, str]] = field(default_factory=dict)
    # `order-intents`, read from the beginning: what the router was asked to do.
    order_intents: list[Record] = field(default_factory=list)
    # What each login role of the run is: role -> ("dispatcher", its account), ("broker", None)
    # or ("operator", None). A role not named here may append nothing.
    role_kinds: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    # What the campaign's broker published on `broker-positions`, in the order it sent them.
    snapshots: list[Snapshot] = field(default_factory=list)
    # How long ingest waits for the executions before it judges a broker view all the same
    # (services/ingest.py RECONCILE_WAIT_S).
    reconcile_wait_s: float = 10.0
