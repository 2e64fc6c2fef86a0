#!/usr/bin/env bash
# A real single-node Apache Kafka (KRaft, broker and controller in one JVM) and Apicurio Registry,
# fetched from Maven Central into $LEADFLOW_CACHE, for tests and the local demo.
#   scripts/kafka.sh install             Kafka $KAFKA_VERSION's jars (and a log4j binding) into
#                                        $LEADFLOW_CACHE/kafka/VERSION/libs (once)
#   scripts/kafka.sh install-apicurio    Apicurio Registry $APICURIO_VERSION into
#                                        $LEADFLOW_CACHE/apicurio/VERSION (once)
#   scripts/kafka.sh start DIR PORT [--controller-port P] [--extra FILE] [--format-arg ARG]...
#                                        writes DIR/server.properties (then appends FILE's lines:
#                                        later keys win), formats DIR/data if new (with every
#                                        --format-arg, e.g. --add-scram 'SCRAM-SHA-512=[...]'),
#                                        and runs the broker in the foreground: it ends with
#                                        exec java, so the caller's child pid is the JVM's.
#                                        A restart on the same DIR reuses its controller port.
#   scripts/kafka.sh start-apicurio PORT Apicurio (in-memory storage) on PORT, in the foreground
#   scripts/kafka.sh wait PORT [SECONDS] [LOG]
#                                        waits (default 60s) until 127.0.0.1:PORT accepts
#                                        connections; shows the tail of LOG on failure
# Settings (environment): KAFKA_HEAP_OPTS (-Xms256m -Xmx768m), KAFKA_JVM_OPTS (none),
# APICURIO_HEAP_OPTS (-Xms64m -Xmx384m), APICURIO_JAVA (the first java found that is 21 or newer).
set -euo pipefail
source "$(dirname "$0")/common.sh"

KAFKA_HOME=$LEADFLOW_CACHE/kafka/$KAFKA_VERSION
APICURIO_HOME=$LEADFLOW_CACHE/apicurio/$APICURIO_VERSION
LOG4J_CONFIG=$LEADFLOW_ROOT/scripts/kafka/log4j2.properties

# Maven with its local repository inside the cache, so removing the cache makes a cold install.
# Its output (Debian's mvn prints colour codes even with -B -q) is shown only on failure.
mvn_cached() {
  local out rc=0
  out=$(mvn -B -q -f "$LEADFLOW_ROOT/scripts/kafka/pom.xml" -Dmaven.repo.local="$LEADFLOW_CACHE/m2" \
    -Dkafka.version="$KAFKA_VERSION" "$@" 2>&1) || rc=$?
  [ "$rc" = 0 ] || printf '%s\n' "$out" | sed 's/\x1b\[[0-9;]*m//g' >&2
  return "$rc"
}

install_kafka() {
  [ -f "$KAFKA_HOME/.complete" ] && return
  say "fetching Kafka $KAFKA_VERSION from Maven Central into $KAFKA_HOME/libs"
  rm -rf "$KAFKA_HOME"
  mvn_cached dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$KAFKA_HOME/libs" || die "cannot fetch Kafka $KAFKA_VERSION with mvn"
  # Both entry points must be on the classpath: the broker and the storage formatter.
  python3 - "$KAFKA_HOME/libs" <<'PY' || die "the Kafka classpath in $KAFKA_HOME/libs is incomplete"
import pathlib, sys, zipfile
wanted = {"kafka/Kafka.class", "kafka/tools/StorageTool.class"}
for jar in pathlib.Path(sys.argv[1]).glob("*.jar"):
    wanted -= set(zipfile.ZipFile(jar).namelist())
sys.exit(f"missing classes: {sorted(wanted)}" if wanted else 0)
PY
  touch "$KAFKA_HOME/.complete"
}

install_apicurio() {
  [ -f "$APICURIO_HOME/.complete" ] && return
  say "fetching Apicurio Registry $APICURIO_VERSION from Maven Central into $APICURIO_HOME"
  rm -rf "$APICURIO_HOME"
  mkdir -p "$APICURIO_HOME"
  mvn_cached dependency:copy -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
    -DoutputDirectory="$APICURIO_HOME" || die "cannot fetch Apicurio Registry $APICURIO_VERSION with mvn"
  local tarball=$APICURIO_HOME/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz
  tar -xzf "$tarball" -C "$APICURIO_HOME" || die "cannot unpack $tarball"
  rm -f "$tarball"
  [ -f "$APICURIO_HOME/quarkus-run.jar" ] || die "no quarkus-run.jar in $APICURIO_HOME"
  touch "$APICURIO_HOME/.complete"
}

