#!/usr/bin/env bash
# The whole test suite: installs the test prerequisites if missing (Apache Kafka, Apicurio
# Registry, the Python Confluent client), then runs every unit, topology and integration test.
set -euo pipefail
source "$(dirname "$0")/common.sh"

"$LEADFLOW_ROOT/scripts/install-tools.sh"
cd "$LEADFLOW_ROOT"
say "running the test suite (cargo test --all-targets)"
cargo test --locked --all-targets "$@"
