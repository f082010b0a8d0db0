"""Reconcile an account with the broker: compare the broker's positions with the ledger at its
head and record the outcome, once per broker `as_of`.

Under the account's head lock, in the caller's transaction: take the ledger's positions as of the
broker's `as_of` (at the head, unless executions that occurred later are already recorded),
compare (`projections.reconcile.compare`), append `PositionsReconciled` when they agree or
`ReconciliationFailed` with every difference when they do not (the fold then moves the account
to reducing). A broker `as_of` already judged is not judged again: the outcome on record is
returned, so a redelivered snapshot or a rerun of `ledger reconcile` changes nothing. Used by
ingest (topic `broker-positions`) and by `ledger reconcile`. Must not import the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ledger import store
from ledger.events import (
    SNAPSHOT_POSITIONS_MAX,
    BrokerPositions,
    Difference,
    EventType,
    PositionsReconciled,
    ReconciliationFailed,
    build_event,
    decode_event,
    reconciliation_key,
)
from projections.current import state_at_head
from projections.fold import Position
from projections.rebuild import fold_stream
from projections.reconcile import compare

if TYPE_CHECKING:
    from ledger.db import Conn

_OUTCOME_TYPES: tuple[EventType, ...] = ("PositionsReconciled", "ReconciliationFailed")
# What changes open positions, and how many of its events one read looks back over.
_EXECUTION_TYPES: tuple[EventType, ...] = ("OrderFilled", "PositionClosed")
_PAGE = 500


@dataclass(frozen=True, kw_only=True)
class Reconciliation:
    """What comparing one broker view did."""

    account: str
    as_of: datetime
    # The head compared at (for a repeat: the head recorded the first time).
    head: int
    differences: tuple[Difference, ...]
    # Differences beyond the first SNAPSHOT_POSITIONS_MAX, counted, not listed.
    omitted: int = 0
    # True when this `as_of` had been judged before: nothing was appended.
    repeated: bool = False

    @property
    def matched(self) -> bool:
        return not self.differences

    def document(self) -> dict[str, object]:
        """Return the `reconcile --json` document."""
        document: dict[str, object] = {
            "account": self.account,
            "matched": self.matched,
            "differences": [
                {"symbol": d.symbol, "side": d.side, "broker": f"{d.broker:f}",
                 "ledger": f"{d.ledger:f}"} for d in self.differences],
        }
        if self.omitted:
            document["omitted"] = self.omitted
        return document


async def reconcile(conn: Conn, view: BrokerPositions, now: datetime) -> Reconciliation:
    """Compare the broker's view with the account at its head and record it, in the caller's
    transaction; `now` is the time the outcome is recorded at.

    Raises:
        UnknownAccount: the account has no stream.
        AppendRefused: the session's role may not write the outcome.
    """
    account = view.account
    head = await store.lock_head(conn, account)
    earlier = await _judged(conn, account, view.as_of)
    if earlier is not None:
        return earlier
    compared, positions = await _positions_as_of(conn, account, head, view.as_of)
    found = compare(positions, view)
    differences = tuple(found[:SNAPSHOT_POSITIONS_MAX])
    data = (ReconciliationFailed(as_of=view.as_of, head=compared, differences=differences,
                                 omitted=len(found) - len(differences))
            if differences else PositionsReconciled(as_of=view.as_of, head=compared))
    await store.append(conn, account, [build_event(account, now, data)], expected_sequence=head)
    return Reconciliation(account=account, as_of=view.as_of, head=compared,
                          differences=differences, omitted=len(found) - len(differences))


async def _positions_as_of(conn: Conn, account: str, head: int,
                           as_of: datetime) -> tuple[int, Mapping[str, Position]]:
    """Return the ledger's open positions as of the broker's `as_of`, and the sequence they
    are at: the head's, unless executions that occurred after `as_of` are already recorded.

    The broker's view holds what it had executed by `as_of`; an execution it made after that
    (its own clock, as for `occurred_at`) may already be in the store, and would read as a
    difference. The positions are then folded from the stream up to just before the first such
    execution: a cost that grows with the stream, paid only in that race.
    """
    cut = await _before_first_execution_after(conn, account, head, as_of)
    if cut is None:
        proven = await state_at_head(conn, account, head, fold_bound=None)
        return head, proven.state.positions
    return cut, (await fold_stream(conn, account, up_to_sequence=cut)).positions


async def _before_first_execution_after(conn: Conn, account: str, head: int,
                                        as_of: datetime) -> int | None:
    """Return the sequence just before the first recorded execution that occurred after
    `as_of`, None when there is none. Reads back from the head only as far as it must."""
    first_after: int | None = None
    upper = head
    while upper > 0:
        rows = await conn.fetch(
            "SELECT sequence, occurred_at FROM events WHERE account = $1 AND sequence <= $2 "
            "AND sequence > $3 AND type = ANY($4::text[]) ORDER BY sequence DESC",
            account, upper, upper - _PAGE, list(_EXECUTION_TYPES))
        for row in rows:
            if row["occurred_at"] <= as_of:
                return None if first_after is None else first_after - 1
            first_after = row["sequence"]
        upper -= _PAGE
    return None if first_after is None else first_after - 1


async def _judged(conn: Conn, account: str, as_of: datetime) -> Reconciliation | None:
    """Return the outcome already recorded for this broker `as_of`, if any."""
    keys = [reconciliation_key(name, as_of) for name in _OUTCOME_TYPES]
    raw = await conn.fetchval(
        f"SELECT {store.EVENT_JSON_SQL} FROM events WHERE account = $1 "
        "AND natural_key = ANY($2::text[]) ORDER BY sequence LIMIT 1", account, keys)
    if raw is None:
        return None
    data = decode_event(raw).data
    assert isinstance(data, (PositionsReconciled, ReconciliationFailed)), type(data)
    if isinstance(data, ReconciliationFailed):
        return Reconciliation(account=account, as_of=data.as_of, head=data.head,
                              differences=data.differences, omitted=data.omitted,
                              repeated=True)
    return Reconciliation(account=account, as_of=data.as_of, head=data.head, differences=(),
                          repeated=True)
