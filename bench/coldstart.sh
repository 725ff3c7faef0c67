#!/bin/sh
# Cold start (issue 14 item 5): wall time of a one-image `defectnet predict` process
# and of a `serve` model reload (POST /v1/admin/reload), each repeated N times; prints
# every run and the median. Targets: predict <= 0.25 s, reload <= 0.3 s (quiet machine).
#   sh bench/coldstart.sh BIN MODEL IMAGE [N]
# Run it under ../shared/tools/quiet for publishable figures.
set -u
BIN=$1; MODEL=$2; IMG=$3; N=${4:-7}
PORT=${PORT:-18937}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
now() { date +%s.%N; }
cat "$MODEL" "$BIN" >/dev/null # page cache warm: the first run is not a disk benchmark
: > "$tmp/p"
for i in $(seq 1 "$N"); do
    t0=$(now); "$BIN" predict -m "$MODEL" -f jsonl "$IMG" >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; exit 1; }
    t1=$(now); echo "$t1 $t0" | awk '{printf "%.4f\n", $1 - $2}' >> "$tmp/p"
done
echo "predict, one image, $N processes (s): $(tr '\n' ' ' < "$tmp/p")"
echo "predict median: $(median < "$tmp/p") s"
"$BIN" serve --model "$MODEL" --db "sqlite:$tmp/db" --listen "127.0.0.1:$PORT" --quiet >/dev/null 2>"$tmp/serr" &
pid=$!
up=0
for i in $(seq 1 200); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && { up=1; break; }; sleep 0.05; done
[ "$up" -eq 1 ] || { echo "serve did not start:"; cat "$tmp/serr"; kill "$pid"; exit 1; }
: > "$tmp/r"
for i in $(seq 1 "$N"); do
    curl -sf -o /dev/null -w '%{time_total}\n' -X POST "http://127.0.0.1:$PORT/v1/admin/reload" >> "$tmp/r" \
        || { echo "reload failed"; kill "$pid"; exit 1; }
done
kill "$pid"; wait "$pid" 2>/dev/null
echo "serve reload, $N times (s): $(tr '\n' ' ' < "$tmp/r")"
echo "reload median: $(median < "$tmp/r") s"
