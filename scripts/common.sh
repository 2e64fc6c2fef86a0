# Shared settings for leadflow's scripts; source it, do not run it.
# Everything slow to rebuild lives outside the clone, at stable paths, so reruns and CI reuse it.

LEADFLOW_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LEADFLOW_CACHE=${LEADFLOW_CACHE:-$HOME/.cache/leadflow}
export LEADFLOW_TOOLS_DIR=$LEADFLOW_CACHE
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$LEADFLOW_CACHE/target}
KAFKA_VERSION=4.3.1
APICURIO_VERSION=3.3.3
PYTHON_BIN=$LEADFLOW_CACHE/venv/bin/python
CONFLUENT_KAFKA_VERSION=2.16.0

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# True if something listens on 127.0.0.1:$1.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits until 127.0.0.1:$1 accepts connections; $2 names it, $3 is a log to show on failure.
wait_for_port() {
  local deadline=$((SECONDS + 60))
  until port_busy "$1"; do
    if ((SECONDS > deadline)); then
      [ -n "${3:-}" ] && tail -n 20 "$3" >&2
      die "$2 did not start listening on port $1 within 60s"
    fi
    sleep 0.2
  done
}
