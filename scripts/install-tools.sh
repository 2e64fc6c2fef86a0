#!/usr/bin/env bash
# Installs what leadflow's build, demo and tests need, skipping what is already there:
#   - Debian packages for native builds (libclang-dev for rocksdb; libssl-dev, pkg-config and
#     cmake for librdkafka with TLS; a JDK and Maven to fetch and run Kafka and to build the
#     Kafka Streams twin; promtool, from `prometheus`, to check the alert rules),
#   - Apache Kafka (pinned, from Maven Central) and, unless --no-apicurio, Apicurio Registry,
#     both into $LEADFLOW_CACHE (scripts/kafka.sh),
#   - unless --no-python, a Python venv with the official Confluent client (for the
#     compatibility tests),
#   - unless --no-twin, the Kafka Streams twin (benches/peers/kafka-streams, built with Maven
#     into $LEADFLOW_CACHE/peers/kafka-streams; its equivalence test and the e2e bench run it).
# Usage: scripts/install-tools.sh [--no-python] [--no-apicurio] [--no-twin]
set -euo pipefail
source "$(dirname "$0")/common.sh"

want_python=1
want_apicurio=1
want_twin=1
for arg in "$@"; do
  case "$arg" in
    --no-python) want_python=0 ;;
    --no-apicurio) want_apicurio=0 ;;
    --no-twin) want_twin=0 ;;
    *) die "usage: $0 [--no-python] [--no-apicurio] [--no-twin]" ;;
  esac
done

missing=()
for pkg in libclang-dev libssl-dev pkg-config cmake; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
# A JDK, not only a JRE: the Kafka Streams twin is compiled here.
command -v javac >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "cannot install ${missing[*]}; install them by hand and rerun"
fi
# promtool checks the alert rules (tests/observability.rs); only it is used, without the
# exporters Debian recommends.
if ! command -v promtool >/dev/null 2>&1; then
  say "installing promtool (Debian package prometheus)"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || die "cannot install prometheus (for promtool); install it by hand and rerun"
fi

"$LEADFLOW_ROOT/scripts/kafka.sh" install
[ "$want_apicurio" = 1 ] && "$LEADFLOW_ROOT/scripts/kafka.sh" install-apicurio
# Builds only when its sources changed since the last build.
[ "$want_twin" = 1 ] && "$LEADFLOW_ROOT/benches/peers/kafka-streams/run.sh" --build

if [ "$want_python" = 1 ]; then
  if ! "$PYTHON_BIN" -c "from confluent_kafka.schema_registry.avro import AvroSerializer" 2>/dev/null; then
    say "creating the Python venv with confluent-kafka $CONFLUENT_KAFKA_VERSION"
    python3 -m venv "$LEADFLOW_CACHE/venv" || die "python3 -m venv failed (apt-get install python3-venv?)"
    "$LEADFLOW_CACHE/venv/bin/pip" install --quiet --disable-pip-version-check \
      "confluent-kafka[avro,schemaregistry]==$CONFLUENT_KAFKA_VERSION" \
      || die "cannot pip install confluent-kafka"
  fi
fi
say "tools ready: Kafka $KAFKA_VERSION$([ "$want_apicurio" = 1 ] && echo ", Apicurio $APICURIO_VERSION")$([ "$want_twin" = 1 ] && echo ", the Kafka Streams twin")$([ "$want_python" = 1 ] && echo ", $PYTHON_BIN")"
