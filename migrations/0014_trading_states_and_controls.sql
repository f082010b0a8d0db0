-- Why: the controls desks expect (docs/design.md, "Limits and trading states").
--   * Three more limits travel in LimitsSet and are kept in the projection: orders per minute,
--     exposure per underlying, the duplicate-order window.
--   * The trading state is one of active, reducing, halted; TradingReduced moves to reducing.
--   * IntentCancelled releases a pending intent on halt; the operator appends it.
--   * A close may name the intent it executes (a reducing order); an intent may be reducing.
--   * The projection keeps the recent intents (time, symbol, side, quantity, limit price), enough
--     to answer the rate and the duplicate windows, as one JSON array.
UPDATE event_types
SET fields = '{max_open_positions,max_exposure,max_order_notional,daily_loss_limit,max_orders_per_minute,max_underlying_exposure,duplicate_window_s}'
WHERE type = 'LimitsSet';
UPDATE event_types SET fields = '{close_id,position_id,price,quantity,reason,intent_id}'
WHERE type = 'PositionClosed';
UPDATE event_types
SET fields = '{intent_id,signal_id,position_id,symbol,instrument,side,quantity,limit_price,multiplier,expires_at,reducing}'
WHERE type = 'IntentIssued';
INSERT INTO event_types (type, writer, keyed, key_field, fields, required) VALUES
    ('TradingReduced', 'operator', false, NULL, '{reason}', '{reason}'),
    ('IntentCancelled', 'operator', true, 'intent_id', '{intent_id,reason}', '{intent_id,reason}');

ALTER TABLE projection_accounts
    ADD COLUMN max_orders_per_minute integer,
    ADD COLUMN max_underlying_exposure numeric,
    ADD COLUMN duplicate_window_s integer,
    ADD COLUMN trading_state text NOT NULL DEFAULT 'active'
        CHECK (trading_state IN ('active', 'reducing', 'halted')),
    ADD COLUMN recent_intents jsonb NOT NULL DEFAULT '[]'
        CHECK (jsonb_typeof(recent_intents) = 'array');
UPDATE projection_accounts SET trading_state = 'halted' WHERE halted;

-- The relay's probe of the latest trading state must see TradingReduced too.
DROP INDEX events_trading_state;
CREATE INDEX events_trading_state ON events (account, sequence DESC)
    WHERE type IN ('TradingHalted', 'TradingResumed', 'TradingReduced');
