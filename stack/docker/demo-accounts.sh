#!/bin/sh
# One-shot service `accounts` of docker-compose.yml (the ledger image): the demo's two accounts,
# as `make demo` creates them: large (5 positions, $10,000) and tiny (1 position, $2,000).
# Idempotent: `ledger accounts add` keeps an existing account and its role's password, and limits
# are set only while the store holds none for the account, so limits an operator changed since
# survive the next `docker compose up`.
set -eu

history="$(mktemp)"
trap 'rm -f "$history"' EXIT

# account NAME MAX_POSITIONS MAX_EXPOSURE
account() {
  ledger accounts add "$1"
  ledger export --account "$1" > "$history"
  if grep -q '"type":"LimitsSet"' "$history"; then
    echo "$1: has limits already; left as they are"
  else
    ledger limits set "$1" --max-positions "$2" --max-exposure "$3"
  fi
}

account large 5 10000
account tiny 1 2000
