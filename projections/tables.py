"""The projection tables: reading an account's state from its rows and writing it back.

`projection_accounts` holds one row per account with `applied_sequence`, the last sequence the
rows reflect; positions and pending intents have a row each. Every write of rows happens in the
caller's transaction together with `applied_sequence`, so the rows and the checkpoint can never
disagree. Reading an account's state is one statement: under READ COMMITTED each statement has a
snapshot of its own, so reading the checkpoint and the rows in separate statements could pair
`applied_sequence` N with rows a projector committed at N+k in between, and a reader folding the
tail after N would apply N+1..N+k twice. `applied_sequence(lock=True)` takes the account row's
lock (`FOR UPDATE`), which serialises projector instances and rebuilds on one account. Must not
import Kafka clients or the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ledger.events import format_decimal
from projections.fold import (
    AccountState,
    Limits,
    PendingIntent,
    Position,
    RecentIntent,
    initial_state,
)

if TYPE_CHECKING:
    from ledger.db import Conn

_ACCOUNT_COLUMNS = """applied_sequence, max_open_positions, max_exposure, max_order_notional,
    daily_loss_limit, max_orders_per_minute, max_underlying_exposure, duplicate_window_s,
    halted, halt_reason, trading_state, realized_pnl_days::text AS realized_pnl_days,
    max_reconcile_age_s, reconciled_as_of,
    realized_pnl_total, last_occurred_at"""

_POSITION_COLUMNS = (
    "position_id",
    "symbol",
    "instrument",
    "side",
    "quantity",
    "average_price",
    "multiplier",
    "realized_pnl",
    "opened_at",
)
_PENDING_COLUMNS = (
    "intent_id",
    "signal_id",
    "position_id",
    "symbol",
    "instrument",
    "side",
    "quantity",
    "limit_price",
    "multiplier",
    "expires_at",
    "issued_sequence",
    "reducing",
)
_RECENT_COLUMNS = ("intent_id", "occurred_at", "symbol", "side", "quantity", "limit_price")


async def ensure_row(conn: Conn, account: str) -> None:
    """Create the account's projection row if it is missing (applied_sequence 0)."""
    await conn.execute(
        "INSERT INTO projection_accounts (account) VALUES ($1) ON CONFLICT (account) DO NOTHING",
        account,
    )


async def applied_sequence(conn: Conn, account: str, *, lock: bool) -> int:
    """Return how far the projection reflects the account (0 if never), locking its row."""
    if lock:
        await ensure_row(conn, account)
    suffix = " FOR UPDATE" if lock else ""
    value = await conn.fetchval(
        f"SELECT applied_sequence FROM projection_accounts WHERE account = $1{suffix}", account
    )
    return int(value) if value is not None else 0


_LOAD_SQL = f"""
SELECT {_ACCOUNT_COLUMNS},
       ARRAY(SELECT ROW({', '.join(_POSITION_COLUMNS)}) FROM projection_positions p
             WHERE p.account = a.account) AS positions,
       ARRAY(SELECT ROW({', '.join(_PENDING_COLUMNS)}) FROM projection_pending i
             WHERE i.account = a.account) AS pending,
       ARRAY(SELECT ROW({', '.join(_RECENT_COLUMNS)}) FROM projection_recent r
             WHERE r.account = a.account ORDER BY r.saved_sequence, r.ordinal) AS recent
FROM projection_accounts a WHERE a.account = $1"""


async def load_state(conn: Conn, account: str) -> AccountState:
    """Read an account's projected state from its rows in one statement (one snapshot).

    Returns the initial state when the account has no projection row yet.
    """
    row = await conn.fetchrow(_LOAD_SQL, account)
    if row is None:
        return initial_state(account)
    limits = None
    if row["max_open_positions"] is not None:
        limits = Limits(
            max_open_positions=row["max_open_positions"],
            max_exposure=row["max_exposure"],
            max_order_notional=row["max_order_notional"],
            daily_loss_limit=row["daily_loss_limit"],
            max_orders_per_minute=row["max_orders_per_minute"],
            max_underlying_exposure=row["max_underlying_exposure"],
            duplicate_window_s=row["duplicate_window_s"],
            max_reconcile_age_s=row["max_reconcile_age_s"],
        )
    positions = [Position(**dict(zip(_POSITION_COLUMNS, p, strict=True)))
                 for p in row["positions"]]
    pending = [PendingIntent(**dict(zip(_PENDING_COLUMNS, i, strict=True)))
               for i in row["pending"]]
    return AccountState(
        account=account,
        sequence=int(row["applied_sequence"]),
        positions={p.position_id: p for p in positions},
        pending={i.intent_id: i for i in pending},
        limits=limits,
        halted=row["halted"],
        halt_reason=row["halt_reason"],
        realized_pnl_days=_pnl_days(row["realized_pnl_days"]),
        realized_pnl_total=row["realized_pnl_total"],
        last_occurred_at=row["last_occurred_at"],
        reducing=row["trading_state"] == "reducing",
        recent_intents=tuple(RecentIntent(**dict(zip(_RECENT_COLUMNS, r, strict=True)))
                             for r in row["recent"]),
        reconciled_as_of=row["reconciled_as_of"],
    )


