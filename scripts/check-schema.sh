#!/usr/bin/env bash
# Fails when crates/mnnq-format/src/generated.rs is not what planus-cli 1.3.0 makes of the schema.
set -euo pipefail
cd "$(dirname "$0")/.."
fresh="$(mktemp --suffix=.rs)"
trap 'rm -f "$fresh"' EXIT
scripts/regen-schema.sh "$fresh" >/dev/null
if ! cmp -s "$fresh" crates/mnnq-format/src/generated.rs; then
    echo "error: crates/mnnq-format/src/generated.rs is stale; run scripts/regen-schema.sh and commit" >&2
    diff -u crates/mnnq-format/src/generated.rs "$fresh" | head -40 >&2 || true
    exit 1
fi
echo "generated.rs is up to date"
