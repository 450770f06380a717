#!/usr/bin/env bash
# The browser tests: the dashboard page and the JS client's transports in
# Debian's Chromium, driven by playwright-core (node's test runner).
#
# Installs what is missing, and only that (so a second run installs
# nothing): Chromium with apt-get (as root, or with sudo) when
# /usr/bin/chromium is absent, the npm packages of package-lock.json when
# node_modules is absent or older than the lock file. Builds the tickwire
# binary unless TICKWIRE_BIN names one. Screenshots go to docs/images/.
# Usage: tests/browser/run.sh [node --test arguments, e.g. a test file]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [ ! -x /usr/bin/chromium ]; then
    as_root=()
    [ "$(id -u)" -eq 0 ] || as_root=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    # The package lists are fetched only when the package cannot be found.
    "${as_root[@]}" apt-get install -y chromium \
        || { "${as_root[@]}" apt-get update && "${as_root[@]}" apt-get install -y chromium; }
fi

cd "$here"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
    npm ci --no-audit --no-fund
    touch node_modules
fi

if [ -z "${TICKWIRE_BIN:-}" ]; then
    cargo build --manifest-path "$root/Cargo.toml" -p tickwire-cli --bin tickwire --locked
    export TICKWIRE_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/tickwire"
fi

# One test at a time (they share the 2 cores with the broker and Chromium);
# every wait inside is bounded, and so is each test.
if [ "$#" -eq 0 ]; then
    set -- dashboard.test.mjs transports.test.mjs
fi
exec node --test --test-concurrency=1 --test-timeout=120000 "$@"
