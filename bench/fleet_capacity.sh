#!/bin/sh
# What limits a plant (docs/fleet.md, capacity model): measures on this machine
#   1. PostgreSQL commits/s with synchronous_commit=on and fsync on: pgbench, one
#      prediction-shaped INSERT per transaction, 1 and 4 clients;
#   2. broker messages/s with 200 KB payloads (QoS 1 in, one QoS 1 subscriber out);
#   3. images/s of 1, 2 and 3 serve nodes (bench/fleet.sh without the kill).
# Timing figures: only meaningful on a quiet machine. Prints one "capacity:" line per
# figure.
#   BUILD=build bench/fleet_capacity.sh
set -u
BUILD=${BUILD:-build}
SECS=${SECS:-10}
PUB=$BUILD/bench/fleet_pub
[ -x "$PUB" ] || make -s BUILD="$BUILD" "$PUB" "$BUILD/defectnet" >&2 || exit 1
if [ -n "${DN_PG_BIN:-}" ]; then PGBIN=$DN_PG_BIN; else PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1); fi
MOSQ=$(command -v mosquitto 2>/dev/null || echo /usr/sbin/mosquitto)
[ -x "$PGBIN/pgbench" ] || { echo "fleet_capacity: pgbench not found (PostgreSQL server package)" >&2; exit 1; }
[ -x "$MOSQ" ] || { echo "fleet_capacity: mosquitto not installed" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
T=$(mktemp -d "${TMPDIR:-/tmp}/dn-fleetcap-XXXXXX")
chmod 755 "$T"
PGUSER_OS=""
[ "$(id -u)" = 0 ] && PGUSER_OS=postgres
pgrun() { if [ -n "$PGUSER_OS" ]; then runuser -u "$PGUSER_OS" -- "$@"; else "$@"; fi; }
BPID=""
cleanup() {
    [ -n "$BPID" ] && kill "$BPID" 2>/dev/null
    [ -d "$T/pg" ] && pgrun "$PGBIN/pg_ctl" -D "$T/pg" -m fast -w stop >/dev/null 2>&1
    rm -rf "$T"
}
trap cleanup EXIT

# ---- 1. PostgreSQL commits/s
PGPORT=$(free_port)
mkdir -p "$T/pg" "$T/pgsock"
[ -n "$PGUSER_OS" ] && chown "$PGUSER_OS" "$T/pg" "$T/pgsock"
pgrun "$PGBIN/initdb" -D "$T/pg" -A trust -U dn -E UTF8 >/dev/null 2>&1 || { echo "initdb failed" >&2; exit 1; }
pgrun "$PGBIN/pg_ctl" -D "$T/pg" -w -l "$T/pgsock/pg.log" -o "-p $PGPORT -k $T/pgsock -c listen_addresses=127.0.0.1" start >/dev/null || exit 1
DB="postgres://dn@127.0.0.1:$PGPORT/postgres"
"$PGBIN/psql" "$DB" -qAtX -c "CREATE TABLE p(id BIGSERIAL PRIMARY KEY, time DOUBLE PRECISION, line TEXT, camera TEXT, request_id TEXT UNIQUE, sha TEXT, class TEXT, confidence DOUBLE PRECISION, scores TEXT, node TEXT)" || exit 1
cat >"$T/insert.sql" <<'EOF'
INSERT INTO p(time, line, camera, request_id, sha, class, confidence, scores, node) VALUES (extract(epoch from now()), 'L1', 'C1', md5(random()::text || clock_timestamp()::text), md5(random()::text), 'scratch', 0.93, '{"ok":0.01,"scratch":0.93,"spot":0.02,"crack":0.01,"patch":0.02,"inclusion":0.01}', 'node1');
EOF
SC=$("$PGBIN/psql" "$DB" -qAtX -c "SHOW synchronous_commit")
for c in 1 4; do
    tps=$("$PGBIN/pgbench" -n -c $c -j $c -T "$SECS" -f "$T/insert.sql" "$DB" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
    echo "capacity: postgresql commits/s (synchronous_commit=$SC, $c clients): $tps"
done

# ---- 2. broker messages/s with 200 KB payloads
MQPORT=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n' "$MQPORT" >"$T/m.conf"
"$MOSQ" -c "$T/m.conf" >/dev/null 2>&1 &
BPID=$!
sleep 0.5
N=${BROKER_MSGS:-500}
mosquitto_sub -p "$MQPORT" -q 1 -C "$N" -t 'cap/#' >/dev/null &
SUB=$!
sleep 0.3
t0=$(date +%s.%N)
"$PUB" --url "mqtt://127.0.0.1:$MQPORT" --count "$N" --size 204800 --topic-prefix cap >"$T/pub.out" 2>&1
wait $SUB
t1=$(date +%s.%N)
echo "capacity: broker 200 KB messages/s in ($(sed -n 's/.*: \([0-9.]*\) msg\/s.*/\1/p' "$T/pub.out") published, QoS 1)"
echo "capacity: broker 200 KB messages/s through (publisher -> broker -> 1 subscriber, QoS 1): $(python3 -c "print('%.1f' % ($N / ($t1 - $t0)))")"
kill $BPID; wait $BPID 2>/dev/null; BPID=""

# ---- 3. images/s per node count (bench/fleet.sh, no kill, as fast as the nodes take them)
for n in 1 2 3; do
    line=$(BUILD=$BUILD NODES=$n KILL=0 COUNT=${NODE_IMAGES:-600} RATE=2000 sh bench/fleet.sh 2>&1 | grep -E 'img/s|^fleet:' | tr '\n' ' ')
    echo "capacity: $n node(s): $line"
done
