-- Why: appending is one function, one round trip: lock the account's stream head, check the
-- expected sequence, drop what is already stored, insert with the next sequences, move the head.
-- A client can then prepare its next batch while the server works on this one, and a single
-- event commits in one statement. SECURITY INVOKER (the default): row-level security still
-- decides which streams the caller may lock and write.
--
-- Arguments are parallel arrays, one element per event, in stream order. Returns the head before
-- the append and the ids appended, in order: they received sequences previous_head + 1, + 2, ...
-- An id or natural key already stored, or repeated earlier in the batch, is a duplicate: skipped.
--
-- Errors (SQLSTATE): LG001 unknown account (or invisible to the caller's role);
--                    LG002 expected sequence differs from the head (DETAIL: the head).
CREATE FUNCTION ledger_append(
    p_account text,
    p_expected_sequence bigint,
    p_event_ids uuid[],
    p_types text[],
    p_natural_keys text[],
    p_occurred_at timestamptz[],
    p_data jsonb[],
    OUT previous_head bigint,
    OUT appended uuid[]
)
LANGUAGE plpgsql
AS $$
DECLARE
    v_size bigint := coalesce(array_length(p_event_ids, 1), 0);
BEGIN
    SELECT s.head INTO previous_head FROM streams s WHERE s.account = p_account FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', p_account USING ERRCODE = 'LG001';
    END IF;
    IF p_expected_sequence IS NOT NULL AND previous_head <> p_expected_sequence THEN
        RAISE EXCEPTION 'expected_sequence=% but stream % is at sequence=%',
            p_expected_sequence, p_account, previous_head
            USING ERRCODE = 'LG002', DETAIL = previous_head::text;
    END IF;
    appended := '{}';
    IF v_size = 0 THEN
        RETURN;
    END IF;

    -- A batch that starts with a stored event (a re-import, a redelivery) is filtered first, so
    -- a batch of pure duplicates writes nothing at all.
    IF EXISTS (SELECT 1 FROM events e
               WHERE e.account = p_account AND e.event_id = p_event_ids[1])
       OR EXISTS (SELECT 1 FROM events e
                  WHERE e.account = p_account AND e.natural_key = p_natural_keys[1]) THEN
        -- Every id already stored (a whole batch redelivered): one index probe each, done.
        IF (SELECT count(*) FROM unnest(p_event_ids) AS k(event_id)
            CROSS JOIN LATERAL (SELECT 1 FROM events e
                                WHERE e.account = p_account AND e.event_id = k.event_id
                                LIMIT 1) AS s) = v_size THEN
            RETURN;
        END IF;
        appended := ledger_append_filtered(p_account, previous_head, p_event_ids, p_types,
                                           p_natural_keys, p_occurred_at, p_data);
        IF cardinality(appended) > 0 THEN
            UPDATE streams SET head = previous_head + cardinality(appended)
            WHERE account = p_account;
        END IF;
        RETURN;
    END IF;

    -- Fast path for new events: one plain INSERT (no speculative insertion, which costs more).
    -- Should the batch turn out to hold a stored or repeated event, a unique index refuses it,
    -- the block is undone, and the filtered path runs instead.
    BEGIN
        INSERT INTO events (account, sequence, event_id, type, natural_key, occurred_at, data)
        SELECT p_account, previous_head + t.ord, t.event_id, t.type, t.natural_key,
               t.occurred_at, t.data
        FROM unnest(p_event_ids, p_types, p_natural_keys, p_occurred_at, p_data)
            WITH ORDINALITY AS t(event_id, type, natural_key, occurred_at, data, ord);
        appended := p_event_ids;
    EXCEPTION WHEN unique_violation THEN
        appended := ledger_append_filtered(p_account, previous_head, p_event_ids, p_types,
                                           p_natural_keys, p_occurred_at, p_data);
    END;
    IF cardinality(appended) > 0 THEN
        UPDATE streams SET head = previous_head + cardinality(appended)
        WHERE account = p_account;
    END IF;
END
$$;
