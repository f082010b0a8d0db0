-- Why: isolation is enforced by PostgreSQL itself (docs/design.md invariant 1). Two group roles hold
-- every grant, so a new account or service login needs no per-database grant of its own:
--   ledger__accounts  every account login role `ledger_NAME` is a member (created by
--                     `ledger accounts add`); row-level security limits it to its own rows.
--   ledger__service   the login of the processes that handle every account (ingest, relay,
--                     projector); it owns no table.
-- The double underscore cannot occur at the start of an account name (names start with a letter),
-- so no account role can ever be confused with these.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger__accounts') THEN
        CREATE ROLE ledger__accounts NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger__service') THEN
        CREATE ROLE ledger__service NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;

-- The account a session may see: its login role is `ledger_NAME`. Only members of
-- ledger__accounts get the policies that use this, and only `ledger accounts add` makes members.
CREATE FUNCTION ledger_session_account() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT substr(current_user::text, 8) $$;
