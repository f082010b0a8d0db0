-- Why: the intents the rate and duplicate gates look back on (AccountState.recent_intents, up to
-- a minute of them or the duplicate window) were one JSON array on the account's row, rewritten
-- whole by every projector batch: at a few hundred intents a second that is thousands of
-- entries encoded per batch, the projector's largest cost (docs/performance.md). As rows, a
-- batch writes only what came in and deletes what fell out of the window, like pending intents.
-- `saved_sequence`, `ordinal` keep the fold's order (oldest first): rows written by a later
-- batch come after, and within a batch the fold's order is kept.
CREATE TABLE projection_recent (
    account text NOT NULL REFERENCES projection_accounts (account) ON DELETE CASCADE,
    intent_id text NOT NULL,
    occurred_at timestamptz NOT NULL,
    symbol text NOT NULL,
    side text NOT NULL,
    quantity numeric NOT NULL,
    limit_price numeric NOT NULL,
    saved_sequence bigint NOT NULL,
    ordinal integer NOT NULL,
    PRIMARY KEY (account, intent_id)
);
CREATE INDEX projection_recent_order ON projection_recent (account, saved_sequence, ordinal);
ALTER TABLE projection_recent OWNER TO @owner@;

ALTER TABLE projection_recent ENABLE ROW LEVEL SECURITY;
ALTER TABLE projection_recent FORCE ROW LEVEL SECURITY;
CREATE POLICY projection_recent_owner ON projection_recent TO @owner@
    USING (true) WITH CHECK (true);
CREATE POLICY projection_recent_jobs ON projection_recent
    TO @ingest@, @relay@, @projector@, @operator@ USING (true) WITH CHECK (true);
CREATE POLICY projection_recent_account ON projection_recent TO @dispatchers@
    USING (account = (SELECT ledger_caller_account()));
REVOKE ALL ON projection_recent FROM PUBLIC;
GRANT SELECT ON projection_recent TO @dispatchers@, @ingest@, @relay@, @projector@, @operator@;
GRANT INSERT, UPDATE, DELETE ON projection_recent TO @projector@;

INSERT INTO projection_recent (account, intent_id, occurred_at, symbol, side, quantity,
                               limit_price, saved_sequence, ordinal)
SELECT a.account, item ->> 'intent_id', (item ->> 'occurred_at')::timestamptz, item ->> 'symbol',
       item ->> 'side', (item ->> 'quantity')::numeric, (item ->> 'limit_price')::numeric,
       a.applied_sequence, ordinality
FROM projection_accounts a, jsonb_array_elements(a.recent_intents) WITH ORDINALITY AS t(item, ordinality)
ON CONFLICT (account, intent_id) DO NOTHING;

ALTER TABLE projection_accounts DROP COLUMN recent_intents;