def _pnl_days(text: str) -> dict[date, Decimal]:
    return {date.fromisoformat(day): Decimal(amount)
            for day, amount in json.loads(text).items()}


def _pnl_days_json(days: Mapping[date, Decimal]) -> str:
    # Amounts as strings: JSON numbers would pass through floats somewhere on the way.
    return json.dumps({day.isoformat(): format_decimal(amount)
                       for day, amount in sorted(days.items())})


async def save_state(conn: Conn, before: AccountState, after: AccountState) -> None:
    """Write what changed from `before` (the rows as stored) to `after`, with the checkpoint."""
    assert before.account == after.account
    assert after.sequence >= before.sequence
    removed = [key for key in before.positions if key not in after.positions]
    changed = [p for key, p in after.positions.items() if before.positions.get(key) != p]
    await _delete(conn, "projection_positions", "position_id", after.account, removed)
    await _upsert(
        conn,
        "projection_positions",
        _POSITION_COLUMNS,
        "position_id",
        after.account,
        [_position_values(p) for p in changed],
    )
    released = [key for key in before.pending if key not in after.pending]
    issued = [i for key, i in after.pending.items() if before.pending.get(key) != i]
    await _delete(conn, "projection_pending", "intent_id", after.account, released)
    await _upsert(
        conn,
        "projection_pending",
        _PENDING_COLUMNS,
        "intent_id",
        after.account,
        [_pending_values(i) for i in issued],
    )
    await _save_recent(conn, before, after)
    await _save_account_row(conn, after)


async def _save_recent(conn: Conn, before: AccountState, after: AccountState) -> None:
    """Write the recent intents that came in, delete those that fell out of the window.

    The fold appends at the end and drops from the front, so what came in is written after
    every row already there (`saved_sequence` is this save's sequence, later than theirs).
    """
    kept = {i.intent_id for i in after.recent_intents}
    had = {i.intent_id for i in before.recent_intents}
    await _delete(conn, "projection_recent", "intent_id", after.account,
                  [key for key in had if key not in kept])
    await _upsert(
        conn,
        "projection_recent",
        (*_RECENT_COLUMNS, "saved_sequence", "ordinal"),
        "intent_id",
        after.account,
        [(i.intent_id, i.occurred_at, i.symbol, i.side, i.quantity, i.limit_price,
          after.sequence, ordinal)
         for ordinal, i in enumerate(after.recent_intents) if i.intent_id not in had],
    )


async def replace_state(conn: Conn, state: AccountState) -> None:
    """Replace every projection row of the account with `state` (rebuild)."""
    await conn.execute("DELETE FROM projection_positions WHERE account = $1", state.account)
    await conn.execute("DELETE FROM projection_pending WHERE account = $1", state.account)
    await conn.execute("DELETE FROM projection_recent WHERE account = $1", state.account)
    await ensure_row(conn, state.account)
    await save_state(conn, _empty_like(state), state)


def _empty_like(state: AccountState) -> AccountState:
    return initial_state(state.account)


