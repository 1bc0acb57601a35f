#!/usr/bin/env bash
# Creates .venv at the repository root with the real MNN (our oracle) and the peers.
# Never run MNN's console scripts (mnnconvert, mnnquant): they call a telemetry client.
# Use `import _tools` and `MNN.Interpreter` from Python instead.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${MNNQ_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/scripts/requirements.txt"
echo "$venv"
