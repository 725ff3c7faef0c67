#!/bin/sh
# Disk full in the middle of a load (issue 9): `defectnet serve` on an SQLite database
# that lives on a small tmpfs, bench/loadgen with C connections for D seconds; at
# D/3 a filler file takes every free byte of the tmpfs, at 2*D/3 it is removed.
# Afterwards: every prediction answered 200 must be in the database exactly once
# (loadgen --verify: each listed id exists with its request id, no request id in two
# rows, no id handed out twice), the database passes PRAGMA integrity_check, and the
# server answers again after the space came back. 503 answers while the disk is full
# are expected (the client may retry them); a 200 that is not in the database is not.
#
# Usage: bench/diskfull.sh [DURATION_S=60] [CONNECTIONS=16]
# Env: BUILD (default build), MODEL (default the committed narrow fixture
#      tests/fixtures/resnet/r18n.pth: this measures the store, not the network),
#      WORKERS (2), TMPFS_MB (16).
# Needs root (mount -t tmpfs), sqlite3 (CLI) and: make BUILD=$BUILD all $BUILD/bench/loadgen.
# Prints a markdown block for BENCHMARKS.md; exit 0 when nothing acknowledged was lost.
set -u
D=${1:-60}
C=${2:-16}
BUILD=${BUILD:-build}
WORKERS=${WORKERS:-2}
TMPFS_MB=${TMPFS_MB:-16}
MODEL=${MODEL:-$PWD/tests/fixtures/resnet/r18n.pth}
BIN="$PWD/$BUILD/defectnet"
LG="$PWD/$BUILD/bench/loadgen"
[ -x "$BIN" ] && [ -x "$LG" ] || { echo "diskfull: build first: make BUILD=$BUILD all $BUILD/bench/loadgen" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "diskfull: needs root to mount a tmpfs" >&2; exit 2; }
command -v sqlite3 >/dev/null || { echo "diskfull: needs the sqlite3 command" >&2; exit 2; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dn-diskfull-XXXXXX")
MNT="$TMP/db"
mkdir -p "$MNT"
SERVER_PID=
LG_PID=
cleanup() {
    [ -n "$LG_PID" ] && kill "$LG_PID" 2>/dev/null
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
    wait 2>/dev/null
    mountpoint -q "$MNT" && umount "$MNT"
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
mount -t tmpfs -o size="${TMPFS_MB}m" tmpfs "$MNT" || { echo "diskfull: mount failed" >&2; exit 2; }
DB="$MNT/preds.db"

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" serve --model "$MODEL" --db "sqlite:$DB" --listen "127.0.0.1:$port" --workers "$WORKERS" --queue 256 \
    --quiet >"$TMP/server.out" 2>"$TMP/server.err" &
SERVER_PID=$!
i=0
while ! curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 600 ] && { echo "diskfull: server did not start:"; tail -5 "$TMP/server.err"; exit 1; }
    sleep 0.1
done

"$LG" --port "$port" --image tests/fixtures/images/rgb_640x480.jpg --image tests/fixtures/images/gray_64x48.jpg \
    -c "$C" -d "$D" --ids "$TMP/ids.txt" --tag df >"$TMP/load.txt" 2>&1 &
LG_PID=$!

t_fill=$((D / 3)); t_free=$((2 * D / 3))
sleep "$t_fill"
# take every free byte (dd stops at ENOSPC)
dd if=/dev/zero of="$MNT/filler" bs=64k >/dev/null 2>&1
full_df=$(df -k "$MNT" | awk 'NR==2 {print $4}')
rows_at_fill=$(sqlite3 "file:$DB?mode=ro" "SELECT count(*) FROM predictions" 2>/dev/null || echo "?")
sleep $((t_free - t_fill))
rows_before_free=$(sqlite3 "file:$DB?mode=ro" "SELECT count(*) FROM predictions" 2>/dev/null || echo "?")
rm -f "$MNT/filler"
wait "$LG_PID"
LG_PID=

health=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz")
# a request after the load: the store must take writes again
after=$(curl -s -o /dev/null -w '%{http_code}' -H 'X-Request-Id: df-after' \
    --data-binary @tests/fixtures/images/gray_64x48.jpg -H 'Content-Type: image/jpeg' \
    "http://127.0.0.1:$port/v1/predict")
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null; SERVER_PID=

"$LG" --verify "sqlite:$DB" --ids "$TMP/ids.txt" >"$TMP/verify.txt" 2>&1
vrc=$?
integ=$(sqlite3 "$DB" "PRAGMA integrity_check" 2>&1 | head -1)
dup_ids=$(sqlite3 "$DB" "SELECT count(*) - count(DISTINCT id) FROM predictions" 2>&1)
rows=$(sqlite3 "$DB" "SELECT count(*) FROM predictions" 2>&1)
n200=$(wc -l <"$TMP/ids.txt")
full_errs=$(grep -ciE 'database or disk is full|disk I/O error|No space' "$TMP/server.err" || true)

echo "### Disk full during load ($(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null))"
echo
echo "\`bench/diskfull.sh $D $C\` (BUILD=$BUILD, WORKERS=$WORKERS, ${TMPFS_MB} MB tmpfs, model $(basename "$MODEL")):"
echo "filesystem filled at ${t_fill} s (free after fill: ${full_df} KiB), freed at ${t_free} s."
echo
echo '```'
cat "$TMP/load.txt"
cat "$TMP/verify.txt"
echo "rows when filled: $rows_at_fill, rows just before freeing: $rows_before_free, rows at end: $rows"
echo "answers 200 (listed ids): $n200; duplicate ids in the table: $dup_ids; integrity_check: $integ"
echo "server log lines about the full disk: $full_errs; after freeing: healthz $health, new predict $after"
echo '```'
ok=1
[ "$vrc" -eq 0 ] || ok=0
[ "$integ" = ok ] || ok=0
[ "$dup_ids" = 0 ] || ok=0
[ "$after" = 200 ] || ok=0
[ "$rows_at_fill" = "$rows_before_free" ] || echo "note: rows grew while the disk was full ($rows_at_fill -> $rows_before_free): WAL pages already allocated can take commits"
if [ $ok -eq 1 ]; then echo "diskfull: OK no acknowledged prediction lost"; exit 0; fi
echo "diskfull: FAILED"; exit 1
