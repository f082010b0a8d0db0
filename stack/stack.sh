#!/usr/bin/env bash
# The local stack: PostgreSQL (Debian's server binaries) and Kafka in KRaft mode (jars from Maven
# Central), one node or, with LEDGER_KAFKA_BROKERS=3, three replicating nodes; all on 127.0.0.1,
# data and logs under .stack/. No Docker on our machines. Kafka authenticates every client
# (SASL/SCRAM-SHA-512) and authorizes by ACL (docs/kafka.md); the administrator's password is
# made once into LEDGER_SECRETS_DIR/kafka_ledger-admin.password.
#
#   stack/stack.sh install        PostgreSQL from apt if missing; Kafka jars through mvn
#   stack/stack.sh up             start both (idempotent) and wait until each really answers
#   stack/stack.sh down           stop both; leaves no process of the stack running
#   stack/stack.sh status         one line per service
#   stack/stack.sh clean          stop both and delete their data
#   stack/stack.sh pg-stop [--immediate] | pg-start | kafka-kill [ID] | kafka-stop [ID] | kafka-start [ID]
#                                 single-service control (one Kafka node by id, else every one),
#                                 for the restart and crash tests
#
# No `trust` anywhere: local connections authenticate by peer (the server's own OS user only),
# TCP by SCRAM. Run as root, PostgreSQL runs as `postgres` with its data and socket in a
# directory that user owns (under its home), so no directory above the repository is opened up.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK="$ROOT/.stack"
if [ "$(id -u)" = 0 ]; then
  # One directory per checkout, so two clones on one machine keep their stacks apart.
  PG_DIR="/var/lib/postgresql/ledger-stack/$(printf %s "$ROOT" | sha1sum | cut -c1-12)"
  PG_SUPERUSER=postgres
else
  PG_DIR="$STACK/pg"
  PG_SUPERUSER="$(id -un)"
fi
PG_DATA="$PG_DIR/data"
PG_RUN="$PG_DIR/run"
PG_LOG="$PG_DIR/postgres.log"
PG_PORT="${LEDGER_PG_PORT:-55432}"
# LEDGER_KAFKA_DIR lets tests run a second cluster (other ports, other data) beside the first.
KAFKA_DIR="${LEDGER_KAFKA_DIR:-$STACK/kafka}"
KAFKA_LIBS="$STACK/kafka/libs"
# Node N listens on KAFKA_PORT + 2(N-1) for clients and on the next port for its quorum.
KAFKA_PORT="${LEDGER_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${LEDGER_KAFKA_CONTROLLER_PORT:-9093}"
# Seconds each service gets to answer before `up` gives up and shows its log.
PG_START_DEADLINE_S=60
KAFKA_START_DEADLINE_S=120
ADMIN_ROLE=ledger_admin
ADMIN_PASSWORD=ledger_admin
DATABASE=ledger
# Where the ledger keeps passwords (the same default as ledger/settings.py).
SECRETS_DIR="${LEDGER_SECRETS_DIR:-$HOME/.local/share/ledger/secrets}"

die() { echo "stack: $*" >&2; exit 1; }

