#!/usr/bin/env bash
# Per-stage CPU of the open-stream job: run `charter bench open` at one offered rate, record
# the `charter serve` child with perf (DWARF call graphs; the release binary keeps its
# symbols and unwind tables), and attribute the samples to stages with stages.py, scaled by
# the bench's own CPU per job.
#
#   scripts/bench-open/stages.sh RATE [STEP] [extra `charter bench open` flags...]
#
# Environment: CHARTER (default target/release/charter), OUT (work dir, default a temp dir).
# Needs `perf` and permission to record another process (root, or perf_event_paranoid <= 1).
set -euo pipefail
RATE=${1:?offered rate, events/s}
STEP=${2:-15s}
shift $(( $# > 2 ? 2 : $# ))
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CHARTER=${CHARTER:-$REPO/target/release/charter}
OUT=${OUT:-$(mktemp -d /tmp/charter-stages.XXXXXX)}
"$CHARTER" bench open --rates "$RATE" --rounds 1 --duration "$STEP" --json --out "$OUT/open.json" "$@" \
  > /dev/null 2> "$OUT/bench.log" &
BENCH=$!
SERVE=""
for _ in $(seq 1 200); do
  SERVE=$(pgrep -P "$BENCH" -f " serve " || true)
  [ -n "$SERVE" ] && grep -q "offered" "$OUT/bench.log" && break
  sleep 0.1
done
[ -n "$SERVE" ] || { cat "$OUT/bench.log" >&2; exit 1; }
SECS=$(( ${STEP%s} > 4 ? ${STEP%s} - 3 : 1 ))
sleep 1
perf record -q -F 499 --call-graph dwarf,16384 -p "$SERVE" -o "$OUT/perf.data" -- sleep "$SECS" 2> "$OUT/perf.log" || true
wait "$BENCH" || true
CPU=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['open']['ladders'][0]['steps'][0]; print(r['cpu_ms_per_job'] or 0); print(r['sustained'], r['verdict'], file=sys.stderr)" "$OUT/open.json")
echo "rate $RATE/s: cpu per job $CPU ms (perf data in $OUT)"
perf script -i "$OUT/perf.data" -F comm,ip,sym 2> /dev/null | python3 "$HERE/stages.py" --cpu-ms-per-job "$CPU"
