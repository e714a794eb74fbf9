#!/usr/bin/env bash
# Regenerate examples/capture-two-namespaces: `nomad-medic capture` run against
# the project's test Nomad API server loaded with the two-namespace scenario
# (live, orphaned and protected registrations in "default" and "prod", and
# one disconnected client).
# Usage: scripts/make-example-capture.sh [path/to/nomad-medic]
set -euo pipefail
cd "$(dirname "$0")/.."

binary=${1:-build/nomad-medic}
out=examples/capture-two-namespaces
work=$(mktemp -d)

python3 tests/fake_nomad/fake_nomad.py --port-file "$work/port" --scenario-name two_namespaces &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$work"' EXIT

for _ in $(seq 1 100); do
  [ -s "$work/port" ] && break
  sleep 0.1
done
[ -s "$work/port" ] || { echo "make-example-capture.sh: the test Nomad API server did not start" >&2; exit 1; }

rm -rf "$out"
NOMAD_ADDR="http://127.0.0.1:$(cat "$work/port")" "$binary" capture "$out"
