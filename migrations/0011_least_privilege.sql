-- Why: least privilege inside an account (docs/roles.md). Until now every account role could
-- INSERT into `events` and UPDATE `streams.head` for its own account: a dispatcher could append
-- TradingResumed or LimitsSet for itself, or break its stream with a gap or an undecodable
-- event. From here on:
--   * one NOLOGIN owner (@owner@) owns every table and function of this ledger;
--   * no login role may INSERT, UPDATE, DELETE or TRUNCATE `events` or `streams`;
--   * appends go through `ledger_append` (SECURITY DEFINER, search_path pinned), which checks
--     the caller against the account and the event type, and validates what it stores;
--   * each job has a role of its own, named in this ledger's namespace (@namespace@), and only
--     this ledger's roles may connect to this database.
-- The roles themselves are created by `ledger migrate` (ledger/roles.py) before this runs; the
-- runner writes them where this file says @owner@, @dispatchers@, @ingest@, @relay@,
-- @projector@ and @operator@.
--
-- Upgrade note: the group roles of 0001 (ledger__accounts, ledger__service) lose every right in
-- this database. An account role of the old scheme whose name is already the new one
-- (NAMESPACE_ACCOUNT, e.g. ledger_large in database `ledger`) is adopted below; any other
-- account gets its new role from `ledger accounts add NAME`.

-- 1. Ownership moves to the owner role; the old policies and grants go.
GRANT USAGE, CREATE ON SCHEMA public TO @owner@;

DROP POLICY streams_owner ON streams;
DROP POLICY streams_service ON streams;
DROP POLICY streams_account ON streams;
DROP POLICY events_owner ON events;
DROP POLICY events_service ON events;
DROP POLICY events_account ON events;
DROP POLICY relay_positions_owner ON relay_positions;
DROP POLICY relay_positions_service ON relay_positions;
DROP POLICY relay_positions_account ON relay_positions;
DROP POLICY projection_accounts_owner ON projection_accounts;
DROP POLICY projection_accounts_service ON projection_accounts;
DROP POLICY projection_accounts_account ON projection_accounts;
DROP POLICY projection_positions_owner ON projection_positions;
DROP POLICY projection_positions_service ON projection_positions;
DROP POLICY projection_positions_account ON projection_positions;
DROP POLICY projection_pending_owner ON projection_pending;
DROP POLICY projection_pending_service ON projection_pending;
DROP POLICY projection_pending_account ON projection_pending;
DROP FUNCTION ledger_session_account();

REVOKE ALL ON streams, events, relay_positions, projection_accounts, projection_positions,
    projection_pending FROM PUBLIC, ledger__accounts, ledger__service;

ALTER TABLE streams OWNER TO @owner@;
ALTER TABLE events OWNER TO @owner@;
ALTER TABLE relay_positions OWNER TO @owner@;
ALTER TABLE projection_accounts OWNER TO @owner@;
ALTER TABLE projection_positions OWNER TO @owner@;
ALTER TABLE projection_pending OWNER TO @owner@;
ALTER FUNCTION events_refuse_change() OWNER TO @owner@;
ALTER FUNCTION events_notify_appended() OWNER TO @owner@;
ALTER FUNCTION ledger_append_filtered(text, bigint, uuid[], text[], text[], timestamptz[],
    jsonb[]) OWNER TO @owner@;
ALTER FUNCTION ledger_append(text, bigint, uuid[], text[], text[], timestamptz[], jsonb[])
    OWNER TO @owner@;
-- Not even the owner changes history (the triggers of 0003 also bind it).
REVOKE UPDATE, DELETE, TRUNCATE ON events FROM @owner@;

-- 2. Only this ledger's roles connect; nobody creates temporary objects that could shadow ours.
DO $$
BEGIN
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO @dispatchers@, @ingest@, @relay@, '
                   '@projector@, @operator@', current_database());
END
$$;

-- An account role of the old scheme that already has its new name keeps working (see above).
DO $$
DECLARE
    v_role text;
