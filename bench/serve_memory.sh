#!/bin/sh
# Peak RSS of `defectnet serve` with 1, 2 and 4 workers (BENCHMARKS.md "serve memory").
#   sh bench/serve_memory.sh BIN MODEL IMAGE [WORKERS...]
# BIN: a defectnet binary; MODEL: a model file (e.g. the ImageNet ResNet-18 converted
# by `defectnet convert`); IMAGE: any image. For each worker count, serve is started
# with --batch $BATCH (default 1) --session-threads 1, then 3 rounds of 2 x WORKERS concurrent
# POST /v1/predict are sent (so every worker takes jobs and holds its session), and
# VmHWM (peak RSS) / VmRSS are read from /proc/PID/status before a SIGTERM.
# RELOADS=N (default 0): then N times POST /v1/admin/reload followed by one more round,
# printing VmRSS after each (a replaced model's plan should not stay resident).
# Light on purpose (a few dozen forwards in all): the machine is shared.
set -u
BIN=$1; MODEL=$2; IMG=$3; shift 3
WORKERS=${*:-1 2 4}
PORT=${PORT:-18931}
BATCH=${BATCH:-1}
RELOADS=${RELOADS:-0}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for w in $WORKERS; do
    "$BIN" serve --model "$MODEL" --db "sqlite:$tmp/db$w" --listen "127.0.0.1:$PORT" --workers "$w" \
        --batch "$BATCH" --session-threads 1 --queue 64 --quiet >/dev/null 2>"$tmp/err$w" &
    pid=$!
    up=0
    for i in $(seq 1 200); do
        curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && { up=1; break; }
        sleep 0.1
    done
    if [ "$up" -ne 1 ]; then echo "serve did not start:"; cat "$tmp/err$w"; kill "$pid"; exit 1; fi
    idle=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    fails=0
    for round in $(seq 1 $((3 + RELOADS))); do
        if [ "$round" -gt 3 ]; then
            curl -sf -X POST "http://127.0.0.1:$PORT/v1/admin/reload" >/dev/null || fails=$((fails + 1))
        fi
        cpids=""
        for j in $(seq 1 $((2 * w))); do
            curl -s -o /dev/null -w '%{http_code}\n' --data-binary "@$IMG" \
                "http://127.0.0.1:$PORT/v1/predict" >"$tmp/code.$round.$j" &
            cpids="$cpids $!"
        done
        for p in $cpids; do wait "$p"; done
        fails=$((fails + $(cat "$tmp"/code.$round.* | grep -vc '^200$')))
        [ "$round" -gt 3 ] && echo "  after reload $((round - 3)) + $((2 * w)) requests: $(grep VmRSS "/proc/$pid/status")"
    done
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    kill -TERM "$pid"; wait "$pid"
    awk -v w="$w" -v i="$idle" -v n=$(((3 + RELOADS) * 2 * w)) -v h="$hwm" -v r="$rss" -v f="$fails" 'BEGIN {
        printf "workers=%d  idle VmRSS %6.1f MB  after %d requests: VmHWM %6.1f MB  VmRSS %6.1f MB  (non-200: %d)\n",
               w, i / 1024, n, h / 1024, r / 1024, f }'
done
