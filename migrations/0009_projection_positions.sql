-- Why: an account's open positions, as the fold computes them (projections/fold.py).
CREATE TABLE projection_positions (
    account text NOT NULL,
    position_id text NOT NULL,
    symbol text NOT NULL,
    instrument text NOT NULL,
    side text NOT NULL,
    quantity numeric NOT NULL CHECK (quantity > 0),
    average_price numeric NOT NULL,
    multiplier numeric NOT NULL,
    realized_pnl numeric NOT NULL,
    opened_at timestamptz NOT NULL,
    PRIMARY KEY (account, position_id)
);

ALTER TABLE projection_positions ENABLE ROW LEVEL SECURITY;
ALTER TABLE projection_positions FORCE ROW LEVEL SECURITY;
CREATE POLICY projection_positions_owner ON projection_positions TO CURRENT_USER
    USING (true) WITH CHECK (true);
CREATE POLICY projection_positions_service ON projection_positions TO ledger__service
    USING (true) WITH CHECK (true);
CREATE POLICY projection_positions_account ON projection_positions TO ledger__accounts
    USING (account = ledger_session_account());

GRANT SELECT, INSERT, UPDATE, DELETE ON projection_positions TO ledger__service;
GRANT SELECT ON projection_positions TO ledger__accounts;
