-- Why: an account's pending intents: issued, not yet filled, rejected or expired. They count
-- against the limits exactly like open positions (docs/design.md invariant 2).
CREATE TABLE projection_pending (
    account text NOT NULL,
    intent_id text NOT NULL,
    signal_id text NOT NULL,
    position_id text NOT NULL,
    symbol text NOT NULL,
    instrument text NOT NULL,
    side text NOT NULL,
    quantity numeric NOT NULL,
    limit_price numeric NOT NULL,
    multiplier numeric NOT NULL,
    expires_at timestamptz NOT NULL,
    issued_sequence bigint NOT NULL,
    PRIMARY KEY (account, intent_id)
);

ALTER TABLE projection_pending ENABLE ROW LEVEL SECURITY;
ALTER TABLE projection_pending FORCE ROW LEVEL SECURITY;
CREATE POLICY projection_pending_owner ON projection_pending TO CURRENT_USER
    USING (true) WITH CHECK (true);
CREATE POLICY projection_pending_service ON projection_pending TO ledger__service
    USING (true) WITH CHECK (true);
CREATE POLICY projection_pending_account ON projection_pending TO ledger__accounts
    USING (account = ledger_session_account());

GRANT SELECT, INSERT, UPDATE, DELETE ON projection_pending TO ledger__service;
GRANT SELECT ON projection_pending TO ledger__accounts;
