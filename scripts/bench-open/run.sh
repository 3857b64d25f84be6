#!/usr/bin/env bash
# The open-stream end-to-end benchmark of issue #30: Charter (`charter serve` in a child
# process, default settings) against Node-RED 5 on the same job (webhook -> keyword rule ->
# HTTP PUT to a local sink -> answer), alternating rounds, same generator and sink.
#
#   scripts/bench-open/run.sh [ROUNDS] [STEP] [extra `charter bench open` flags...]
#
# Environment: CHARTER (the charter binary, default target/release/charter), SCRATCH (where
# Node.js 22 and Node-RED 5 are installed, outside the repository; default /tmp/charter-nodered),
# NR_PORT (Node-RED's port, default 1880), SINK_PORT (the sink's port, fixed by the flow: 18090).
# Writes the JSON report to $SCRATCH/open-<date>.json and prints the table.
set -euo pipefail

ROUNDS=${1:-3}
STEP=${2:-5s}
shift $(( $# > 2 ? 2 : $# ))
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CHARTER=${CHARTER:-$REPO/target/release/charter}
SCRATCH=${SCRATCH:-/tmp/charter-nodered}
NR_PORT=${NR_PORT:-1880}
SINK_PORT=18090

mkdir -p "$SCRATCH"
cd "$SCRATCH"
# Node-RED 5 needs Node.js >= 22.9; the `node` package on npm carries the binary.
if [ ! -x node_modules/.bin/node ] || [ ! -f node_modules/node-red/package.json ]; then
  [ -f package.json ] || npm init -y >/dev/null
  npm install --no-audit --no-fund node@22 node-red@5
fi
NODE="$SCRATCH/node_modules/.bin/node"
echo "node $("$NODE" --version), node-red $(grep -m1 '"version"' node_modules/node-red/package.json)" >&2

USERDIR="$SCRATCH/userdir"
rm -rf "$USERDIR" && mkdir -p "$USERDIR"
cp "$HERE/node-red-flow.json" "$USERDIR/flows.json"
"$NODE" node_modules/node-red/red.js --userDir "$USERDIR" --port "$NR_PORT" flows.json \
  > "$SCRATCH/node-red.log" 2>&1 &
NR_PID=$!
trap 'kill $NR_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if grep -q "Started flows" "$SCRATCH/node-red.log"; then break; fi
  sleep 0.3
done
grep -q "Started flows" "$SCRATCH/node-red.log" || { cat "$SCRATCH/node-red.log" >&2; exit 1; }

OUT="$SCRATCH/open-$(date -u +%Y%m%dT%H%M%S).json"
"$CHARTER" bench open --rounds "$ROUNDS" --duration "$STEP" \
  --sink-port "$SINK_PORT" \
  --compare-url "http://127.0.0.1:$NR_PORT/hooks/open" --compare-pid "$NR_PID" \
  --compare-name node-red --out "$OUT" "$@"
echo "JSON report: $OUT" >&2
