-- Why: the store is the outbox. The relay remembers per account the last sequence the broker
-- acknowledged on ledger-events, and moves it only after the acknowledgement, so a crash between
-- publishing and remembering republishes (consumers dedupe by account + sequence), never skips.
CREATE TABLE relay_positions (
    account text PRIMARY KEY,
    published_sequence bigint NOT NULL CHECK (published_sequence >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE relay_positions ENABLE ROW LEVEL SECURITY;
ALTER TABLE relay_positions FORCE ROW LEVEL SECURITY;
CREATE POLICY relay_positions_owner ON relay_positions TO CURRENT_USER
    USING (true) WITH CHECK (true);
CREATE POLICY relay_positions_service ON relay_positions TO ledger__service
    USING (true) WITH CHECK (true);
CREATE POLICY relay_positions_account ON relay_positions TO ledger__accounts
    USING (account = ledger_session_account());

GRANT SELECT, INSERT, UPDATE ON relay_positions TO ledger__service;
GRANT SELECT ON relay_positions TO ledger__accounts;
