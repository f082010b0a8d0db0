-- Why: the per-account projection the dispatcher reads. One row per account: how far the
-- projector has applied its stream (written in the same transaction as the rows it describes),
-- the limits in force, the kill switch and the day's realised P&L. Open positions and pending
-- intents have tables of their own (0009, 0010).
CREATE TABLE projection_accounts (
    account text PRIMARY KEY,
    applied_sequence bigint NOT NULL DEFAULT 0 CHECK (applied_sequence >= 0),
    max_open_positions integer,
    max_exposure numeric,
    max_order_notional numeric,
    daily_loss_limit numeric,
    halted boolean NOT NULL DEFAULT false,
    halt_reason text,
    pnl_day date,
    realized_pnl_day numeric NOT NULL DEFAULT 0,
    realized_pnl_total numeric NOT NULL DEFAULT 0,
    last_occurred_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE projection_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE projection_accounts FORCE ROW LEVEL SECURITY;
CREATE POLICY projection_accounts_owner ON projection_accounts TO CURRENT_USER
    USING (true) WITH CHECK (true);
CREATE POLICY projection_accounts_service ON projection_accounts TO ledger__service
    USING (true) WITH CHECK (true);
CREATE POLICY projection_accounts_account ON projection_accounts TO ledger__accounts
    USING (account = ledger_session_account());

GRANT SELECT, INSERT, UPDATE, DELETE ON projection_accounts TO ledger__service;
GRANT SELECT ON projection_accounts TO ledger__accounts;
