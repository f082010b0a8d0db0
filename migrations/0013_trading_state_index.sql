-- Why: the relay withholds an intent from `order-intents` when its account is halted at the
-- moment of publishing (docs/design.md, "only live orders reach the router"); it asks for the
-- account's latest trading-state event, which this index finds in one probe however long the
-- stream is.
CREATE INDEX events_trading_state ON events (account, sequence DESC)
    WHERE type IN ('TradingHalted', 'TradingResumed');