BEGIN
    FOR v_role IN
        SELECT r.rolname FROM streams s
        JOIN pg_roles r ON r.rolname = @namespace@ || '_' || s.account
        WHERE pg_has_role(r.oid, 'ledger__accounts', 'MEMBER')
          AND NOT (r.rolsuper OR r.rolbypassrls OR r.rolcreaterole OR r.rolcreatedb)
          AND shobj_description(r.oid, 'pg_authid') IS NULL
    LOOP
        EXECUTE format('COMMENT ON ROLE %I IS %L', v_role,
                       'position ledger in database ' || current_database());
        EXECUTE format('GRANT @dispatchers@ TO %I', v_role);
    END LOOP;
END
$$;

-- Everything below is created by the owner, and owned by it.
SET LOCAL ROLE @owner@;

-- 3. Which ledger this database is: its roles' namespace, fixed from now on.
CREATE TABLE ledger_instance (
    namespace text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO ledger_instance (namespace) VALUES (@namespace@);

-- 4. What each login role of this ledger is: its job, and an account role's account. Kept by
-- `ledger migrate` (the job roles) and `ledger accounts add` (account roles); read only through
-- ledger_caller_kind() and ledger_caller_account().
CREATE TABLE login_roles (
    role text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('dispatcher', 'broker', 'operator', 'relay', 'projector')),
    account text UNIQUE REFERENCES streams (account),
    CHECK ((kind = 'dispatcher') = (account IS NOT NULL))
);
INSERT INTO login_roles (role, kind) VALUES
    ('@ingest@'::regrole::text, 'broker'),
    ('@operator@'::regrole::text, 'operator'),
    ('@relay@'::regrole::text, 'relay'),
    ('@projector@'::regrole::text, 'projector');
INSERT INTO login_roles (role, kind, account)
SELECT r.rolname, 'dispatcher', s.account FROM streams s
JOIN pg_roles r ON r.rolname = @namespace@ || '_' || s.account
WHERE pg_has_role(r.oid, '@dispatchers@'::regrole, 'MEMBER');

-- 5. The event types, who may write each, and the fields of their data. The Python contract
-- (ledger/events.py) is the source; tests/integration/test_roles.py proves the two agree.
--   writer: dispatcher (its own account), broker (ingest), operator.
--   keyed: has a natural key; key_field: the data field that is the key (keyed without one: a
--   composite key). fields: every field the data may have; required: those it must have.
CREATE TABLE event_types (
    type text PRIMARY KEY,
    writer text NOT NULL CHECK (writer IN ('dispatcher', 'broker', 'operator')),
    keyed boolean NOT NULL,
    key_field text,
    fields text[] NOT NULL,
    required text[] NOT NULL CHECK (required <@ fields)
);
INSERT INTO event_types (type, writer, keyed, key_field, fields, required) VALUES
    ('LimitsSet', 'operator', false, NULL,
     '{max_open_positions,max_exposure,max_order_notional,daily_loss_limit}',
     '{max_open_positions,max_exposure}'),
    ('OrderFilled', 'broker', true, 'fill_id',
     '{fill_id,position_id,symbol,instrument,side,quantity,price,multiplier,intent_id,fees}',
     '{fill_id,position_id,symbol,instrument,side,quantity,price}'),
    ('PositionClosed', 'broker', true, NULL,
     '{position_id,price,quantity,reason}', '{position_id,price}'),
    ('SignalEvaluated', 'dispatcher', true, 'signal_id',
     '{signal_id,signal,allowed,gates,as_of_sequence}',
     '{signal_id,signal,allowed,gates,as_of_sequence}'),
    ('IntentIssued', 'dispatcher', true, 'intent_id',
     '{intent_id,signal_id,position_id,symbol,instrument,side,quantity,limit_price,multiplier,expires_at}',
     '{intent_id,signal_id,position_id,symbol,instrument,side,quantity,limit_price,expires_at}'),
    ('IntentRejected', 'broker', true, 'intent_id', '{intent_id,reason}', '{intent_id,reason}'),
    ('IntentExpired', 'dispatcher', true, 'intent_id', '{intent_id,reason}', '{intent_id,reason}'),
    ('TradingHalted', 'operator', false, NULL, '{reason}', '{reason}'),
    ('TradingResumed', 'operator', false, NULL, '{reason}', '{}');

-- 6. Who appended each event: the login role, as the append function saw it.
ALTER TABLE events ADD COLUMN recorded_by text;

-- 7. Helpers of the append function.

-- The account whose role logged in; NULL for every other role. A definer, because row-level
-- security calls it as the account role, which may not read login_roles itself.
CREATE FUNCTION ledger_caller_account() RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$ SELECT account FROM public.login_roles WHERE role = session_user $$;

