#!/bin/sh
# What a shadow model costs the live service (issue 11 item 4): the same 16-connection
# load against `serve` without and with `--shadow` (the candidate = the same model file,
# the worst case: a full second forward pass per image), D seconds each, back to back.
# The queue holds all 16 connections (--queue 32), so no request is refused. Prints loadgen's throughput and latency for both, and the shadow counters from /metrics
# (done = classified and stored, dropped = its bounded queue was full).
#   sh bench/shadow.sh BUILD MODEL IMAGE [SECONDS] [WORKERS]
# Run it under ../shared/tools/quiet for publishable figures.
set -u
B=$1; MODEL=$2; IMG=$3; D=${4:-20}; W=${5:-2}
PORT=${PORT:-18951}
for f in "$B/defectnet" "$B/bench/loadgen"; do
    [ -x "$f" ] || { echo "shadow.sh: $f missing (make BUILD=$B bench)" >&2; exit 2; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() { # $1 = label, then extra serve options
    label=$1; shift
    "$B/defectnet" serve --model "$MODEL" --db "sqlite:$tmp/$label.db" --listen "127.0.0.1:$PORT" --workers "$W" --queue 32 \
        --quiet "$@" >/dev/null 2>"$tmp/serr" &
    pid=$!
    up=0
    for i in $(seq 1 200); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && { up=1; break; }; sleep 0.05; done
    [ "$up" -eq 1 ] || { echo "serve did not start:"; cat "$tmp/serr"; kill "$pid"; exit 1; }
    echo "== $label (workers $W, 16 connections, $D s)"
    "$B/bench/loadgen" --port "$PORT" --image "$IMG" -c 16 -d "$D" --tag "$label" | grep -E "throughput|status codes"
    curl -sf "http://127.0.0.1:$PORT/metrics" | grep -E '^defectnet_shadow_' || true
    kill "$pid"; wait "$pid" 2>/dev/null
}
run live
run shadow --shadow "$MODEL"
