#!/bin/sh
# Proof that several `defectnet serve` nodes work as one plant (issue 12, docs/fleet.md):
# starts a mosquitto broker, a PostgreSQL cluster and NODES serve nodes on loopback, all
# in one MQTT 5 shared-subscription group writing to the same database; publishes a
# bounded stream of COUNT images from 4 simulated cameras (QoS 1, unique message ids)
# at RATE msg/s; SIGKILLs one node midway and restarts it (same node id = same MQTT
# session); then checks the database against the ids the broker acknowledged.
#
# Last line, exactly:
#   fleet: P published, U recorded once, L lost, D duplicated, N nodes, K killed
# Exit status 0 only if L = 0 and D = 0 (and every node started).
#
#   BUILD=build COUNT=400 RATE=40 NODES=3 bench/fleet.sh
# Needs: mosquitto, PostgreSQL server binaries (/usr/lib/postgresql/*/bin or $DN_PG_BIN),
# $BUILD/defectnet and $BUILD/bench/fleet_pub (built here if missing). Runs as any user;
# as root the database runs as "postgres" through runuser.
set -u
BUILD=${BUILD:-build}
COUNT=${COUNT:-400}
RATE=${RATE:-40}
NODES=${NODES:-3}
KILL=${KILL:-1}
MODEL=${MODEL:-tests/fixtures/resnet/r18n.pth}
IMAGES=${IMAGES:-tests/fixtures/images/rgba_33x29.png,tests/fixtures/images/rgb_640x480.jpg,tests/fixtures/images/gray_45x30.bmp,tests/fixtures/images/gray_64x48.jpg}
BIN=$BUILD/defectnet
PUB=$BUILD/bench/fleet_pub

say() { echo "fleet.sh: $*" >&2; }
die() { say "$*"; echo "fleet: 0 published, 0 recorded once, 0 lost, 0 duplicated, 0 nodes, 0 killed"; exit 1; }

if [ ! -x "$BIN" ] || [ ! -x "$PUB" ]; then
    make -s BUILD="$BUILD" "$BIN" "$PUB" >&2 || die "build failed"
