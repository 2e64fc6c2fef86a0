#!/usr/bin/env bash
# The local stack: Apache Kafka (one KRaft node, scripts/kafka.sh) and leadflow's development
# schema registry on local ports, the contract's topics, and generated CRM traffic. Every `up`
# starts from a clean slate (broker data, schemas and processor state under $STACK_DIR).
#   scripts/stack.sh up      install what is missing, build, start broker, registry and the
#                            processor, load data, show routed leads per priority
#   scripts/stack.sh down    stop the processor, the registry and the broker
#   scripts/stack.sh status  what is running, and where
# Settings (environment): LEADFLOW_BROKER_PORT (9092), LEADFLOW_REGISTRY_PORT (8081), used if
# free, else a free port is picked; LEADFLOW_DEMO_EVENTS (20000); LEADFLOW_STACK_DIR (.stack).
set -euo pipefail
source "$(dirname "$0")/common.sh"

STACK_DIR=${LEADFLOW_STACK_DIR:-$LEADFLOW_ROOT/.stack}
LEADFLOW_BIN=$CARGO_TARGET_DIR/release/leadflow
EVENTS=${LEADFLOW_DEMO_EVENTS:-20000}

pid_alive() { [ -f "$STACK_DIR/$1.pid" ] && kill -0 "$(cat "$STACK_DIR/$1.pid")" 2>/dev/null; }

