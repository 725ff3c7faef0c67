#!/bin/sh
# CLI test of `defectnet serve` and `defectnet report` as processes: port 0 + the
# "listening PORT" line, POST with curl, SIGHUP reload, SIGTERM graceful exit,
# report formats from the same database, and one-line errors for bad options.
BIN=${DN_BIN:-build/defectnet}
MODEL=tests/fixtures/resnet/r18n.pth
pass=0; fail=0; skip=0
ok() { echo "ok   $1"; pass=$((pass+1)); }
ko() { echo "FAIL $1"; fail=$((fail+1)); }
check() { name=$1; shift; if "$@"; then ok "$name"; else ko "$name"; fi; }

if [ ! -x "$BIN" ] || ! command -v curl >/dev/null; then
    echo "SKIP serve_cli: needs $BIN and curl"; echo "RESULT passed=0 failed=0 skipped=1"; exit 0
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/dn-servecli-XXXXXX")
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$T"' EXIT

"$BIN" serve --model "$MODEL" --db "sqlite:$T/p.db" --listen 127.0.0.1:0 --workers 1 --header-timeout 5 \
    --max-connections 200 --max-per-client 50 --body-budget 67108864 --report-slots 2 >"$T/out" 2>"$T/err" &
PID=$!
i=0
while ! grep -q '^listening ' "$T/out" 2>/dev/null; do
    i=$((i+1)); if [ $i -gt 200 ] || ! kill -0 $PID 2>/dev/null; then break; fi; sleep 0.05
done
PORT=$(sed -n 's/^listening //p' "$T/out")
check serve_prints_port [ -n "$PORT" ]
U="http://127.0.0.1:$PORT"
for f in tests/fixtures/images/rgb_640x480.jpg tests/fixtures/images/gray_45x30.bmp tests/fixtures/images/rgba_33x29.png; do
    curl -s -o "$T/r.json" -w '%{http_code}' --data-binary "@$f" "$U/v1/predict?line=L1" >"$T/code"
    [ "$(cat "$T/code")" = 200 ] || ko "post $f"
done
Q=$(i=0; while [ $i -lt 70 ]; do printf 'a%d=b&' $i; i=$((i+1)); done)
check many_query_args_414 sh -c "[ \$(curl -s -o '$T/q.json' -w '%{http_code}' '$U/v1/predictions?$Q') = 414 ] && grep -q 'too many query arguments' '$T/q.json'"
check three_predictions_counted sh -c "curl -s '$U/metrics' | grep -q 'defectnet_http_requests_total{endpoint=\"predict\",code=\"200\"} 3'"
check bad_body_is_json_400 sh -c "[ \$(curl -s -o '$T/e.json' -w '%{http_code}' --data-binary 'not an image' '$U/v1/predict') = 400 ] && grep -q '\"error\"' '$T/e.json'"
kill -HUP $PID
i=0; while ! grep -q 'reloaded model' "$T/err" && [ $i -lt 100 ]; do i=$((i+1)); sleep 0.05; done
check sighup_reloads grep -q 'reloaded model' "$T/err"
check still_serving_after_hup sh -c "[ \$(curl -s -o /dev/null -w '%{http_code}' --data-binary @tests/fixtures/images/gray_64x48.jpg '$U/v1/predict') = 200 ]"
kill -TERM $PID
wait $PID; rc=$?
PID=
check sigterm_exits_0 [ $rc -eq 0 ]
check sigterm_logged grep -q 'stopped' "$T/err"

"$BIN" report --db "sqlite:$T/p.db" --group-by line --format csv --out "$T/r.csv"
check report_csv_counts grep -q '^L1,3,' "$T/r.csv"
"$BIN" report --db "sqlite:$T/p.db" --out "$T/r.html"
check report_html_by_extension grep -q '<svg' "$T/r.html"
"$BIN" report --db "sqlite:$T/p.db" --format json --from 2020-01-01 --to 2020-01-02 > "$T/r.json"
check report_json_empty_range grep -q '"total":0' "$T/r.json"

"$BIN" report --db "sqlite:$T/p.db" --group-by week 2>"$T/e1"; rc=$?
check report_bad_group_by sh -c "[ $rc -ne 0 ] && [ \$(wc -l < '$T/e1') -eq 1 ] && grep -q week '$T/e1'"
"$BIN" report --db "sqlite:/nonexistent/x.db" 2>"$T/e2"; rc=$?
check report_bad_db sh -c "[ $rc -ne 0 ] && grep -q /nonexistent/x.db '$T/e2'"
"$BIN" serve --model /nonexistent.pth --listen 127.0.0.1:0 2>"$T/e3"; rc=$?
check serve_bad_model sh -c "[ $rc -ne 0 ] && [ \$(wc -l < '$T/e3') -eq 1 ] && grep -q nonexistent.pth '$T/e3'"
"$BIN" serve --model "$MODEL" --workers zero 2>"$T/e4"; rc=$?
check serve_bad_option sh -c "[ $rc -eq 2 ] && grep -q workers '$T/e4'"
"$BIN" serve --model "$MODEL" --max-per-client 0 2>"$T/e6"; rc=$?
check serve_bad_limit sh -c "[ $rc -eq 2 ] && grep -q max-per-client '$T/e6'"
echo "" > "$T/tok"
"$BIN" serve --model "$MODEL" --token-file "$T/tok" 2>"$T/e5"; rc=$?
check serve_empty_token sh -c "[ $rc -eq 2 ] && grep -q empty '$T/e5'"

echo "RESULT passed=$pass failed=$fail skipped=$skip"
[ $fail -eq 0 ]