fi
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || die "mosquitto not installed (apt-get install mosquitto)"
MOSQ=$(command -v mosquitto 2>/dev/null || echo /usr/sbin/mosquitto)
if [ -n "${DN_PG_BIN:-}" ]; then PGBIN=$DN_PG_BIN; else PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1); fi
[ -x "$PGBIN/initdb" ] || die "PostgreSQL server binaries not found (set DN_PG_BIN)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
T=$(mktemp -d "${TMPDIR:-/tmp}/dn-fleet-XXXXXX")
chmod 755 "$T"
NODE_PIDS=""
BROKER_PID=""
PGUSER_OS=""
[ "$(id -u)" = 0 ] && PGUSER_OS=postgres
pgrun() { if [ -n "$PGUSER_OS" ]; then runuser -u "$PGUSER_OS" -- "$@"; else "$@"; fi; }
cleanup() {
    for p in $NODE_PIDS; do kill "$p" 2>/dev/null; done
    for p in $NODE_PIDS; do wait "$p" 2>/dev/null; done
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
    [ -d "$T/pg" ] && pgrun "$PGBIN/pg_ctl" -D "$T/pg" -m fast -w stop >/dev/null 2>&1
    if [ -n "${KEEP:-}" ]; then say "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# ---- PostgreSQL (synchronous commit, fsync on: the durability the plant would run with)
PGPORT=$(free_port)
mkdir -p "$T/pg" "$T/pgsock"
[ -n "$PGUSER_OS" ] && chown "$PGUSER_OS" "$T/pg" "$T/pgsock"
pgrun "$PGBIN/initdb" -D "$T/pg" -A trust -U dn -E UTF8 >"$T/initdb.log" 2>&1 || die "initdb failed (see $T/initdb.log)"
pgrun "$PGBIN/pg_ctl" -D "$T/pg" -w -t 60 -l "$T/pgsock/pg.log" \
    -o "-p $PGPORT -k $T/pgsock -c listen_addresses=127.0.0.1 -c max_connections=50" start >/dev/null || die "pg_ctl start failed"
DB="postgres://dn@127.0.0.1:$PGPORT/postgres"
psql_q() { "$PGBIN/psql" "$DB" -qAtX -v ON_ERROR_STOP=1 -c "$1"; }

# ---- broker: persistent sessions of killed nodes keep their messages (no queue limit)
MQPORT=$(free_port)
cat >"$T/mosquitto.conf" <<EOF
listener $MQPORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
EOF
"$MOSQ" -c "$T/mosquitto.conf" >"$T/broker.log" 2>&1 &
BROKER_PID=$!
MQ="mqtt://127.0.0.1:$MQPORT"

# ---- nodes
start_node() { # $1 = node number
    "$BIN" serve --model "$MODEL" --db "$DB" --listen 127.0.0.1:0 --workers 1 --node "node$1" \
        --mqtt-in "$MQ" --mqtt-topic 'plant/+/+/image' --mqtt-group fleet --mqtt-fields line,camera \
        --mqtt-results 'plant/{line}/{camera}/result' --mqtt-last 'plant/{line}/{camera}/last' \
        >"$T/node$1.out" 2>>"$T/node$1.err" &
    eval "PID_$1=$!"
    NODE_PIDS="$NODE_PIDS $!"
}
wait_subscribed() { # $1 = node number, $2 = how many "subscribed" lines to wait for
    i=0
    while [ "$(grep -c 'subscribed to' "$T/node$1.err" 2>/dev/null)" -lt "$2" ]; do
        i=$((i + 1)); [ $i -gt 600 ] && return 1; sleep 0.1
    done
}
n=1
while [ $n -le "$NODES" ]; do start_node $n; n=$((n + 1)); done
n=1
while [ $n -le "$NODES" ]; do wait_subscribed $n 1 || die "node$n did not subscribe (see $T/node$n.err)"; n=$((n + 1)); done
say "$NODES nodes subscribed; publishing $COUNT images from 4 cameras at $RATE msg/s"

# ---- the stream, with one node killed midway and restarted
RUN="fleet$$"
T0=$(date +%s.%N)
"$PUB" --url "$MQ" --count "$COUNT" --cameras 4 --rate "$RATE" --images "$IMAGES" --run "$RUN" --ids-out "$T/ids" >"$T/pub.out" 2>&1 &
PUB_PID=$!
KILLED=0
if [ "$KILL" = 1 ] && [ "$NODES" -ge 2 ]; then
    sleep "$(python3 -c "print($COUNT / $RATE / 2)")"
    eval "VICTIM=\$PID_2"
    kill -KILL "$VICTIM" && KILLED=1
    wait "$VICTIM" 2>/dev/null
    say "node2 (pid $VICTIM) killed with SIGKILL; restarting it in 1 s"
    sleep 1
    start_node 2
    wait_subscribed 2 2 || say "node2 did not resubscribe"
fi
wait $PUB_PID
cat "$T/pub.out" >&2
P=$(wc -l <"$T/ids" | tr -d ' ')

# ---- settle: wait until every acknowledged id is in the database (or no progress for 60 s)
psql_q "CREATE TABLE published(id TEXT PRIMARY KEY)" || die "psql failed"
"$PGBIN/psql" "$DB" -qAtX -v ON_ERROR_STOP=1 -c "\\copy published(id) FROM '$T/ids'" || die "loading the published ids failed"
last=-1; still=0
while :; do
    got=$(psql_q "SELECT count(DISTINCT p.request_id) FROM predictions p JOIN published u ON u.id = p.request_id")
    [ "$got" -ge "$P" ] && break
    if [ "$got" = "$last" ]; then still=$((still + 1)); else still=0; fi
    [ $still -ge 300 ] && { say "no progress for 60 s at $got of $P"; break; }
    last=$got
    sleep 0.2
done

T1=$(date +%s.%N)
U=$(psql_q "SELECT count(*) FROM (SELECT p.request_id FROM predictions p JOIN published u ON u.id = p.request_id GROUP BY p.request_id HAVING count(*) = 1) x")
REC=$(psql_q "SELECT count(DISTINCT p.request_id) FROM predictions p JOIN published u ON u.id = p.request_id")
D=$(psql_q "SELECT coalesce(sum(c - 1), 0) FROM (SELECT count(*) AS c FROM predictions WHERE request_id IS NOT NULL GROUP BY request_id HAVING count(*) > 1) x")
EXTRA=$(psql_q "SELECT count(*) FROM predictions p WHERE p.source = 'mqtt' AND NOT EXISTS (SELECT 1 FROM published u WHERE u.id = p.request_id)")
L=$((P - REC))
WRITERS=$(psql_q "SELECT count(DISTINCT node) FROM predictions" 2>/dev/null || echo "?")
say "rows per node: $(psql_q "SELECT string_agg(coalesce(node, '?') || '=' || n, ' ') FROM (SELECT node, count(*) n FROM predictions GROUP BY node ORDER BY node) x" 2>/dev/null || echo 'n/a (no node column)')"
DUPS=0; REDEL=0
n=1
while [ $n -le "$NODES" ]; do # the restarted node2's counter covers the redeliveries after the kill
    port=$(sed -n 's/^listening //p' "$T/node$n.out" | tail -1)
    d=$(curl -s "http://127.0.0.1:$port/metrics" | sed -n 's/^defectnet_mqtt_messages_total{result="duplicate"} //p')
    r=$(curl -s "http://127.0.0.1:$port/metrics" | sed -n 's/^defectnet_mqtt_messages_total{result="redelivered"} //p')
    DUPS=$((DUPS + ${d:-0})); REDEL=$((REDEL + ${r:-0}))
    n=$((n + 1))
done
say "live nodes: $REDEL messages redelivered by the broker (DUP), $DUPS answered from the store as already recorded; rows for ids the publisher saw no PUBACK for: $EXTRA; nodes that recorded: $WRITERS"
say "$(python3 -c "print('recorded $REC in %.2f s from the first publish: %.1f img/s over $NODES nodes' % ($T1 - $T0, $REC / ($T1 - $T0)))")"
echo "fleet: $P published, $U recorded once, $L lost, $D duplicated, $NODES nodes, $KILLED killed"
[ "$P" -gt 0 ] && [ "$L" -eq 0 ] && [ "$D" -eq 0 ]
