#!/usr/bin/env bash
# Installs what leadflow's build, demo and tests need, skipping what is already there:
#   - Debian packages for native builds (libclang-dev for rocksdb),
#   - the tansu Kafka-compatible broker, pinned, from crates.io (~10 minutes the first time),
#   - a Python venv with the official Confluent client (for the compatibility tests).
# Usage: scripts/install-tools.sh [--no-python]
set -euo pipefail
source "$(dirname "$0")/common.sh"

want_python=1
[ "${1:-}" = "--no-python" ] && want_python=0

if ! dpkg -s libclang-dev >/dev/null 2>&1; then
  say "installing Debian packages: libclang-dev"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libclang-dev >/dev/null \
    || die "cannot install libclang-dev; install it by hand and rerun"
fi

if ! "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  say "installing the tansu $TANSU_VERSION broker into $LEADFLOW_CACHE/tools (about 10 minutes, once)"
  CARGO_TARGET_DIR=$LEADFLOW_CACHE/tansu-target \
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore \
      --root "$LEADFLOW_CACHE/tools" --quiet \
    || die "cannot install tansu $TANSU_VERSION with cargo"
fi

if [ "$want_python" = 1 ]; then
  if ! "$PYTHON_BIN" -c "from confluent_kafka.schema_registry.avro import AvroSerializer" 2>/dev/null; then
    say "creating the Python venv with confluent-kafka $CONFLUENT_KAFKA_VERSION"
    python3 -m venv "$LEADFLOW_CACHE/venv" || die "python3 -m venv failed (apt-get install python3-venv?)"
    "$LEADFLOW_CACHE/venv/bin/pip" install --quiet --disable-pip-version-check \
      "confluent-kafka[avro,schemaregistry]==$CONFLUENT_KAFKA_VERSION" \
      || die "cannot pip install confluent-kafka"
  fi
fi
say "tools ready: $TANSU_BIN$([ "$want_python" = 1 ] && echo ", $PYTHON_BIN")"
