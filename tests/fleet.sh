#!/bin/sh
# Fleet CLI test: `defectnet serve` MQTT/bus options refuse bad values with one line
# naming the option, and a short bench/fleet.sh run (mosquitto + PostgreSQL + 3 nodes,
# one SIGKILLed and restarted) loses and duplicates nothing. SKIPs visibly without
# mosquitto or the PostgreSQL server binaries.
BUILD=${BUILD:-build}
BIN=${DN_BIN:-$BUILD/defectnet}
MODEL=tests/fixtures/resnet/r18n.pth
pass=0; fail=0; skip=0
ok() { echo "ok   $1"; pass=$((pass+1)); }
ko() { echo "FAIL $1"; fail=$((fail+1)); }
one_line_err() { # name, expected exit, expected word, command...
    name=$1; want=$2; word=$3; shift 3
    "$@" >/dev/null 2>"$T/e"; rc=$?
    if [ $rc -eq "$want" ] && [ "$(wc -l <"$T/e")" -eq 1 ] && grep -q -- "$word" "$T/e"; then ok "$name"; else ko "$name (exit $rc: $(cat "$T/e"))"; fi
}
if [ ! -x "$BIN" ]; then echo "SKIP fleet: needs $BIN"; echo "RESULT passed=0 failed=0 skipped=1"; exit 0; fi
T=$(mktemp -d "${TMPDIR:-/tmp}/dn-fleettest-XXXXXX")
trap 'rm -rf "$T"' EXIT
S="$BIN serve --model $MODEL --db sqlite:$T/x.db --listen 127.0.0.1:0 --workers 1"
one_line_err mqtt_in_needs_topic 2 mqtt-topic $S --mqtt-in mqtt://127.0.0.1:1
one_line_err group_needs_mqtt_in 2 mqtt-in $S --mqtt-group g
one_line_err results_need_a_broker 2 mqtt-out $S --mqtt-results 'r/{camera}'
one_line_err bad_inflight 2 mqtt-inflight $S --mqtt-in mqtt://127.0.0.1:1 --mqtt-topic a --mqtt-inflight 0
one_line_err bad_topic_filter 2 "a/b+" $S --mqtt-in mqtt://127.0.0.1:1 --mqtt-topic 'a/b+'
one_line_err bad_broker_url 2 "http://x" $S --mqtt-in http://x --mqtt-topic a
one_line_err bad_fields 2 serial $S --mqtt-in mqtt://127.0.0.1:1 --mqtt-topic 'a/+' --mqtt-fields serial
one_line_err bad_sparkplug 2 onlygroup $S --mqtt-out mqtt://127.0.0.1:1 --sparkplug onlygroup
one_line_err bad_file_root 2 /nonexistent/r $S --mqtt-in mqtt://127.0.0.1:1 --mqtt-topic a --mqtt-file-root /nonexistent/r

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    echo "SKIP fleet_run: mosquitto not installed"; skip=$((skip+1))
elif [ -z "${DN_PG_BIN:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "SKIP fleet_run: PostgreSQL server binaries not found (set DN_PG_BIN)"; skip=$((skip+1))
else
    # /healthz: 503 "degraded" while the broker is down, 200 once both MQTT links reconnected
    MQP=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    $S --node hz --mqtt-in "mqtt://127.0.0.1:$MQP" --mqtt-topic 'plant/+/image' --mqtt-results 'r/{camera}' >"$T/hz.out" 2>"$T/hz.err" &
    HZ=$!
    i=0; while ! grep -q '^listening ' "$T/hz.out" 2>/dev/null && [ $i -lt 200 ]; do i=$((i+1)); sleep 0.05; done
    HP=$(sed -n 's/^listening //p' "$T/hz.out")
    code=$(curl -s -o "$T/hz1.json" -w '%{http_code}' "http://127.0.0.1:$HP/healthz")
    if [ "$code" = 503 ] && grep -q '"status":"degraded"' "$T/hz1.json" && grep -q '"broker":"disconnected"' "$T/hz1.json" && grep -q '"database":"ok"' "$T/hz1.json"; then ok healthz_broker_down; else ko "healthz_broker_down ($code $(cat "$T/hz1.json"))"; fi
    printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$MQP" >"$T/m.conf"
    MOSQ=$(command -v mosquitto 2>/dev/null || echo /usr/sbin/mosquitto)
    "$MOSQ" -c "$T/m.conf" >/dev/null 2>&1 &
    MP=$!
    i=0; code=0
    while [ $i -lt 60 ]; do
        code=$(curl -s -o "$T/hz2.json" -w '%{http_code}' "http://127.0.0.1:$HP/healthz")
        [ "$code" = 200 ] && break
        i=$((i+1)); sleep 0.5
    done
    if [ "$code" = 200 ] && grep -q '"mqtt_in":{"broker":"connected"' "$T/hz2.json" && grep -q '"bus":{"broker":"connected"}' "$T/hz2.json"; then ok healthz_reconnected; else ko "healthz_reconnected ($code $(cat "$T/hz2.json"))"; fi
    kill $HZ; wait $HZ
    kill $MP; wait $MP 2>/dev/null
    BUILD=$BUILD COUNT=120 RATE=200 sh bench/fleet.sh >"$T/fleet.out" 2>&1; rc=$?
    last=$(tail -1 "$T/fleet.out")
    echo "  $last"
    if [ $rc -eq 0 ] && echo "$last" | grep -Eq '^fleet: 120 published, 120 recorded once, 0 lost, 0 duplicated, 3 nodes, 1 killed$'; then
        ok fleet_run
    else
        ko "fleet_run (exit $rc)"; sed 's/^/  | /' "$T/fleet.out" | tail -20
    fi
fi
echo "RESULT passed=$pass failed=$fail skipped=$skip"
[ $fail -eq 0 ]
