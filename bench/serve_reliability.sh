#!/bin/sh
# Reliability figures for `defectnet serve` (issue 5 item 7), rerunnable:
#   1. steady load: bench/loadgen, C connections for D seconds on loopback -> failed
#      requests (must be 0), throughput, p50/p99 latency;
#   2. kill -9 of the server during load, restart on the same port and database, load
#      continues -> every prediction answered 200 is in the database exactly once
#      (loadgen --verify);
#   3. unreachable webhook and MQTT broker targets: predictions keep flowing (0 failed
#      requests), actions are retried and reported failed (outcomes in the store).
#
# Usage: bench/serve_reliability.sh [DURATION_S=60] [CONNECTIONS=16]
# Env: BUILD (default build), MODEL (default $DN_SHARED/weights/resnet18-imagenet.pth,
#      else the committed narrow fixture), IMAGES_DIR (default NEU-CLS), WORKERS (2).
#      PHASES (default "1 2 3") selects scenarios.
# Needs: make BUILD=$BUILD all bench. Prints a markdown block for BENCHMARKS.md.
set -u
D=${1:-60}
C=${2:-16}
BUILD=${BUILD:-build}
WORKERS=${WORKERS:-2}
PHASES=${PHASES:-1 2 3}
want() { case " $PHASES " in *" $1 "*) return 0;; esac; return 1; }
BIN="$PWD/$BUILD/defectnet"
LG="$PWD/$BUILD/bench/loadgen"
SHARED=${DN_SHARED:-../shared}
[ -x "$BIN" ] && [ -x "$LG" ] || { echo "build first: make BUILD=$BUILD all bench" >&2; exit 2; }
MODEL=${MODEL:-}
if [ -z "$MODEL" ]; then
    if [ -f "$SHARED/weights/resnet18-imagenet.pth" ]; then MODEL="$SHARED/weights/resnet18-imagenet.pth"
    else MODEL="$PWD/tests/fixtures/resnet/r18n.pth"; fi
fi
IMAGES_DIR=${IMAGES_DIR:-$SHARED/datasets/NEU-CLS}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dn-rel-XXXXXX")
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM

# a few images: one per class folder if the dataset is there, else test fixtures
IMGS=""
if [ -d "$IMAGES_DIR" ]; then
    for d in "$IMAGES_DIR"/*/; do
        f=$(ls "$d" | head -1)
        [ -n "$f" ] && IMGS="$IMGS --image $d$f"
    done
fi
[ -n "$IMGS" ] || IMGS="--image tests/fixtures/images/rgb_640x480.jpg --image tests/fixtures/images/gray_64x48.jpg"

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_server PORT DB [extra args]; sets SERVER_PID, waits until /healthz answers
start_server() {
    port=$1; db=$2; shift 2
    "$BIN" serve --model "$MODEL" --db "sqlite:$db" --listen "127.0.0.1:$port" --workers "$WORKERS" \
        --queue 256 --quiet "$@" >>"$TMP/server.out" 2>>"$TMP/server.err" &
    SERVER_PID=$!
    i=0
    while ! curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do
        i=$((i+1)); [ $i -gt 300 ] && { echo "server did not start:"; tail -5 "$TMP/server.err"; exit 1; }
        sleep 0.1
    done
}
stop_server() { kill -TERM "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; SERVER_PID=; }

echo "## defectnet serve reliability ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, model $(basename "$MODEL"), $WORKERS workers)"
echo
echo '```'
if want 1; then
echo "# 1. steady load: $C connections, ${D}s"
P=$(free_port)
start_server "$P" "$TMP/steady.db"
"$LG" --port "$P" $IMGS -c "$C" -d "$D" --tag steady | tee "$TMP/steady.txt"
rows=$(curl -s "http://127.0.0.1:$P/metrics" | grep '^defectnet_predictions_total' | awk '{s+=$2} END {print s+0}')
stop_server
echo "predictions counted by the server: $rows"
fi

VER=0
if want 2; then
echo
echo "# 2. kill -9 during load, restart, verify"
P=$(free_port)
CD=$((D / 3)); [ $CD -lt 15 ] && CD=15
start_server "$P" "$TMP/crash.db"
"$LG" --port "$P" $IMGS -c "$C" -d "$CD" --ids "$TMP/ids.txt" --tag crash > "$TMP/crash.txt" &
LGPID=$!
sleep $((CD / 3))
kill -9 "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null
echo "killed server (kill -9) at t=$((CD / 3))s; answered so far: $(wc -l < "$TMP/ids.txt")"
start_server "$P" "$TMP/crash.db"
echo "restarted on the same port and database"
wait $LGPID
cat "$TMP/crash.txt"
stop_server
"$LG" --verify "sqlite:$TMP/crash.db" --ids "$TMP/ids.txt"
VER=$?
fi

if want 3; then
echo
echo "# 3. unreachable webhook + MQTT broker"
DEAD=$(free_port)
cat > "$TMP/rules.json" <<EOF
{"version": 1, "drain_s": 2, "rules": [{"name": "every-part", "when": {}, "actions": [
  {"type": "webhook", "url": "http://127.0.0.1:$DEAD/alert", "timeout_s": 1, "retries": 2, "backoff_s": 0.1},
  {"type": "mqtt", "broker": "mqtt://127.0.0.1:$DEAD", "topic": "factory/{line}/stop", "qos": 1,
   "timeout_s": 1, "retries": 2, "backoff_s": 0.1}]}]}
EOF
P=$(free_port)
start_server "$P" "$TMP/dead.db" --rules "$TMP/rules.json"
"$LG" --port "$P" $IMGS -c 4 -d 10 --tag dead --line L1
sleep 5
curl -s "http://127.0.0.1:$P/metrics" | grep '^defectnet_action_outcomes_total'
stop_server
echo "outcomes recorded in the store by status:"
if command -v sqlite3 >/dev/null; then
    sqlite3 "$TMP/dead.db" "SELECT kind, status, attempts, count(*) FROM action_outcomes GROUP BY 1,2,3 ORDER BY 1,2,3" | sed 's/^/  /'
    sqlite3 "$TMP/dead.db" "SELECT '  example: ' || kind || ' ' || status || ' after ' || attempts || ' attempts: ' || detail FROM action_outcomes WHERE status='failed' GROUP BY kind"
fi
fi
echo '```'
[ $VER -eq 0 ]