# A random Kafka cluster id: 16 bytes, URL-safe base64 without padding, not starting with '-'.
cluster_id() {
  python3 -c 'import base64, os
while (u := base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")).startswith("-"): pass
print(u)'
}

start_kafka() {
  [ $# -ge 2 ] || die "usage: $0 start DIR PORT [--controller-port P] [--extra FILE] [--format-arg ARG]..."
  local dir=$1 port=$2 cport="" extra="" format_args=()
  shift 2
  while [ $# -gt 0 ]; do
    case "$1" in
      --controller-port) cport=$2; shift 2 ;;
      --extra) extra=$2; shift 2 ;;
      --format-arg) format_args+=("$2"); shift 2 ;;
      *) die "start: unknown option $1" ;;
    esac
  done
  [ -f "$KAFKA_HOME/.complete" ] || install_kafka
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -z "$extra" ] || [ -f "$extra" ] || die "no such file: $extra"

  # The KRaft quorum remembers the controller's address: a restart keeps the first one.
  if [ -f "$dir/data/meta.properties" ] && [ -f "$dir/controller.port" ]; then
    cport=$(cat "$dir/controller.port")
  elif [ -z "$cport" ]; then
    cport=$(free_port)
  fi
  echo "$cport" >"$dir/controller.port"

  cat >"$dir/server.properties" <<PROPS
# Written by scripts/kafka.sh start; rewritten on every start.
node.id=1
process.roles=broker,controller
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
controller.quorum.bootstrap.servers=127.0.0.1:$cport
log.dirs=$dir/data
auto.create.topics.enable=false
# Single-node test settings.
group.initial.rebalance.delay.ms=0
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
# After a kill -9 the controller keeps the old broker registered until its session times out
# (9s by default), and the restarted broker waits that long to register.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
PROPS
  if [ -n "$extra" ]; then
    { printf '\n# From %s (later keys win).\n' "$extra"; cat "$extra"; echo; } >>"$dir/server.properties"
  fi

  local java_opts=(-Djava.awt.headless=true "-Dlog4j2.configurationFile=$LOG4J_CONFIG")
  if [ ! -f "$dir/data/meta.properties" ]; then
    say "formatting $dir/data"
    java "${java_opts[@]}" -cp "$KAFKA_HOME/libs/*" kafka.tools.StorageTool format --standalone \
      -t "$(cluster_id)" -c "$dir/server.properties" ${format_args[@]+"${format_args[@]}"} \
      || die "cannot format $dir/data"
  fi
  # shellcheck disable=SC2086 # the options are lists of words
  exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m} ${KAFKA_JVM_OPTS:-} "${java_opts[@]}" \
    -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$dir/server.properties"
}

# Apicurio Registry 3.3 is compiled for Java 21; the machine's java is 17, with a Temurin JDK
# (25) beside it in /usr/lib/jvm.
apicurio_java() {
  local j major
  for j in ${APICURIO_JAVA:-} ${JAVA_HOME:+$JAVA_HOME/bin/java} java /usr/lib/jvm/*/bin/java; do
    command -v "$j" >/dev/null || continue
    major=$("$j" -XshowSettings:properties -version 2>&1 | awk '/java.specification.version/ {print $3}')
    if [ "${major:-0}" -ge 21 ] 2>/dev/null; then echo "$j"; return; fi
  done
  die "Apicurio Registry $APICURIO_VERSION needs Java 21 or newer: set APICURIO_JAVA to its java"
}

start_apicurio() {
  [ $# -eq 1 ] || die "usage: $0 start-apicurio PORT"
  [ -f "$APICURIO_HOME/.complete" ] || install_apicurio
  local java_bin
  java_bin=$(apicurio_java)
  cd "$APICURIO_HOME"
  # shellcheck disable=SC2086 # the options are a list of words
  exec "$java_bin" ${APICURIO_HEAP_OPTS:--Xms64m -Xmx384m} -Djava.awt.headless=true \
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$1" \
    -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port=0 -jar quarkus-run.jar
}

wait_kafka() {
  [ $# -ge 1 ] || die "usage: $0 wait PORT [SECONDS] [LOG]"
  local port=$1 seconds=60 log=""
  if [[ "${2:-}" =~ ^[0-9]+$ ]]; then seconds=$2; log=${3:-}; else log=${2:-}; fi
  local deadline=$((SECONDS + seconds))
  until port_busy "$port"; do
    if ((SECONDS > deadline)); then
      [ -n "$log" ] && [ -f "$log" ] && tail -n 30 "$log" >&2
      die "Kafka did not start listening on port $port within ${seconds}s"
    fi
    sleep 0.2
  done
}

case "${1:-}" in
  install) install_kafka ;;
  install-apicurio) install_apicurio ;;
  start) shift; start_kafka "$@" ;;
  start-apicurio) shift; start_apicurio "$@" ;;
  wait) shift; wait_kafka "$@" ;;
  *) die "usage: $0 install|install-apicurio|start DIR PORT [...]|start-apicurio PORT|wait PORT [SECONDS] [LOG]" ;;
esac
