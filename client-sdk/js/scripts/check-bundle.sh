#!/bin/sh
# Rebuilds the browser bundle and checks that the copy the broker embeds
# (broker/assets/dashboard/tickwire-client.js) is identical to it.
# With --update, copies the fresh bundle there instead.
set -eu
cd "$(dirname "$0")/.."
node scripts/bundle.mjs
fresh=dist/bundle/tickwire.esm.js
embedded=../../broker/assets/dashboard/tickwire-client.js
if [ "${1:-}" = "--update" ]; then
    mkdir -p "$(dirname "$embedded")"
    cp "$fresh" "$embedded"
    echo "updated $embedded"
    exit 0
fi
if ! cmp -s "$fresh" "$embedded"; then
    echo "error: $embedded differs from a fresh bundle;" >&2
    echo "run: sh client-sdk/js/scripts/check-bundle.sh --update (and commit it)" >&2
    exit 1
fi
echo "bundle ok: $embedded equals a fresh build ($(wc -c < "$fresh") bytes)"
