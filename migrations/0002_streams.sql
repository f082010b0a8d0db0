-- Why: one stream per account. `head` is the last sequence appended; appends lock this row
-- (SELECT ... FOR UPDATE) so sequences are assigned 1, 2, 3... without gaps under any number of
-- concurrent writers, and a dispatcher's check-then-reserve commits under the same lock.
CREATE TABLE streams (
    account text PRIMARY KEY CHECK (account ~ '^[a-z][a-z0-9_]{0,47}$'),
    head bigint NOT NULL DEFAULT 0 CHECK (head >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE streams ENABLE ROW LEVEL SECURITY;
ALTER TABLE streams FORCE ROW LEVEL SECURITY;
CREATE POLICY streams_owner ON streams TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY streams_service ON streams TO ledger__service USING (true) WITH CHECK (true);
CREATE POLICY streams_account ON streams TO ledger__accounts
    USING (account = ledger_session_account())
    WITH CHECK (account = ledger_session_account());

GRANT SELECT ON streams TO ledger__accounts, ledger__service;
GRANT UPDATE (head) ON streams TO ledger__accounts, ledger__service;
