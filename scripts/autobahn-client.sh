#!/usr/bin/env bash
# The Autobahn client-side suite against the Rust SDK's WebSocket layer:
# installs kosoku (the Autobahn cases on Python 3) if missing, starts its
# fuzzing server on a free loopback port, runs the SDK's echo client
# (client-sdk/examples/autobahn_client.rs) through every case, and checks
# the report: no case FAILED, sections 1-10 all OK, NON-STRICT or
# INFORMATIONAL, UNIMPLEMENTED only in 12-13 (compression).
#
# Usage: ./scripts/autobahn-client.sh [--update-docs]
#   --update-docs  also rewrite the summary in docs/conformance.md
# The report (HTML and JSON) stays in target/autobahn-client/.
set -euo pipefail
cd "$(dirname "$0")/.."

KOSOKU_VERSION=0.1.0
OUTDIR=target/autobahn-client
# Bounds: the whole suite takes well under a minute on a debug build.
START_TIMEOUT=30
RUN_TIMEOUT=600
EXIT_TIMEOUT=60

update_docs=()
case "${1:-}" in
  "") ;;
  --update-docs)
    update_docs=(--docs docs/conformance.md --marker autobahn-client --command "./scripts/autobahn-client.sh")
    ;;
  *) echo "usage: $0 [--update-docs]" >&2; exit 2 ;;
esac

installed_version() {
  python3 -c 'import importlib.metadata as m; print(m.version("kosoku"))' 2>/dev/null || true
}
if [[ "$(installed_version)" != "$KOSOKU_VERSION" ]]; then
  echo "installing kosoku $KOSOKU_VERSION"
  if ! python3 -m pip --version >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -q >/dev/null && apt-get install -y -q python3-pip >/dev/null
  fi
  # A distribution Python may refuse installs outside a virtualenv (PEP 668).
  python3 -m pip install --quiet "kosoku==$KOSOKU_VERSION" ||
    python3 -m pip install --quiet --user --break-system-packages "kosoku==$KOSOKU_VERSION"
fi
kosoku=$(command -v kosoku || echo "$(python3 -m site --user-base)/bin/kosoku")

cargo build --locked -p tickwire-client --example autobahn_client
client=target/debug/examples/autobahn_client

rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"
log="$OUTDIR/kosoku.log"
"$kosoku" -m fuzzingserver 127.0.0.1:0 -o "$OUTDIR" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT

# kosoku prints `fuzzingserver listening on ws://127.0.0.1:PORT`.
url=""
for _ in $(seq $((START_TIMEOUT * 10))); do
  url=$(grep -o 'ws://127\.0\.0\.1:[0-9]*' "$log" || true)
  [[ -n "$url" ]] && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
if [[ -z "$url" ]]; then
  echo "kosoku did not start:" >&2
  cat "$log" >&2
  exit 1
fi

started=$(date +%s)
status=0
timeout "$RUN_TIMEOUT" "$client" "$url" >"$OUTDIR/client.log" 2>&1 || status=$?
if [[ $status -ne 0 ]]; then
  echo "the echo client failed (exit $status):" >&2
  tail -n 20 "$OUTDIR/client.log" >&2
  exit 1
fi

# kosoku writes the report and exits once the client asked for it; its exit
# status counts the UNIMPLEMENTED compression cases as failures, so the
# report is what decides.
for _ in $(seq $((EXIT_TIMEOUT * 10))); do
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$server" 2>/dev/null; then
  echo "kosoku did not exit after the run:" >&2
  tail -n 20 "$log" >&2
  exit 1
fi
wait "$server" || true
trap - EXIT
echo "suite ran in $(($(date +%s) - started)) s; report in $OUTDIR/index.html"

python3 scripts/autobahn-report.py "$OUTDIR" "${update_docs[@]}"
