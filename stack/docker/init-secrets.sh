#!/bin/sh
# One-shot service `kafka-secrets` of docker-compose.yml (image apache/kafka, run as root): gives
# the compose stack its Kafka passwords, generated at random on the first `docker compose up` and
# kept in its volumes from then on. No password is written in the repository or the compose file;
# production provides its own password files instead.
#
#   $KAFKA_SECRETS/ledger-broker.password      inter-broker SCRAM user          owner appuser, 0600
#   $KAFKA_SECRETS/ledger-controller.password  controller listener PLAIN user   owner appuser, 0600
#   $KAFKA_SECRETS/ledger-admin.password       super user of `ledger migrate`   owner appuser, 0600
#   $LEDGER_SECRETS/kafka_ledger-admin.password  the same password, where the ledger reads it
#                                              (LEDGER_SECRETS_DIR)    owner LEDGER_UID, 0600
#
# The brokers store ledger-broker's and ledger-admin's SCRAM credentials when they format their
# storage on the first start, so an existing password is never replaced: `docker compose down -v`
# removes the brokers' data and these files together.
set -eu

: "${LEDGER_UID:?set LEDGER_UID, the uid the ledger image runs as (Dockerfile)}"
LEDGER_GID="${LEDGER_GID:-$LEDGER_UID}"
KAFKA_SECRETS="${KAFKA_SECRETS:-/kafka-secrets}"
LEDGER_SECRETS="${LEDGER_SECRETS:-/secrets}"
KAFKA_OWNER="${KAFKA_OWNER:-appuser}"

umask 077

# Write a new random password (32 letters and digits) to FILE unless it already holds one.
generate() {
  [ -s "$1" ] && return 0
  tr -dc 'A-Za-z0-9' < /dev/urandom | head -c 32 > "$1.tmp"
  echo >> "$1.tmp"
  grep -qE '^[A-Za-z0-9]{32}$' "$1.tmp" || { echo "init-secrets: could not generate $1" >&2; exit 1; }
  mv "$1.tmp" "$1"
  echo "init-secrets: generated $1"
}

# Copy SOURCE to TARGET, owned by OWNER, mode 0600, replacing TARGET at once.
install_secret() {
  cp "$1" "$2.tmp"
  chown "$3" "$2.tmp"
  chmod 0600 "$2.tmp"
  mv "$2.tmp" "$2"
}

mkdir -p "$KAFKA_SECRETS" "$LEDGER_SECRETS"
for user in ledger-broker ledger-controller ledger-admin; do
  generate "$KAFKA_SECRETS/$user.password"
  chown "$KAFKA_OWNER" "$KAFKA_SECRETS/$user.password"
  chmod 0600 "$KAFKA_SECRETS/$user.password"
done
chown "$KAFKA_OWNER" "$KAFKA_SECRETS"
chmod 0700 "$KAFKA_SECRETS"

install_secret "$KAFKA_SECRETS/ledger-admin.password" \
  "$LEDGER_SECRETS/kafka_ledger-admin.password" "$LEDGER_UID:$LEDGER_GID"
# The ledger writes the other principals' and roles' password files here (`ledger migrate`,
# `ledger accounts add`) and keeps the directory 0700 (ledger/secrets.py).
chown "$LEDGER_UID:$LEDGER_GID" "$LEDGER_SECRETS"
chmod 0700 "$LEDGER_SECRETS"
echo "init-secrets: Kafka passwords in place"
