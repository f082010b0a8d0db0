-- Why: an intent that only reduces an open position (IntentIssued.reducing) reserves no position
-- and no exposure at the gates, and the quantity it takes off its position is spoken for
-- (docs/design.md, "Limits and trading states"). The projection keeps which pending intents are
-- reducing, so that the dispatcher, `positions` and the audit read the same figures as the fold.
ALTER TABLE projection_pending ADD COLUMN reducing boolean NOT NULL DEFAULT false;

-- Intents pending when this migration runs: their own events say whether they reduce.
UPDATE projection_pending p
SET reducing = true
FROM events e
WHERE e.account = p.account
  AND e.sequence = p.issued_sequence
  AND e.type = 'IntentIssued'
  AND (e.data ->> 'reducing')::boolean IS TRUE;
