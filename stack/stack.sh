#!/usr/bin/env bash
# The local stack: PostgreSQL (Debian's server binaries) and a single-node Kafka in KRaft mode (jars
# from Maven Central), both on 127.0.0.1, data and logs under .stack/. No Docker on our machines.
#
#   stack/stack.sh install        PostgreSQL from apt if missing; Kafka jars through mvn
#   stack/stack.sh up             start both (idempotent) and wait until each really answers
#   stack/stack.sh down           stop both; leaves no process of the stack running
#   stack/stack.sh status         one line per service
#   stack/stack.sh clean          stop both and delete their data
#   stack/stack.sh pg-stop [--immediate] | pg-start | kafka-kill | kafka-start
#                                 single-service control, for the restart and crash tests
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
KAFKA_DIR="$STACK/kafka"
KAFKA_LIBS="$KAFKA_DIR/libs"
KAFKA_LOG="$KAFKA_DIR/server.log"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
KAFKA_PORT="${LEDGER_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${LEDGER_KAFKA_CONTROLLER_PORT:-9093}"
# Seconds each service gets to answer before `up` gives up and shows its log.
PG_START_DEADLINE_S=60
KAFKA_START_DEADLINE_S=120
ADMIN_ROLE=ledger_admin
ADMIN_PASSWORD=ledger_admin
DATABASE=ledger

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

kafka_pid() { [ -f "$KAFKA_PID" ] && kill -0 "$(cat "$KAFKA_PID")" 2>/dev/null && cat "$KAFKA_PID"; }

kafka_init() {
  [ -f "$KAFKA_LIBS/.complete" ] || die "Kafka jars are missing: run make setup"
  mkdir -p "$KAFKA_DIR/data"
  cat >"$KAFKA_DIR/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=6
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
# Lets tests that SIGKILL consumers use short sessions, so a restarted one rejoins quickly.
group.min.session.timeout.ms=1000
EOF
  cat >"$KAFKA_DIR/log4j.properties" <<EOF
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
EOF
  if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
    local cluster_id
    cluster_id="$(java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    java -Dlog4j.configuration="file:$KAFKA_DIR/log4j.properties" -cp "$KAFKA_LIBS/*" \
      kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_DIR/server.properties" \
      --ignore-formatted >/dev/null
  fi
}

kafka_start() {
  kafka_init
  if ! kafka_pid >/dev/null; then
    nohup java -Xms512m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
      -Dlog4j.configuration="file:$KAFKA_DIR/log4j.properties" -cp "$KAFKA_LIBS/*" \
      kafka.Kafka "$KAFKA_DIR/server.properties" >>"$KAFKA_LOG" 2>&1 </dev/null &
    echo $! >"$KAFKA_PID"
  fi
}

kafka_wait() {
  local python="$ROOT/.venv/bin/python"
  [ -x "$python" ] || die "the virtualenv is missing: run make setup"
  if ! "$python" "$ROOT/stack/probe_kafka.py" "127.0.0.1:$KAFKA_PORT" "$KAFKA_START_DEADLINE_S"; then
    tail -n 30 "$KAFKA_LOG" >&2
    die "Kafka did not answer a metadata request within ${KAFKA_START_DEADLINE_S}s; the log's last lines are above"
  fi
}

kafka_stop() {
  local signal="${1:-TERM}" pid
  pid="$(kafka_pid)" || { rm -f "$KAFKA_PID"; return 0; }
  kill "-$signal" "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    sleep 0.2
  done
  rm -f "$KAFKA_PID"
}

status() {
  if pg_running; then echo "postgres: running on 127.0.0.1:$PG_PORT"; else echo "postgres: stopped"; fi
  if kafka_pid >/dev/null; then echo "kafka: running on 127.0.0.1:$KAFKA_PORT"; else echo "kafka: stopped"; fi
}

case "${1:-}" in
  install) install_stack ;;
  up) pg_up; kafka_start; kafka_wait; status ;;
  down) kafka_stop TERM; pg_stop fast; status ;;
  status) status ;;
  clean) kafka_stop TERM; pg_stop fast; rm -rf "$PG_DIR" "$KAFKA_DIR/data"; status ;;
  pg-stop) if [ "${2:-}" = --immediate ]; then pg_stop immediate; else pg_stop fast; fi ;;
  pg-start) pg_up ;;
  kafka-kill) kafka_stop KILL ;;
  kafka-start) kafka_start; kafka_wait ;;
  *) echo "usage: $0 install|up|down|status|clean|pg-stop [--immediate]|pg-start|kafka-kill|kafka-start" >&2; exit 2 ;;
esac