-- The job of the role that logged in (session_user: SET ROLE cannot change it); the
-- administrator, a member of the owner, is 'admin'; any other role NULL. Called only from the
-- functions below, whose search_path is pinned.
CREATE FUNCTION ledger_caller_kind() RETURNS text
    LANGUAGE sql STABLE
    AS $$
    SELECT coalesce(
        (SELECT kind FROM public.login_roles WHERE role = session_user),
        CASE WHEN pg_has_role(session_user, '@owner@'::regrole, 'MEMBER') THEN 'admin' END)
    $$;

-- A string as Python's json.dumps writes it (ASCII only: anything else as \uXXXX, surrogate
-- pairs beyond the BMP): the spelling of values inside natural keys (ledger/events.py). Plain
-- printable ASCII, nearly every identifier, is to_json's own spelling; this SQL function is
-- inlined into its caller, the slow path is a call.
CREATE FUNCTION ledger_json_text_slow(p_value text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE STRICT
    AS $$
DECLARE
    v_json text := to_json(p_value)::text;
    v_out text := '';
    v_char text;
    v_code integer;
BEGIN
    FOREACH v_char IN ARRAY regexp_split_to_array(v_json, '') LOOP
        v_code := ascii(v_char);
        IF v_code BETWEEN 32 AND 126 THEN
            v_out := v_out || v_char;
        ELSIF v_code < 65536 THEN
            v_out := v_out || '\u' || lpad(to_hex(v_code), 4, '0');
        ELSE
            v_code := v_code - 65536;
            v_out := v_out || '\u' || lpad(to_hex(55296 + (v_code >> 10)), 4, '0')
                           || '\u' || lpad(to_hex(56320 + (v_code & 1023)), 4, '0');
        END IF;
    END LOOP;
    RETURN v_out;
END
$$;

CREATE FUNCTION ledger_json_text(p_value text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE WHEN p_value ~ '^[ -~]*$' THEN to_json(p_value)::text
                ELSE ledger_json_text_slow(p_value) END
    $$;

-- Refuse, with one line naming the role, the account and the type, what the caller may not
-- append; refuse what is not a well-formed event of a known type. Raises; returns nothing.
--   LG003 the caller's role may not append this type to this account
--   LG004 malformed: unknown type, data not an object with the type's fields (all it must
--         have, none it may not), a natural key that is not the type's own, arrays of different
--         lengths. The values themselves are the contract's to check (ledger/events.py).
-- One query finds the first problem of every kind, planned once per session: its plan does not
-- depend on the store's size, and planning it for every call (the writers' force_custom_plan)
-- cost 0.9 ms of every append against 0.2 ms with the generic plan (measured, 200 calls).
CREATE FUNCTION ledger_check_append(
    p_account text,
    p_event_ids uuid[],
    p_types text[],
    p_natural_keys text[],
    p_occurred_at timestamptz[],
    p_data jsonb[]
) RETURNS void
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_kind text := ledger_caller_kind();
    v_own text;
    v_size integer := coalesce(array_length(p_types, 1), 0);
    v_found record;