pg_bin() {
  local bin
  for bin in /usr/lib/postgresql/*/bin; do
    [ -x "$bin/pg_ctl" ] && { echo "$bin"; return 0; }
  done
  return 1
}

# PostgreSQL refuses to run as root, so on CI and dev machines (root) it runs as `postgres`.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

install_stack() {
  if ! pg_bin >/dev/null; then
    echo "stack: installing PostgreSQL from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  command -v java >/dev/null || die "java is missing: install a Java 17 runtime"
  command -v mvn >/dev/null || die "mvn is missing: install Maven"
  if [ ! -f "$KAFKA_LIBS/.complete" ]; then
    echo "stack: fetching Kafka jars from Maven Central (stack/pom.xml)"
    mkdir -p "$KAFKA_LIBS"
    mvn -q -B -f "$ROOT/stack/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS"
    touch "$KAFKA_LIBS/.complete"
  fi
}

pg_running() { [ -f "$PG_DATA/postmaster.pid" ] && as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; }

pg_init() {
  local bin; bin="$(pg_bin)" || die "PostgreSQL is not installed: run make setup"
  if [ "$(id -u)" = 0 ]; then
    [ -d /var/lib/postgresql ] || die "/var/lib/postgresql is missing: is Debian's postgresql installed?"
    # Made by the server user itself, under its own home: nothing above it changes.
    runuser -u postgres -- mkdir -p -m 0700 "$PG_DIR" "$PG_RUN"
  else
    mkdir -p -m 0700 "$PG_DIR" "$PG_RUN"
  fi
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$PG_DATA" -U "$PG_SUPERUSER" --auth-local=peer \
      --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$PG_DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_RUN'
max_connections = 300
shared_buffers = 256MB
password_encryption = scram-sha-256
EOF
  fi
}

pg_up() {
  pg_init
  if ! pg_running; then
    as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -o "-p $PG_PORT" start >/dev/null \
      || { tail -n 30 "$PG_LOG" >&2; die "PostgreSQL did not start; the log's last lines are above"; }
  fi
  local deadline=$((SECONDS + PG_START_DEADLINE_S))
  until as_pg psql -h "$PG_RUN" -p "$PG_PORT" -U "$PG_SUPERUSER" -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      tail -n 30 "$PG_LOG" >&2
      die "PostgreSQL did not answer within ${PG_START_DEADLINE_S}s; the log's last lines are above"
    fi
    sleep 0.5
  done
  # The administrative role owns the database but is not a superuser: row-level security and the
  # append-only trigger then bind it like every other role. Its password goes over as a SCRAM
  # verifier computed here, never as text that a failed statement could log.
  local verifier
  verifier="$(admin_verifier)"
  as_pg psql -h "$PG_RUN" -p "$PG_PORT" -U "$PG_SUPERUSER" -d postgres -q -v ON_ERROR_STOP=1 <<EOF
SELECT 'CREATE ROLE $ADMIN_ROLE LOGIN CREATEROLE CREATEDB PASSWORD ''$verifier'''
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ADMIN_ROLE') \gexec
SELECT 'CREATE DATABASE $DATABASE OWNER $ADMIN_ROLE'
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$DATABASE') \gexec
-- Lets the administrator end account and service sessions, e.g. to drop a test database, and
-- start a checkpoint, so that benchmarks measure each phase from the same point.
GRANT pg_signal_backend, pg_checkpoint TO $ADMIN_ROLE;
EOF
}

admin_verifier() {
  local python="$ROOT/.venv/bin/python"
  [ -x "$python" ] || die "the virtualenv is missing: run make setup"
  "$python" -c 'import sys; from ledger.roles import scram_verifier; print(scram_verifier(sys.argv[1]))' \
    "$ADMIN_PASSWORD"
}

pg_stop() {
  local mode="${1:-fast}"
  if pg_running; then
    as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" -m "$mode" -w stop >/dev/null
  fi
}

# -- Kafka: N combined broker+controller nodes (KRaft), SCRAM for clients, ACLs ----------------

node_port() { echo $((KAFKA_PORT + 2 * ($1 - 1))); }
node_controller_port() { echo $((KAFKA_CONTROLLER_PORT + 2 * ($1 - 1))); }
node_dir() { echo "$KAFKA_DIR/node-$1"; }
node_pid() {
  local f; f="$(node_dir "$1")/kafka.pid"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
}
nodes() { seq 1 "$(kafka_brokers)"; }

# The count the cluster was formatted with wins; asking for another is an error, not a surprise.
kafka_brokers() {
  local stored=""
  [ -f "$KAFKA_DIR/brokers" ] && stored="$(cat "$KAFKA_DIR/brokers")"
  if [ -n "$stored" ]; then
    if [ -n "${LEDGER_KAFKA_BROKERS:-}" ] && [ "$LEDGER_KAFKA_BROKERS" != "$stored" ]; then
      die "the local Kafka was formatted with $stored broker(s), not $LEDGER_KAFKA_BROKERS: run 'stack/stack.sh clean' first"
    fi
    echo "$stored"
    return 0
  fi
  case "${LEDGER_KAFKA_BROKERS:-1}" in
    1|3) echo "${LEDGER_KAFKA_BROKERS:-1}" ;;
    *) die "LEDGER_KAFKA_BROKERS=${LEDGER_KAFKA_BROKERS}: expected 1 or 3" ;;
  esac
}

# A password file readable by its owner only; made once, reused afterwards.
password_file() {
  local path="$1"
  if [ ! -s "$path" ]; then
    mkdir -p -m 0700 "$(dirname "$path")"
    (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$path"; echo >>"$path")
  fi
  head -n 1 "$path"
}

kafka_init() {
  [ -f "$KAFKA_LIBS/.complete" ] || die "Kafka jars are missing: run make setup"
  [ -n "$KAFKA_DIR" ] || die "KAFKA_DIR is empty"
  local count; count="$(kafka_brokers)"
  mkdir -p -m 0700 "$KAFKA_DIR/secrets"
  local broker_pw controller_pw admin_pw
  broker_pw="$(password_file "$KAFKA_DIR/secrets/ledger-broker.password")"
  controller_pw="$(password_file "$KAFKA_DIR/secrets/ledger-controller.password")"
  admin_pw="$(password_file "$SECRETS_DIR/kafka_ledger-admin.password")"
  local replicas=$(( count < 3 ? count : 3 )) min_isr=$(( count < 2 ? count : 2 ))
  local voters="" id
  for id in $(seq 1 "$count"); do
    voters="${voters:+$voters,}$id@127.0.0.1:$(node_controller_port "$id")"
  done
  cat >"$KAFKA_DIR/log4j.properties" <<LOG4J
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
LOG4J
  local cluster_id=""
  [ -f "$KAFKA_DIR/cluster.id" ] && cluster_id="$(cat "$KAFKA_DIR/cluster.id")"
  if [ -z "$cluster_id" ]; then
    cluster_id="$(java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    echo "$cluster_id" >"$KAFKA_DIR/cluster.id"
  fi
  for id in $(seq 1 "$count"); do
    local dir; dir="$(node_dir "$id")"
    mkdir -p "$dir/data"
    # It holds passwords: the owner's only.
    (umask 077; cat >"$dir/server.properties" <<PROPERTIES
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=CLIENT://127.0.0.1:$(node_port "$id"),CONTROLLER://127.0.0.1:$(node_controller_port "$id")
advertised.listeners=CLIENT://127.0.0.1:$(node_port "$id")
listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
inter.broker.listener.name=CLIENT
controller.listener.names=CONTROLLER
# Clients and brokers authenticate with SCRAM-SHA-512 (the credentials live in the metadata log).
listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="ledger-broker" password="$broker_pw";
# The quorum cannot use SCRAM (its credentials live in the log the quorum serves): PLAIN.
listener.name.controller.sasl.enabled.mechanisms=PLAIN
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="ledger-controller" password="$controller_pw" user_ledger-controller="$controller_pw";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:ledger-broker;User:ledger-controller;User:ledger-admin
log.dirs=$dir/data
num.partitions=6
auto.create.topics.enable=false
default.replication.factor=$replicas
min.insync.replicas=$min_isr
unclean.leader.election.enable=false
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
# Lets tests that SIGKILL consumers use short sessions, so a restarted one rejoins quickly.
group.min.session.timeout.ms=1000
PROPERTIES
    )
    if [ ! -f "$dir/data/meta.properties" ]; then
      java -Dlog4j.configuration="file:$KAFKA_DIR/log4j.properties" -cp "$KAFKA_LIBS/*" \
        kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" \
        --add-scram "SCRAM-SHA-512=[name=ledger-broker,password=$broker_pw]" \
        --add-scram "SCRAM-SHA-512=[name=ledger-admin,password=$admin_pw]" \
        --ignore-formatted >/dev/null
    fi
  done
  echo "$count" >"$KAFKA_DIR/brokers"
}

kafka_start() {
  local only="${1:-}" id dir
  kafka_init
  for id in $(nodes); do
    [ -n "$only" ] && [ "$only" != "$id" ] && continue
    if ! node_pid "$id" >/dev/null; then
      dir="$(node_dir "$id")"
      nohup java -Xms512m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$KAFKA_DIR/log4j.properties" -cp "$KAFKA_LIBS/*" \
        kafka.Kafka "$dir/server.properties" >>"$dir/server.log" 2>&1 </dev/null &
      echo $! >"$dir/kafka.pid"
    fi
  done
}

kafka_wait() {
  local only="${1:-}" id
  local python="$ROOT/.venv/bin/python"
  [ -x "$python" ] || die "the virtualenv is missing: run make setup"
  for id in $(nodes); do
    [ -n "$only" ] && [ "$only" != "$id" ] && continue
    if ! "$python" "$ROOT/stack/probe_kafka.py" "127.0.0.1:$(node_port "$id")" \
        "$KAFKA_START_DEADLINE_S" "$SECRETS_DIR/kafka_ledger-admin.password"; then
      tail -n 30 "$(node_dir "$id")/server.log" >&2
      die "Kafka node $id did not answer a metadata request within ${KAFKA_START_DEADLINE_S}s; the log's last lines are above"
    fi
  done
}

kafka_stop() {
  local signal="${1:-TERM}" only="${2:-}" id pid pidfile deadline
  # A stack from before the node layout kept one broker's pid here.
  if [ -f "$KAFKA_DIR/kafka.pid" ]; then
    kill "-$signal" "$(cat "$KAFKA_DIR/kafka.pid")" 2>/dev/null || true
    rm -f "$KAFKA_DIR/kafka.pid"
  fi
  [ -f "$KAFKA_DIR/brokers" ] || return 0
  for id in $(nodes); do
    [ -n "$only" ] && [ "$only" != "$id" ] && continue
    pidfile="$(node_dir "$id")/kafka.pid"
    pid="$(node_pid "$id")" || { rm -f "$pidfile"; continue; }
    kill "-$signal" "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null; do
      if [ $SECONDS -ge $deadline ]; then kill -KILL "$pid" 2>/dev/null || true; fi
      sleep 0.2
    done
    rm -f "$pidfile"
  done
}

status() {
  if pg_running; then echo "postgres: running on 127.0.0.1:$PG_PORT"; else echo "postgres: stopped"; fi
  if [ ! -f "$KAFKA_DIR/brokers" ]; then echo "kafka: not set up"; return 0; fi
  local id
  for id in $(nodes); do
    if node_pid "$id" >/dev/null; then echo "kafka $id: running on 127.0.0.1:$(node_port "$id")"
    else echo "kafka $id: stopped"; fi
  done
}

case "${1:-}" in
  install) install_stack ;;
  up) pg_up; kafka_start; kafka_wait; status ;;
  down) kafka_stop TERM; pg_stop fast; status ;;
  status) status ;;
  clean)
    kafka_stop TERM; pg_stop fast
    # The administrator's password goes with the cluster that knew it.
    rm -rf "$PG_DIR" "$KAFKA_DIR"/node-* "$KAFKA_DIR/data" "$KAFKA_DIR/brokers" \
      "$KAFKA_DIR/cluster.id" "$KAFKA_DIR/secrets" "$SECRETS_DIR/kafka_ledger-admin.password"
    status ;;
  pg-stop) if [ "${2:-}" = --immediate ]; then pg_stop immediate; else pg_stop fast; fi ;;
  pg-start) pg_up ;;
  kafka-kill) kafka_stop KILL "${2:-}" ;;
  kafka-stop) kafka_stop TERM "${2:-}" ;;
  kafka-start) kafka_start "${2:-}"; kafka_wait "${2:-}" ;;
  *) echo "usage: $0 install|up|down|status|clean|pg-stop [--immediate]|pg-start|kafka-kill [ID]|kafka-stop [ID]|kafka-start [ID]" >&2
     exit 2 ;;
esac
