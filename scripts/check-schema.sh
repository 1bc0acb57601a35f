#!/usr/bin/env bash
# Fails when crates/mnnq-format/src/generated.rs is not what planus-cli 1.3.0 makes of the schema
# (or src/schema_layout.rs is not what scripts/gen-layout.py makes of it).
set -euo pipefail
cd "$(dirname "$0")/.."
fresh="$(mktemp --suffix=.rs)"
fresh_layout="$(mktemp --suffix=.rs)"
trap 'rm -f "$fresh" "$fresh_layout"' EXIT
scripts/regen-schema.sh "$fresh" "$fresh_layout" >/dev/null
status=0
for pair in "$fresh:crates/mnnq-format/src/generated.rs" "$fresh_layout:crates/mnnq-format/src/schema_layout.rs"; do
    new="${pair%%:*}"
    committed="${pair#*:}"
    if ! cmp -s "$new" "$committed"; then
        echo "error: $committed is stale; run scripts/regen-schema.sh and commit" >&2
        diff -u "$committed" "$new" | head -40 >&2 || true
        status=1
    fi
done
[[ $status -eq 0 ]] && echo "generated.rs and schema_layout.rs are up to date"
exit $status