BEGIN
    IF coalesce(array_length(p_event_ids, 1), 0) <> v_size
       OR coalesce(array_length(p_natural_keys, 1), 0) <> v_size
       OR coalesce(array_length(p_occurred_at, 1), 0) <> v_size
       OR coalesce(array_length(p_data, 1), 0) <> v_size THEN
        RAISE EXCEPTION 'append to account %: the argument arrays differ in length', p_account
            USING ERRCODE = 'LG004';
    END IF;
    IF v_kind = 'dispatcher' THEN
        v_own := ledger_caller_account();
    END IF;
    -- The administrator is a member of the owner and could do anything the owner can:
    -- checking its data protects nothing (imports are checked by the contract), so it pays
    -- for the type check only.
    IF v_kind = 'admin' THEN
        SELECT 1 AS rank, u.ord, u.type INTO v_found
        FROM unnest(p_types) WITH ORDINALITY AS u(type, ord)
        WHERE NOT EXISTS (SELECT 1 FROM public.event_types et WHERE et.type = u.type)
        ORDER BY u.ord LIMIT 1;
    ELSE
        WITH t AS (
            SELECT u.ord, u.event_id, u.type, u.key, u.occurred_at, u.data, et.writer, et.keyed,
                   et.key_field, et.fields, et.required,
                   coalesce(jsonb_typeof(u.data) = 'object', false) AS is_object
            FROM unnest(p_event_ids, p_types, p_natural_keys, p_occurred_at, p_data)
                WITH ORDINALITY AS u(event_id, type, key, occurred_at, data, ord)
            LEFT JOIN public.event_types et ON et.type = u.type
        )
        SELECT p.rank, p.ord, p.type, p.problem INTO v_found FROM (
            SELECT 1 AS rank, t.ord, t.type, NULL::text AS problem FROM t WHERE t.writer IS NULL
            UNION ALL
            SELECT 2, t.ord, t.type, NULL FROM t
            WHERE t.writer IS NOT NULL
              AND (v_kind IS DISTINCT FROM t.writer
                   OR (t.writer = 'dispatcher' AND p_account IS DISTINCT FROM v_own))
            UNION ALL
            SELECT 3, t.ord, t.type, 'has no event_id or no occurred_at' FROM t
            WHERE t.event_id IS NULL OR t.occurred_at IS NULL
            UNION ALL
            SELECT 3, t.ord, t.type, CASE
                WHEN NOT t.is_object THEN 'data is not a JSON object'
                WHEN NOT t.data ?& t.required THEN 'data lacks the field '
                    || (SELECT f FROM unnest(t.required) AS f WHERE NOT t.data ? f LIMIT 1)
                ELSE 'data has the unknown field '
                    || (SELECT min(k) FROM jsonb_object_keys(t.data - t.fields) AS k)
                END
            FROM t
            WHERE t.writer IS NOT NULL
              AND (NOT t.is_object OR NOT t.data ?& t.required
                   OR (t.data - t.fields) <> '{}'::jsonb)
            UNION ALL
            -- The natural key is the type's own: a key of another type, or of another value,
            -- would make a later event of that key look like a duplicate and be dropped.
            SELECT 4, t.ord, t.type, 'natural_key is not the key of its data' FROM t
            WHERE t.writer IS NOT NULL AND t.is_object AND CASE
                WHEN NOT t.keyed THEN t.key IS NOT NULL
                WHEN t.key_field IS NOT NULL THEN t.key IS DISTINCT FROM
                    t.type || ':' || t.key_field || '='
                    || ledger_json_text(t.data ->> t.key_field)
                ELSE t.key IS NULL OR NOT starts_with(t.key, t.type || ':')
            END
        ) AS p ORDER BY p.rank, p.ord LIMIT 1;
    END IF;
    IF FOUND AND v_found.rank = 1 THEN
        RAISE EXCEPTION 'event % of the append to account %: type % is not an event type',
            v_found.ord, p_account, coalesce(quote_literal(v_found.type), 'NULL')
            USING ERRCODE = 'LG004';
    ELSIF FOUND AND v_found.rank = 2 THEN
        RAISE EXCEPTION 'role % may not append % to account %', session_user, v_found.type,
            p_account USING ERRCODE = 'LG003';
    ELSIF FOUND THEN
        RAISE EXCEPTION 'event % (%) of the append to account %: %', v_found.ord,
            v_found.type, p_account, v_found.problem USING ERRCODE = 'LG004';
    END IF;
    -- A dispatcher releases a reservation only once it has expired (by this server's clock,
    -- give or take a second): an early IntentExpired would free room for an order still live.
    IF v_kind = 'dispatcher' AND 'IntentExpired' = ANY (p_types) THEN
        SELECT t.ord INTO v_found
        FROM unnest(p_types, p_data) WITH ORDINALITY AS t(type, data, ord)
        WHERE t.type = 'IntentExpired' AND NOT EXISTS (
            SELECT 1 FROM public.events e
            WHERE e.account = p_account
              AND e.natural_key = 'IntentIssued:intent_id='
                                  || ledger_json_text(t.data ->> 'intent_id')
              AND (e.data ->> 'expires_at')::timestamptz <= now() + interval '1 second')
        ORDER BY t.ord LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'role % may not append IntentExpired to account % before the '
                'intent has expired (event %)', session_user, p_account, v_found.ord
                USING ERRCODE = 'LG003';
        END IF;
    END IF;
END
$$;

