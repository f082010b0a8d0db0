-- Why: the contract may no longer understate risk or lose a close (docs/events.md).
--   * PositionClosed carries `close_id`, the broker's execution id, as its natural key: two
--     partial closes of one position in one instant are two closes, the same close_id twice is
--     one. Only the administrator (imports of old histories) may append a close without one;
--     those key on position_id, occurred_at, quantity and price.
--   * Realised P&L is kept per trading day (the UTC date), for the last seven days booked, so
--     that a close stamped tomorrow cannot hide today's loss from the daily loss limit.
-- Upgrade note: projections lose their single-day P&L figure; run `ledger rebuild` once after
-- migrating to fill the per-day figures from the store (the projector catches up by itself
-- only on accounts that trade).
UPDATE event_types SET key_field = 'close_id', fields = '{close_id,position_id,price,quantity,reason}'
WHERE type = 'PositionClosed';

ALTER TABLE projection_accounts
    ADD COLUMN realized_pnl_days jsonb NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(realized_pnl_days) = 'object'),
    DROP COLUMN pnl_day,
    DROP COLUMN realized_pnl_day;
