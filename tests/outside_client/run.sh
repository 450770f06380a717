#!/usr/bin/env bash
# The outside client: a Python client written from the docs alone checks the
# presence features and the server API against a real broker
# (docs/conformance.md, "Outside client (presence and server API)").
#
# Installs the msgpack Python package when it is missing (and only then).
# Builds the tickwire binary unless TICKWIRE_BIN names one. Starts
# `tickwire serve` on 127.0.0.1 port 0 with a temporary config, reads the
# port from its banner, runs the checks and stops the broker.
# Usage: tests/outside_client/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if ! python3 -c 'import msgpack' 2>/dev/null; then
    python3 -m pip install --quiet msgpack || python3 -m pip install --quiet --break-system-packages msgpack
fi

if [ -z "${TICKWIRE_BIN:-}" ]; then
    cargo build --manifest-path "$root/Cargo.toml" -p tickwire-cli --bin tickwire --locked
    TICKWIRE_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/tickwire"
fi

work="$(mktemp -d)"
broker_pid=""
cleanup() {
    if [ -n "$broker_pid" ]; then
        kill "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

head -c 48 /dev/urandom | base64 | tr -d '\n' > "$work/secret"
cat > "$work/tickwire.toml" <<TOML
listen = "127.0.0.1:0"
jwt_hmac_secret_file = "$work/secret"
allow_anonymous = "room.>"
presence_grace = "2s"
max_presence_info_bytes = "128B"
max_presence_per_topic = 6

[[topic]]
pattern = "room.>"
presence = true

[[topic]]
pattern = "hist.>"
history_messages = 100
TOML

mkfifo "$work/banner"
"$TICKWIRE_BIN" serve --config "$work/tickwire.toml" > "$work/banner" 2> "$work/broker.log" &
broker_pid=$!
# The banner line `tickwire listening on ADDR (...)`: the address is the fourth word.
read -r -t 20 banner < "$work/banner" || { echo "FAIL: no banner from the broker"; cat "$work/broker.log"; exit 1; }
cat "$work/banner" > /dev/null &
port="$(echo "$banner" | awk '{print $4}' | sed 's/.*://')"

status=0
timeout 90 python3 "$here/presence_client.py" "$TICKWIRE_BIN" "$work" "$port" || status=$?
if [ "$status" -ne 0 ]; then
    echo "--- broker log (last 40 lines)"
    tail -n 40 "$work/broker.log"
fi
exit "$status"
