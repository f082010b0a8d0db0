-- Why: the ledger checks itself against the broker's truth and fails closed (docs/design.md,
-- "Reconciliation with the broker").
--   * PositionsReconciled / ReconciliationFailed: ingest compared a broker's positions (topic
--     `broker-positions`, or `ledger reconcile`) with the ledger at its head; one per broker
--     `as_of`. A failure moves the account to reducing.
--   * DiscrepancyFound: an execution the broker reported that the ledger cannot reconcile (a
--     close beyond what is open, a fill for a dead intent...), recorded beside the execution.
--   * LimitsSet gains max_reconcile_age_s (gate reconciliation_stale).
--   * The projection keeps the limit and the last reconciled `as_of`.
-- All three are written by the ingest role (writer 'broker'), which ingest never accepts on
-- `executions`: a broker adapter cannot claim the ledger reconciled.
UPDATE event_types
SET fields = '{max_open_positions,max_exposure,max_order_notional,daily_loss_limit,max_orders_per_minute,max_underlying_exposure,duplicate_window_s,max_reconcile_age_s}'
WHERE type = 'LimitsSet';
INSERT INTO event_types (type, writer, keyed, key_field, fields, required) VALUES
    ('PositionsReconciled', 'broker', true, 'as_of', '{as_of,head}', '{as_of,head}'),
    ('ReconciliationFailed', 'broker', true, 'as_of', '{as_of,head,differences,omitted}',
     '{as_of,head,differences}'),
    ('DiscrepancyFound', 'broker', true, NULL,
     '{kind,execution,position_id,intent_id,reported,ledger,reason}',
     '{kind,execution,position_id,reason}');

ALTER TABLE projection_accounts
    ADD COLUMN max_reconcile_age_s integer,
    ADD COLUMN reconciled_as_of timestamptz;
