#!/bin/sh
# Everything CI checks for the JavaScript client (client-sdk/js): install
# (npm ci from the committed package-lock.json, skipped when node_modules
# already matches it), type-check, build, unit tests, end-to-end tests
# against the real broker (built with `cargo build -p tickwire-cli` unless
# TICKWIRE_BIN names a binary), and the embedded browser bundle's check.
# Needs Node 20 or newer with npm; installs Debian's nodejs/npm when node is
# missing (as root or with sudo).
# Usage: client-sdk/js/scripts/ci.sh
set -eu
cd "$(dirname "$0")/.."

step() { printf '\n==> js: %s\n' "$*"; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    step "installing nodejs and npm with apt-get"
    as_root=""
    [ "$(id -u)" -eq 0 ] || as_root=sudo
    export DEBIAN_FRONTEND=noninteractive
    $as_root apt-get install -y nodejs npm || { $as_root apt-get update && $as_root apt-get install -y nodejs npm; }
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
    echo "error: Node $(node --version) is too old; the client and its tests need Node 20 or newer" >&2
    exit 1
fi

step "npm ci"
if cmp -s package-lock.json node_modules/.ci-lock 2>/dev/null; then
    echo "node_modules matches package-lock.json"
else
    npm ci --no-audit --no-fund
    cp package-lock.json node_modules/.ci-lock
fi

step "type-check and build (tsc, strict)"
npm run --silent build

step "unit tests"
node --test test/unit/

step "end-to-end tests against the broker"
node --test --test-concurrency=1 test/e2e/

step "browser bundle equals broker/assets/dashboard/tickwire-client.js"
sh scripts/check-bundle.sh
