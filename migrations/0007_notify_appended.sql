-- Why: the relay and live followers wake as soon as events commit instead of polling the store.
-- One notification per statement and account (delivered at commit; Postgres folds repeats
-- within a transaction). A lost notification only delays: the relay also polls.
CREATE FUNCTION events_notify_appended() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_account text;
BEGIN
    FOR v_account IN SELECT DISTINCT account FROM appended LOOP
        PERFORM pg_notify('ledger_appended', v_account);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify_appended AFTER INSERT ON events
    REFERENCING NEW TABLE AS appended
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify_appended();
