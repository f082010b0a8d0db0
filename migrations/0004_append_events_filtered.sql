-- Why: the slow path of ledger_append (0005), for a batch that mixes new and stored events.
-- Keeps the first occurrence of each event id and natural key, drops what is stored, inserts the
-- rest with consecutive sequences after p_head, and returns the ids inserted, in order.
-- Each stored-key probe is one unique-index lookup (LATERAL ... LIMIT 1 is never flattened into
-- a join), so the cost grows with the batch and never with the store.
CREATE FUNCTION ledger_append_filtered(
    p_account text,
    p_head bigint,
    p_event_ids uuid[],
    p_types text[],
    p_natural_keys text[],
    p_occurred_at timestamptz[],
    p_data jsonb[]
) RETURNS uuid[]
LANGUAGE sql
AS $$
    WITH incoming AS (
        SELECT t.*,
               row_number() OVER (PARTITION BY t.event_id ORDER BY t.ord) AS id_rank,
               row_number() OVER (PARTITION BY t.natural_key ORDER BY t.ord) AS key_rank
        FROM unnest(p_event_ids, p_types, p_natural_keys, p_occurred_at, p_data)
            WITH ORDINALITY AS t(event_id, type, natural_key, occurred_at, data, ord)
    ), stored_ids AS (
        SELECT s.event_id FROM unnest(p_event_ids) AS k(event_id)
        CROSS JOIN LATERAL (SELECT e.event_id FROM events e
                            WHERE e.account = p_account AND e.event_id = k.event_id
                            LIMIT 1) AS s
    ), stored_keys AS (
        SELECT s.natural_key FROM unnest(p_natural_keys) AS k(natural_key)
        CROSS JOIN LATERAL (SELECT e.natural_key FROM events e
                            WHERE e.account = p_account AND e.natural_key = k.natural_key
                            LIMIT 1) AS s
    ), fresh AS (
        SELECT i.*, p_head + row_number() OVER (ORDER BY i.ord) AS sequence
        FROM incoming i
        WHERE i.id_rank = 1
          AND (i.natural_key IS NULL OR i.key_rank = 1)
          AND i.event_id NOT IN (SELECT event_id FROM stored_ids)
          AND (i.natural_key IS NULL OR i.natural_key NOT IN (SELECT natural_key FROM stored_keys))
    ), inserted AS (
        INSERT INTO events (account, sequence, event_id, type, natural_key, occurred_at, data)
        SELECT p_account, f.sequence, f.event_id, f.type, f.natural_key, f.occurred_at, f.data
        FROM fresh f
        RETURNING event_id, sequence
    )
    SELECT coalesce(array_agg(event_id ORDER BY sequence), '{}') FROM inserted
$$;
