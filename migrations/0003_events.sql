-- Why: the append-only event store, the source of truth and the outbox.
-- Keys all start with `account` (sharding by account stays possible) and uniqueness is scoped by
-- account, because unique checks bypass row-level security: a global UNIQUE on a broker id would
-- let one account probe another's ids.
-- No foreign key to streams: every append locks the account's streams row first (so the stream
-- exists), and a per-row FK check cost a third of the append time (measured, bench_append).
CREATE TABLE events (
    account text NOT NULL,
    sequence bigint NOT NULL CHECK (sequence >= 1),
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    event_id uuid NOT NULL,
    type text NOT NULL,
    -- The type and its key, e.g. OrderFilled:fill_id="X-1"; NULL where the type has none.
    natural_key text,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    data jsonb NOT NULL,
    PRIMARY KEY (account, sequence),
    UNIQUE (account, event_id)
);
CREATE UNIQUE INDEX events_natural_key ON events (account, natural_key)
    WHERE natural_key IS NOT NULL;
-- Readers never page by global_position alone (a later position can commit first); this index
-- serves time-ordered audits and exports within a consistent snapshot.
CREATE INDEX events_global_position ON events (global_position);

ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
CREATE POLICY events_owner ON events TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY events_service ON events TO ledger__service USING (true) WITH CHECK (true);
CREATE POLICY events_account ON events TO ledger__accounts
    USING (account = ledger_session_account())
    WITH CHECK (account = ledger_session_account());

GRANT SELECT, INSERT ON events TO ledger__accounts, ledger__service;
REVOKE UPDATE, DELETE, TRUNCATE ON events FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON events FROM CURRENT_USER;

-- The privileges above do not bind the owner or a superuser; these triggers do.
CREATE FUNCTION events_refuse_change() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'the event store is append-only: % on events is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();
