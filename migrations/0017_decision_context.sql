-- Why: a decision is one short transaction under the account's head lock, and on a loaded
-- machine every round trip to the server costs more than the decision's own work
-- (docs/performance.md). This function does in one call what took three: lock the head, look up
-- earlier decisions of the signals at hand (a batch of them), and read the tail after the state
-- the dispatcher already proved (up to a bound). It runs with the caller's rights, so row-level security
-- still shows a dispatcher its own account only, and `ledger_lock_head` still refuses whoever
-- may not lock this stream.
--
-- Each statement of a VOLATILE plpgsql function takes a fresh snapshot under READ COMMITTED,
-- so the two reads after the lock see everything committed before the lock was granted: an
-- earlier decision of a concurrent replica is found, never missed.
--
-- The events are rendered exactly as the store renders them (ledger/store.py, EVENT_JSON_SQL;
-- a test compares the two), by one function.
CREATE FUNCTION ledger_event_json(e public.events) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, public
AS $$
    SELECT json_build_object(
        'event_id', e.event_id, 'account', e.account, 'type', e.type,
        'occurred_at', to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'data', e.data, 'sequence', e.sequence,
        'recorded_at', to_char(e.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'global_position', e.global_position)::text
$$;

CREATE FUNCTION ledger_decision_context(p_account text, p_keys text[], p_since bigint,
                                        p_bound bigint)
RETURNS TABLE (head bigint, previous text[], tail text[])
LANGUAGE plpgsql SECURITY INVOKER
SET search_path = pg_catalog, public
AS $$
BEGIN
    head := ledger_lock_head(p_account);
    previous := ARRAY(
        SELECT ledger_event_json(e)
        FROM public.events e WHERE e.account = p_account AND e.natural_key = ANY (p_keys)
        ORDER BY e.sequence);
    IF p_since IS NOT NULL AND head - p_since BETWEEN 1 AND p_bound THEN
        tail := ARRAY(
            SELECT ledger_event_json(e)
            FROM public.events e
            WHERE e.account = p_account AND e.sequence > p_since AND e.sequence <= head
            ORDER BY e.sequence);
    ELSIF p_since IS NOT NULL AND head = p_since THEN
        tail := '{}';
    END IF;
    RETURN NEXT;
END
$$;

REVOKE EXECUTE ON FUNCTION ledger_event_json(public.events) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_event_json(public.events) TO @dispatchers@, @ingest@, @operator@;
REVOKE EXECUTE ON FUNCTION ledger_decision_context(text, text[], bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_decision_context(text, text[], bigint, bigint)
    TO @dispatchers@, @ingest@, @operator@;
