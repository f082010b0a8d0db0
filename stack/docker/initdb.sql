-- The administrative role of the ledger is not a superuser, as on the local stack (stack.sh):
-- row-level security and the append-only triggers then bind it like every other role.
CREATE ROLE ledger_admin LOGIN CREATEROLE CREATEDB PASSWORD 'ledger_admin';
CREATE DATABASE ledger OWNER ledger_admin;
GRANT pg_signal_backend, pg_checkpoint TO ledger_admin;
