#!/usr/bin/env bash
# Entry point of one Kafka node of docker-compose.yml (image apache/kafka, run as its `appuser`):
# a combined KRaft broker + controller, configured as docs/design.md and the compose file say.
#
#  1. Writes server.properties from the KAFKA_CFG_* variables: the name after the prefix,
#     lower-cased, with "_" read as ".", "__" as "_" and "___" as "-" (the apache/kafka image's
#     convention), e.g. KAFKA_CFG_NUM_PARTITIONS=6 -> num.partitions=6. Then it adds what holds
#     passwords, read from the files the `kafka-secrets` service generated (LEDGER_KAFKA_SECRETS):
#     the JAAS settings of the listeners (SCRAM as ledger-broker between brokers, PLAIN as
#     ledger-controller towards the controllers) and admin-client.properties, which the
#     healthcheck uses to log in as ledger-admin. Both files are 0600.
#  2. Formats the storage on the first start only (no meta.properties yet), with the SCRAM users
#     ledger-broker and ledger-admin: KRaft keeps SCRAM credentials in the metadata log, so they
#     must be in it before any broker can authenticate another.
#  3. Becomes kafka-server-start.sh.
set -euo pipefail

: "${CLUSTER_ID:?set CLUSTER_ID (the same on every node)}"
: "${KAFKA_CFG_LOG_DIRS:?set KAFKA_CFG_LOG_DIRS}"
KAFKA_BIN="${LEDGER_KAFKA_HOME:-/opt/kafka}/bin"
SECRETS="${LEDGER_KAFKA_SECRETS:-/etc/kafka/secrets}"
CONFIG_DIR="${LEDGER_KAFKA_CONFIG_DIR:-/opt/kafka/config/ledger}"
SERVER_PROPERTIES="$CONFIG_DIR/server.properties"
ADMIN_PROPERTIES="$CONFIG_DIR/admin-client.properties"

die() { echo "kafka-node: $*" >&2; exit 1; }

# The first line of NAME.password; the generator writes letters and digits only, so the value is
# safe inside the quoted JAAS options and the --add-scram argument.
password() {
  local file="$SECRETS/$1.password" line
  [ -r "$file" ] || die "$file is missing or unreadable (the kafka-secrets service writes it)"
  IFS= read -r line < "$file" || true
  [[ "$line" =~ ^[A-Za-z0-9]{16,}$ ]] || die "$file: expected one line of at least 16 letters or digits"
  printf '%s' "$line"
}

# KAFKA_CFG_FOO_BAR__BAZ___QUX -> foo.bar_baz-qux
property_name() {
  local key="${1#KAFKA_CFG_}"
  key="${key,,}"
  key="${key//___/-}"
  key="${key//__/$'\x01'}"
  key="${key//_/.}"
  printf '%s' "${key//$'\x01'/_}"
}

broker_password="$(password ledger-broker)"
controller_password="$(password ledger-controller)"
admin_password="$(password ledger-admin)"

scram='org.apache.kafka.common.security.scram.ScramLoginModule required'
plain='org.apache.kafka.common.security.plain.PlainLoginModule required'

umask 077
mkdir -p "$CONFIG_DIR"
{
  echo "# Written by kafka-node.sh at every start: change docker-compose.yml, not this file."
  for name in $(compgen -e | sort); do
    [[ "$name" == KAFKA_CFG_* ]] || continue
    printf '%s=%s\n' "$(property_name "$name")" "${!name}"
  done
  # CLIENT carries clients and inter-broker traffic: this node logs in to the others as
  # ledger-broker. HOST serves only clients: the server side of SCRAM needs no options.
  printf 'listener.name.client.scram-sha-512.sasl.jaas.config=%s username="ledger-broker" password="%s";\n' \
    "$scram" "$broker_password"
  printf 'listener.name.host.scram-sha-512.sasl.jaas.config=%s;\n' "$scram"
  # PLAIN's users are listed in its JAAS entry (user_NAME), not in the metadata log the
  # controllers serve: ledger-controller is both the one user and who this node logs in as.
  printf 'listener.name.controller.plain.sasl.jaas.config=%s username="ledger-controller" password="%s" user_ledger-controller="%s";\n' \
    "$plain" "$controller_password" "$controller_password"
} > "$SERVER_PROPERTIES.tmp"
mv "$SERVER_PROPERTIES.tmp" "$SERVER_PROPERTIES"

{
  echo "security.protocol=SASL_PLAINTEXT"
  echo "sasl.mechanism=SCRAM-SHA-512"
  printf 'sasl.jaas.config=%s username="ledger-admin" password="%s";\n' "$scram" "$admin_password"
} > "$ADMIN_PROPERTIES.tmp"
mv "$ADMIN_PROPERTIES.tmp" "$ADMIN_PROPERTIES"

# log.dirs may name several directories; the first holds the metadata log and meta.properties.
data_dir="${KAFKA_CFG_LOG_DIRS%%,*}"
if [ ! -f "$data_dir/meta.properties" ]; then
  echo "kafka-node: formatting $data_dir (cluster $CLUSTER_ID) with SCRAM users ledger-broker, ledger-admin"
  "$KAFKA_BIN/kafka-storage.sh" format --config "$SERVER_PROPERTIES" --cluster-id "$CLUSTER_ID" \
    --add-scram "SCRAM-SHA-512=[name=ledger-broker,password=$broker_password]" \
    --add-scram "SCRAM-SHA-512=[name=ledger-admin,password=$admin_password]"
fi

exec "$KAFKA_BIN/kafka-server-start.sh" "$SERVER_PROPERTIES"