async def _save_account_row(conn: Conn, state: AccountState) -> None:
    limits = state.limits
    await conn.execute(
        """INSERT INTO projection_accounts (account, applied_sequence, max_open_positions,
               max_exposure, max_order_notional, daily_loss_limit, halted, halt_reason,
               realized_pnl_days, realized_pnl_total, last_occurred_at, max_orders_per_minute,
               max_underlying_exposure, duplicate_window_s, trading_state,
               max_reconcile_age_s, reconciled_as_of, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12, $13, $14, $15,
                   $16, $17, now())
           ON CONFLICT (account) DO UPDATE SET
               applied_sequence = excluded.applied_sequence,
               max_open_positions = excluded.max_open_positions,
               max_exposure = excluded.max_exposure,
               max_order_notional = excluded.max_order_notional,
               daily_loss_limit = excluded.daily_loss_limit,
               halted = excluded.halted, halt_reason = excluded.halt_reason,
               realized_pnl_days = excluded.realized_pnl_days,
               realized_pnl_total = excluded.realized_pnl_total,
               last_occurred_at = excluded.last_occurred_at,
               max_orders_per_minute = excluded.max_orders_per_minute,
               max_underlying_exposure = excluded.max_underlying_exposure,
               duplicate_window_s = excluded.duplicate_window_s,
               trading_state = excluded.trading_state,
               max_reconcile_age_s = excluded.max_reconcile_age_s,
               reconciled_as_of = excluded.reconciled_as_of, updated_at = now()""",
        state.account,
        state.sequence,
        limits.max_open_positions if limits else None,
        limits.max_exposure if limits else None,
        limits.max_order_notional if limits else None,
        limits.daily_loss_limit if limits else None,
        state.halted,
        state.halt_reason,
        _pnl_days_json(state.realized_pnl_days),
        state.realized_pnl_total,
        state.last_occurred_at,
        limits.max_orders_per_minute if limits else None,
        limits.max_underlying_exposure if limits else None,
        limits.duplicate_window_s if limits else None,
        state.trading_state,
        limits.max_reconcile_age_s if limits else None,
        state.reconciled_as_of,
    )


async def _delete(conn: Conn, table: str, key: str, account: str, keys: list[str]) -> None:
    if keys:
        await conn.execute(
            f"DELETE FROM {table} WHERE account = $1 AND {key} = ANY($2::text[])", account, keys
        )


async def _upsert(
    conn: Conn,
    table: str,
    columns: tuple[str, ...],
    key: str,
    account: str,
    rows: list[tuple[Any, ...]],
) -> None:
    if not rows:
        return
    placeholders = ", ".join(f"${i}" for i in range(2, len(columns) + 2))
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    await conn.executemany(
        f"INSERT INTO {table} (account, {', '.join(columns)}) VALUES ($1, {placeholders}) "
        f"ON CONFLICT (account, {key}) DO UPDATE SET {updates}",
        [(account, *row) for row in rows],
    )


def _position_values(p: Position) -> tuple[Any, ...]:
    return (
        p.position_id,
        p.symbol,
        p.instrument,
        p.side,
        p.quantity,
        p.average_price,
        p.multiplier,
        p.realized_pnl,
        p.opened_at,
    )


def _pending_values(i: PendingIntent) -> tuple[Any, ...]:
    return (
        i.intent_id,
        i.signal_id,
        i.position_id,
        i.symbol,
        i.instrument,
        i.side,
        i.quantity,
        i.limit_price,
        i.multiplier,
        i.expires_at,
        i.issued_sequence,
        i.reducing,
    )


@dataclass(frozen=True, kw_only=True)
class Difference:
    """One way a live projection differs from a rebuild of the store."""

    account: str
    table: str
    key: str
    live: str
    rebuilt: str

    def __str__(self) -> str:
        return f"{self.account} {self.table} {self.key}: live {self.live}, rebuilt {self.rebuilt}"


def differences(live: AccountState, rebuilt: AccountState) -> list[Difference]:
    """Compare two states row by row: accounts, positions, pending intents."""
    found: list[Difference] = []
    account = live.account
    for name in (
        "sequence",
        "limits",
        "halted",
        "halt_reason",
        "realized_pnl_days",
        "realized_pnl_total",
        "last_occurred_at",
        "reducing",
        "recent_intents",
        "reconciled_as_of",
    ):
        a, b = getattr(live, name), getattr(rebuilt, name)
        if a != b:
            found.append(
                Difference(
                    account=account,
                    table="projection_accounts",
                    key=name,
                    live=_show(a),
                    rebuilt=_show(b),
                )
            )
    for table, left, right in (
        ("projection_positions", live.positions, rebuilt.positions),
        ("projection_pending", live.pending, rebuilt.pending),
    ):
        for key in sorted(set(left) | set(right)):
            if left.get(key) != right.get(key):
                found.append(
                    Difference(
                        account=account,
                        table=table,
                        key=key,
                        live=_show(left.get(key)),
                        rebuilt=_show(right.get(key)),
                    )
                )
    return found


def _show(value: object) -> str:
    if value is None:
        return "missing"
    if isinstance(value, Decimal):
        return str(value)
    return repr(value)