-- Lock the account's stream head until the caller's transaction ends, and return it: what a
-- dispatcher does before deciding, for whoever may append to the account.
--   LG001 unknown account (or not the caller's)   LG003 the caller may not append here
CREATE FUNCTION ledger_lock_head(p_account text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_kind text := ledger_caller_kind();
    v_head bigint;
BEGIN
    IF v_kind IS NULL OR v_kind IN ('relay', 'projector')
       OR (v_kind = 'dispatcher' AND p_account IS DISTINCT FROM ledger_caller_account()) THEN
        RAISE EXCEPTION 'role % may not lock the stream of account %', session_user, p_account
            USING ERRCODE = 'LG003';
    END IF;
    SELECT s.head INTO v_head FROM public.streams s WHERE s.account = p_account FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', p_account USING ERRCODE = 'LG001';
    END IF;
    RETURN v_head;
END
$$;

-- 8. The append, as in 0005 but run as the owner after ledger_check_append, recording who
-- appended. The filtered path (0004) is redefined only to write recorded_by.
CREATE OR REPLACE FUNCTION ledger_append_filtered(
    p_account text,
    p_head bigint,
    p_event_ids uuid[],
    p_types text[],
    p_natural_keys text[],
    p_occurred_at timestamptz[],
    p_data jsonb[]
) RETURNS uuid[]
LANGUAGE sql
SET search_path = pg_catalog, public
AS $$
    WITH incoming AS (
        SELECT t.*,
               row_number() OVER (PARTITION BY t.event_id ORDER BY t.ord) AS id_rank,
               row_number() OVER (PARTITION BY t.natural_key ORDER BY t.ord) AS key_rank
        FROM unnest(p_event_ids, p_types, p_natural_keys, p_occurred_at, p_data)
            WITH ORDINALITY AS t(event_id, type, natural_key, occurred_at, data, ord)
    ), stored_ids AS (
        SELECT s.event_id FROM unnest(p_event_ids) AS k(event_id)
        CROSS JOIN LATERAL (SELECT e.event_id FROM public.events e
                            WHERE e.account = p_account AND e.event_id = k.event_id
                            LIMIT 1) AS s
    ), stored_keys AS (
        SELECT s.natural_key FROM unnest(p_natural_keys) AS k(natural_key)
        CROSS JOIN LATERAL (SELECT e.natural_key FROM public.events e
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
        INSERT INTO public.events (account, sequence, event_id, type, natural_key, occurred_at,
                                   data, recorded_by)
        SELECT p_account, f.sequence, f.event_id, f.type, f.natural_key, f.occurred_at, f.data,
               session_user
        FROM fresh f
        RETURNING event_id, sequence
    )
    SELECT coalesce(array_agg(event_id ORDER BY sequence), '{}') FROM inserted
$$;

CREATE OR REPLACE FUNCTION ledger_append(
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
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_size bigint := coalesce(array_length(p_event_ids, 1), 0);
BEGIN
    PERFORM ledger_check_append(p_account, p_event_ids, p_types, p_natural_keys, p_occurred_at,
                                p_data);
    SELECT s.head INTO previous_head FROM public.streams s WHERE s.account = p_account
        FOR UPDATE;
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
    IF EXISTS (SELECT 1 FROM public.events e
               WHERE e.account = p_account AND e.event_id = p_event_ids[1])
       OR EXISTS (SELECT 1 FROM public.events e
                  WHERE e.account = p_account AND e.natural_key = p_natural_keys[1]) THEN
        IF (SELECT count(*) FROM unnest(p_event_ids) AS k(event_id)
            CROSS JOIN LATERAL (SELECT 1 FROM public.events e
                                WHERE e.account = p_account AND e.event_id = k.event_id
                                LIMIT 1) AS s) = v_size THEN
            RETURN;
        END IF;
        appended := ledger_append_filtered(p_account, previous_head, p_event_ids, p_types,
                                           p_natural_keys, p_occurred_at, p_data);
        IF cardinality(appended) > 0 THEN
            UPDATE public.streams SET head = previous_head + cardinality(appended)
            WHERE account = p_account;
        END IF;
        RETURN;
    END IF;

    BEGIN
        INSERT INTO public.events (account, sequence, event_id, type, natural_key, occurred_at,
                                   data, recorded_by)
        SELECT p_account, previous_head + t.ord, t.event_id, t.type, t.natural_key,
               t.occurred_at, t.data, session_user
        FROM unnest(p_event_ids, p_types, p_natural_keys, p_occurred_at, p_data)
            WITH ORDINALITY AS t(event_id, type, natural_key, occurred_at, data, ord);
        appended := p_event_ids;
    EXCEPTION WHEN unique_violation THEN
        appended := ledger_append_filtered(p_account, previous_head, p_event_ids, p_types,
                                           p_natural_keys, p_occurred_at, p_data);
    END;
    IF cardinality(appended) > 0 THEN
        UPDATE public.streams SET head = previous_head + cardinality(appended)
        WHERE account = p_account;
    END IF;
END
$$;

-- 9. Row-level security, per role. The owner (the functions above, and the administrator as
-- its member) sees every row; the job roles see every account, the account roles their own.
CREATE POLICY streams_owner ON streams TO @owner@ USING (true) WITH CHECK (true);
CREATE POLICY streams_jobs ON streams TO @ingest@, @relay@, @projector@, @operator@
    USING (true);
CREATE POLICY streams_account ON streams TO @dispatchers@
    USING (account = (SELECT ledger_caller_account()));

CREATE POLICY events_owner ON events TO @owner@ USING (true) WITH CHECK (true);
CREATE POLICY events_jobs ON events TO @ingest@, @relay@, @projector@, @operator@
    USING (true);
CREATE POLICY events_account ON events TO @dispatchers@
    USING (account = (SELECT ledger_caller_account()));

CREATE POLICY relay_positions_owner ON relay_positions TO @owner@
    USING (true) WITH CHECK (true);
CREATE POLICY relay_positions_jobs ON relay_positions
    TO @ingest@, @relay@, @projector@, @operator@ USING (true) WITH CHECK (true);
CREATE POLICY relay_positions_account ON relay_positions TO @dispatchers@
    USING (account = (SELECT ledger_caller_account()));

CREATE POLICY projection_accounts_owner ON projection_accounts TO @owner@
    USING (true) WITH CHECK (true);
CREATE POLICY projection_accounts_jobs ON projection_accounts
    TO @ingest@, @relay@, @projector@, @operator@ USING (true) WITH CHECK (true);
CREATE POLICY projection_accounts_account ON projection_accounts TO @dispatchers@
    USING (account = (SELECT ledger_caller_account()));

CREATE POLICY projection_positions_owner ON projection_positions TO @owner@
    USING (true) WITH CHECK (true);
CREATE POLICY projection_positions_jobs ON projection_positions
    TO @ingest@, @relay@, @projector@, @operator@ USING (true) WITH CHECK (true);
CREATE POLICY projection_positions_account ON projection_positions TO @dispatchers@
    USING (account = (SELECT ledger_caller_account()));

CREATE POLICY projection_pending_owner ON projection_pending TO @owner@
    USING (true) WITH CHECK (true);
CREATE POLICY projection_pending_jobs ON projection_pending
    TO @ingest@, @relay@, @projector@, @operator@ USING (true) WITH CHECK (true);
CREATE POLICY projection_pending_account ON projection_pending TO @dispatchers@
    USING (account = (SELECT ledger_caller_account()));

-- 10. Privileges: reads for every job, writes only where the job is (the write policies above
-- are bounded by these grants).
GRANT SELECT ON streams, events, relay_positions, projection_accounts, projection_positions,
    projection_pending TO @dispatchers@, @ingest@, @relay@, @projector@, @operator@;
GRANT SELECT ON ledger_instance, event_types
    TO @dispatchers@, @ingest@, @relay@, @projector@, @operator@;
GRANT INSERT, UPDATE ON relay_positions TO @relay@;
GRANT INSERT, UPDATE, DELETE ON projection_accounts, projection_positions, projection_pending
    TO @projector@;

-- Every job may call the two entry points: they themselves refuse what the caller may not do,
-- with a message that names the role, the account and the type.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_caller_account() TO @dispatchers@;
GRANT EXECUTE ON FUNCTION ledger_append(text, bigint, uuid[], text[], text[], timestamptz[],
    jsonb[]) TO @dispatchers@, @ingest@, @relay@, @projector@, @operator@;
GRANT EXECUTE ON FUNCTION ledger_lock_head(text)
    TO @dispatchers@, @ingest@, @relay@, @projector@, @operator@;