stop() {
  local name pid
  for name in processor registry kafka; do
    if pid_alive "$name"; then
      pid=$(cat "$STACK_DIR/$name.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      say "stopped $name (pid $pid)"
    fi
    rm -f "$STACK_DIR/$name.pid"
  done
}

pick_port() {
  local wanted=$1
  if port_busy "$wanted"; then free_port; else echo "$wanted"; fi
}

# Starts "$@" in the background, detached from this shell, logging to $STACK_DIR/$name.log.
start() {
  local name=$1; shift
  nohup "$@" >"$STACK_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$STACK_DIR/$name.pid"
  disown
}

status() {
  if [ -f "$STACK_DIR/env" ]; then source "$STACK_DIR/env"; fi
  for name in kafka registry processor; do
    if pid_alive "$name"; then echo "$name: running (pid $(cat "$STACK_DIR/$name.pid"))"; else echo "$name: stopped"; fi
  done
  echo "broker:   ${LEADFLOW_BOOTSTRAP_SERVERS:-?}"
  echo "registry: ${LEADFLOW_SCHEMA_REGISTRY_URL:-?}"
  echo "metrics:  ${LEADFLOW_METRICS_URL:-?}"
}

up() {
  mkdir -p "$STACK_DIR"
  stop
  "$LEADFLOW_ROOT/scripts/install-tools.sh" --no-python --no-apicurio
  say "building leadflow (release; the first build takes several minutes)"
  (cd "$LEADFLOW_ROOT" && cargo build --release --locked --quiet) || die "cargo build failed"

  local broker_port registry_port metrics_port
  broker_port=$(pick_port "${LEADFLOW_BROKER_PORT:-9092}")
  registry_port=$(pick_port "${LEADFLOW_REGISTRY_PORT:-8081}")
  metrics_port=$(pick_port "${LEADFLOW_METRICS_PORT:-9464}")
  local bootstrap="127.0.0.1:$broker_port" registry="http://127.0.0.1:$registry_port"

  rm -rf "$STACK_DIR/kafka" "$STACK_DIR/registry-data" "$STACK_DIR/state"
  say "starting Apache Kafka $KAFKA_VERSION on $bootstrap"
  start kafka "$LEADFLOW_ROOT/scripts/kafka.sh" start "$STACK_DIR/kafka" "$broker_port"
  say "starting the schema registry on $registry"
  start registry "$LEADFLOW_BIN" registry serve --addr "127.0.0.1:$registry_port" \
    --data-dir "$STACK_DIR/registry-data"
  "$LEADFLOW_ROOT/scripts/kafka.sh" wait "$broker_port" 120 "$STACK_DIR/kafka.log"
  wait_for_port "$registry_port" "the registry" "$STACK_DIR/registry.log"
  cat >"$STACK_DIR/env" <<ENV
export LEADFLOW_BOOTSTRAP_SERVERS=$bootstrap
export LEADFLOW_SCHEMA_REGISTRY_URL=$registry
export LEADFLOW_METRICS_URL=http://127.0.0.1:$metrics_port/metrics
export LEADFLOW_TOPOLOGY=$STACK_DIR/topology.yaml
ENV
  source "$STACK_DIR/env"
  # The shipped topology with the audit topic on, so that `leadflow explain` can tell why each
  # lead went where.
  sed 's/^  # audit: leads.audit$/  audit: leads.audit/' "$LEADFLOW_ROOT/topologies/lead-routing.yaml" \
    >"$LEADFLOW_TOPOLOGY"
  grep -q '^  audit: leads.audit$' "$LEADFLOW_TOPOLOGY" || die "cannot turn the audit topic on in $LEADFLOW_TOPOLOGY"

  say "creating the contract's topics"
  "$LEADFLOW_BIN" topics create >/dev/null
  # The processor runs while the traffic arrives, as in production.
  say "starting the processor (leadflow run, rules: rules/routing.rhai, audit: leads.audit)"
  (cd "$LEADFLOW_ROOT" && start processor "$LEADFLOW_BIN" run --state-dir "$STACK_DIR/state" \
    --metrics-addr "127.0.0.1:$metrics_port")
  wait_for_port "$metrics_port" "the processor" "$STACK_DIR/processor.log"
  say "generating reference data and $EVENTS contact/engagement events (2,000/s), acknowledging 90 % of the decisions"
  # One second of event time between events on average, ending before now: events ahead of
  # the processor's clock would be refused as bad_timestamp (limits.max_clock_skew).
  # As a delivery worker, gen acknowledges 90 % of the routed leads after 15s on average
  # (a few P0 ones after their 1-minute SLA), the rest never: those breach and escalate. It
  # stops once no decision came for 75s (escalations come a minute after their breach).
  local start
  start=$(date -u -d "-$((EVENTS + 600)) seconds" +%Y-%m-%dT%H:%M:%SZ)
  "$LEADFLOW_BIN" gen --seed 42 --count "$EVENTS" --duplicates 0.02 --out-of-order 0.1 \
    --late 0.01 --start "$start" --rate 2000 --quiet \
    --acks 0.9 --ack-delay 15s --ack-idle 75s
  say "waiting until the processor has read all $EVENTS events"
  local deadline=$((SECONDS + 300)) read_in=0
  while :; do
    pid_alive processor || { tail -n 30 "$STACK_DIR/processor.log" >&2; die "the processor stopped"; }
    read_in=$(curl -sf "$LEADFLOW_METRICS_URL" | awk '/^leadflow_records_in_total/ && !/input="acks"/ {s += $NF} END {print s + 0}')
    in_flight=$(curl -sf "$LEADFLOW_METRICS_URL" | awk '/^leadflow_in_flight_records/ {print $NF}')
    if [ "${read_in%.*}" -ge "$EVENTS" ] && [ "${in_flight:-1}" = "0" ]; then break; fi
    ((SECONDS > deadline)) && die "the processor read only $read_in of $EVENTS events in 300s (see $STACK_DIR/processor.log)"
    sleep 1
  done

  say "records per topic"
  "$LEADFLOW_BIN" topics stats
  for p in p0 p1 p2; do
    say "a few routed leads on leads.routed.$p"
    "$LEADFLOW_BIN" topics peek "leads.routed.$p" --limit 2 | python3 "$LEADFLOW_ROOT/scripts/show_routed.py"
  done
  say "SLA per priority (from $LEADFLOW_METRICS_URL)"
  curl -sf "$LEADFLOW_METRICS_URL" | python3 "$LEADFLOW_ROOT/scripts/sla_summary.py"
  local contact
  contact=$("$LEADFLOW_BIN" topics peek leads.routed.p0 --limit 1 | python3 -c 'import json, sys; print(json.loads(sys.stdin.readline())["key"])')
  say "why did $contact go where it went? (leadflow explain $contact --last 1)"
  "$LEADFLOW_BIN" explain "$contact" --last 1
  cat <<DONE

The local stack is up.
  broker (Kafka API):  $bootstrap
  schema registry:     $registry
  processor metrics:   $LEADFLOW_METRICS_URL  (also /healthz, /readyz)
  SLA breaches:        $LEADFLOW_BIN topics peek leads.escalations --limit 5
  logs:                $STACK_DIR/{kafka,registry,processor}.log
  use it from a shell: source $STACK_DIR/env   (then e.g. $LEADFLOW_BIN topics stats)
  more traffic:        $LEADFLOW_BIN gen --seed 43 --count 100000 --rate 2000 --mean-gap 500us --start now
  look at outputs:     $LEADFLOW_BIN topics peek leads.routed.p0 --limit 5
  a contact's trail:   $LEADFLOW_BIN explain CONTACT_ID   (from the audit topic, leads.audit)
  stop it:             make down
DONE
}

case "${1:-up}" in
  up) up ;;
  down) stop ;;
  status) status ;;
  *) die "usage: $0 up|down|status" ;;
esac
