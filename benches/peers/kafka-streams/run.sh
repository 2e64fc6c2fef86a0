#!/usr/bin/env bash
# The Kafka Streams twin of `leadflow run` (README.md next to this file).
#   run.sh --bootstrap-servers B --schema-registry-url U --application-id A --state-dir D \
#          --topic-prefix P [--threads N] [--exactly-once] [--rules FILE] \
#          [--metrics-addr HOST:PORT] [--max-record-bytes N]
#   run.sh --build            only build (what scripts/install-tools.sh does)
# Builds itself with Maven into $LEADFLOW_CACHE/peers/kafka-streams (Maven repository
# $LEADFLOW_CACHE/m2) when its sources changed since the last build (a hash of pom.xml, src/
# and the avro/ schemas), then execs the JVM, which runs until SIGTERM.
# Settings (environment): LEADFLOW_TWIN_HEAP_OPTS (default -Xms64m -Xmx512m),
# LEADFLOW_TWIN_JVM_OPTS (none).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../../../scripts/common.sh"

build_dir=$LEADFLOW_CACHE/peers/kafka-streams
target=$build_dir/target

source_hash() {
  {
    echo "kafka $KAFKA_VERSION"
    (cd "$here" && find pom.xml src -type f | LC_ALL=C sort | xargs sha256sum)
    (cd "$LEADFLOW_ROOT" && find avro -name '*.avsc' | LC_ALL=C sort | xargs sha256sum)
  } | sha256sum | cut -d' ' -f1
}

build() {
  mkdir -p "$build_dir"
  # One build at a time (tests and benches may start several twins at once).
  exec 9>"$build_dir/build.lock"
  flock 9
  local want
  want=$(source_hash)
  if [ -f "$target/twin.jar" ] && [ "$(cat "$target/.source-hash" 2>/dev/null)" = "$want" ]; then
    exec 9>&-
    return
  fi
  command -v mvn >/dev/null 2>&1 || die "the Kafka Streams twin needs Maven (scripts/install-tools.sh installs it)"
  say "building the Kafka Streams twin (Kafka Streams $KAFKA_VERSION) into $target"
  rm -rf "$target"
  local out rc=0
  out=$(mvn -B -q -f "$here/pom.xml" -Dmaven.repo.local="$LEADFLOW_CACHE/m2" \
    -Dtwin.build.dir="$target" -Dkafka.version="$KAFKA_VERSION" package 2>&1) || rc=$?
  if [ "$rc" != 0 ]; then
    printf '%s\n' "$out" | sed 's/\x1b\[[0-9;]*m//g' >&2
    die "cannot build the Kafka Streams twin with mvn"
  fi
  echo "$want" >"$target/.source-hash"
  exec 9>&-
}

build
if [ "${1:-}" = "--build" ]; then
  exit 0
fi
# shellcheck disable=SC2086 # the options are lists of words
exec java ${LEADFLOW_TWIN_HEAP_OPTS:--Xms64m -Xmx512m} -XX:+ExitOnOutOfMemoryError \
  ${LEADFLOW_TWIN_JVM_OPTS:-} -cp "$target/twin.jar:$target/lib/*" leadflow.twin.Main \
  --rules "$LEADFLOW_ROOT/rules/routing.rhai" "$@"
