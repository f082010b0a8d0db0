"""An account's state proven at its head: the projection (or a state already proven) plus the
store's tail, folded by the one fold.

Every reader that shows or acts on figures uses this: the dispatcher under its head lock, ingest
under the same lock, `ledger positions` in one read-only snapshot. A projection that is behind
is never taken for the truth: its tail is folded from the store, up to a bound the caller sets;
beyond it the caller gets the unfolded state and the lag, and fails closed. Must not import
Kafka clients or the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledger import store
from projections import tables
from projections.fold import AccountState, fold

if TYPE_CHECKING:
    from ledger.db import Conn


@dataclass(frozen=True, kw_only=True)
class Proven:
    """A state and how far behind the head its source was before the tail was folded."""

    state: AccountState
    head: int
    source_sequence: int

    @property
    def lag(self) -> int:
        """Events the source had not applied: 0 means it was current."""
        return self.head - self.source_sequence

    @property
    def current(self) -> bool:
        """Whether `state` is at the head (its tail was folded, or there was none)."""
        return self.state.sequence == self.head


async def state_at_head(conn: Conn, account: str, head: int, *, fold_bound: int | None,
                        cached: AccountState | None = None) -> Proven:
    """Return the account's state at `head`, folding the store's tail onto its source.

    The source is `cached` when it is at most `fold_bound` events behind (a state this process
    proved earlier), else the projection's rows, read in one statement. The caller makes `head`
    stand still while this runs: it holds the head lock, or reads in one snapshot. With a
    `fold_bound`, a tail longer than it is not folded (the state returned is the source's).
    """
    bound = head if fold_bound is None else fold_bound
    if cached is not None and 0 <= head - cached.sequence <= bound:
        source = cached
    else:
        source = await tables.load_state(conn, account)
    state = source
    if 0 < head - source.sequence <= bound:
        tail = [e async for e in store.iterate_stream(conn, account, source.sequence, head)]
        state = fold(tail, source)
        assert state.sequence == head, (account, state.sequence, head)
    return Proven(state=state, head=head, source_sequence=source.sequence)
