#!/bin/sh
# The review page (docs/review.md) in headless Chromium against a real serve: a model
# (the narrow fixture converted with synthetic classes), serve with --review (everything
# queued), --store-images and a bearer token; four images posted with curl; then
# tests/review_page.js drives Chromium over the DevTools protocol like a reviewer (token
# and name typed, key 1, key s, a click on a class button) and the store must hold exactly
# those labels; then export --reviewed writes them as an ImageFolder + manifest. SKIPs
# visibly without chromium, node or sqlite3. Needs $DN_BIN (set by tests/run.sh).
BIN=${DN_BIN:-build/defectnet}
pass=0; fail=0
skip() { echo "SKIP review_page: $1"; echo "RESULT passed=0 failed=0 skipped=1"; exit 0; }
[ -x "$BIN" ] || skip "$BIN not built"
CHROME=${DN_CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROME" ] || skip "chromium not installed (Debian package chromium)"
command -v node >/dev/null 2>&1 || skip "node not installed (Debian package nodejs)"
node --experimental-websocket -e 'if (typeof WebSocket !== "function") process.exit(1)' 2>/dev/null ||
    skip "this node has no WebSocket (needs node >= 20.10)"
command -v sqlite3 >/dev/null 2>&1 || skip "sqlite3 not installed"
tmp=$(mktemp -d /tmp/dn_review_page.XXXXXX)
spid=; cpid=
cleanup() {
    [ -n "$cpid" ] && kill "$cpid" 2>/dev/null
    [ -n "$spid" ] && kill "$spid" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1: $2"; fail=$((fail + 1)); }
finish() { echo "RESULT passed=$pass failed=$fail skipped=0"; [ $fail -eq 0 ]; exit $?; }
# The first line sed expression $2 prints from log $1, waiting up to 30 s while process $3 lives.
wait_line() {
    for i in $(seq 1 300); do
        v=$(sed -n "$2" "$1" | head -n 1)
        [ -n "$v" ] && { echo "$v"; return; }
        kill -0 "$3" 2>/dev/null || return
        sleep 0.1
    done
}

"$BIN" synth --out "$tmp/syn" --per-class 4 --size 64 >/dev/null 2>&1 || { bad synth "synth failed"; finish; }
"$BIN" convert tests/fixtures/resnet/r18n.pth "$tmp/m.safetensors" --classes crack,inclusion,patch,scratch,spot \
    >/dev/null 2>&1 || { bad convert "convert failed"; finish; }
mkdir -p "$tmp/img"
echo "tok-$$-review" >"$tmp/token"
"$BIN" serve -m "$tmp/m.safetensors" --db "sqlite:$tmp/r.db" --listen 127.0.0.1:0 --workers 1 \
    --store-images "$tmp/img" --token-file "$tmp/token" --review accepted,uncertain,unknown >"$tmp/serve.log" 2>&1 &
spid=$!
port=$(wait_line "$tmp/serve.log" 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$spid")
[ -n "$port" ] || { bad serve_start "$(tail -n 3 "$tmp/serve.log")"; finish; }
base="http://127.0.0.1:$port"
auth="Authorization: Bearer tok-$$-review"
n=0
for c in crack patch scratch spot; do
    f=$(ls "$tmp/syn/$c" | head -n 1)
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "$auth" --data-binary "@$tmp/syn/$c/$f" "$base/v1/predict")
    [ "$code" = 200 ] && n=$((n + 1))
done
if [ $n -eq 4 ] && [ "$(sqlite3 "$tmp/r.db" "SELECT count(*) FROM review_items WHERE status='open'")" = 4 ]; then ok queued
else bad queued "$n posted, $(sqlite3 "$tmp/r.db" 'SELECT count(*) FROM review_items' 2>&1) queued"; finish; fi

code=$(curl -s -o "$tmp/page.html" -w '%{http_code}' "$base/review")
if [ "$code" = 200 ] && grep -q 'defectnet review' "$tmp/page.html"; then ok page_served; else bad page_served "HTTP $code"; fi

"$CHROME" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run --user-data-dir="$tmp/prof" \
    --remote-debugging-port=0 about:blank >"$tmp/chrome.log" 2>&1 &
cpid=$!
ws=$(wait_line "$tmp/chrome.log" 's/^DevTools listening on \(ws:.*\)$/\1/p' "$cpid")
[ -n "$ws" ] || { bad chromium_start "$(tail -n 3 "$tmp/chrome.log")"; finish; }
timeout 120 node --experimental-websocket tests/review_page.js "$ws" "$base/review" "tok-$$-review" ana >"$tmp/drive" 2>&1
rc=$?
if [ $rc -eq 0 ] && [ "$(grep -c '^labelled' "$tmp/drive")" = 2 ] && grep -q '^skipped' "$tmp/drive"; then ok labelled_through_page
else bad labelled_through_page "rc $rc: $(tail -n 3 "$tmp/drive")"; fi

# the store holds exactly what the page did: two final labels by ana, the skipped item still open
want=$(sed -n 's/^labelled \([0-9]*\) \(.*\)$/\1|\2|ana|final/p' "$tmp/drive" | sort)
got=$(sqlite3 "$tmp/r.db" "SELECT l.prediction_id, l.label, l.reviewer, r.status FROM review_labels l
      JOIN review_items r ON r.prediction_id = l.prediction_id ORDER BY l.prediction_id" | sort)
if [ -n "$want" ] && [ "$want" = "$got" ]; then ok store_matches_page; else bad store_matches_page "want [$want] got [$got]"; fi
sk=$(sed -n 's/^skipped \([0-9]*\)$/\1/p' "$tmp/drive")
if [ -n "$sk" ] && [ "$(sqlite3 "$tmp/r.db" "SELECT status FROM review_items WHERE prediction_id=$sk")" = open ]; then ok skipped_stays_open
else bad skipped_stays_open "item '$sk'"; fi

# export: the two reviewed images as an ImageFolder + manifest
"$BIN" export --db "sqlite:$tmp/r.db" --reviewed --out "$tmp/exp" >"$tmp/exp.log" 2>&1; rc=$?
rows=$(tail -n +2 "$tmp/exp/manifest.csv" 2>/dev/null | wc -l)
files=$(find "$tmp/exp" -mindepth 2 -type f | wc -l)
if [ $rc -eq 0 ] && [ "$rows" = 2 ] && [ "$files" = 2 ] && head -n 1 "$tmp/exp/manifest.csv" | grep -q '^path,label,split$'; then
    ok export_reviewed
else bad export_reviewed "rc $rc rows $rows files $files: $(cat "$tmp/exp.log")"; fi
first=$(sed -n 2p "$tmp/exp/manifest.csv")
lab=$(echo "$first" | cut -d, -f2); path=$(echo "$first" | cut -d, -f1)
if [ -f "$tmp/exp/$path" ] && [ "${path%%/*}" = "$lab" ] && echo "$first" | grep -q ',train$'; then ok export_layout
else bad export_layout "$first"; fi

# bad input: one line naming the problem, exit 2, nothing created
"$BIN" export --db "sqlite:$tmp/none.db" --reviewed --out "$tmp/x1" >/dev/null 2>"$tmp/e1"; rc1=$?
"$BIN" export --db "sqlite:$tmp/r.db" --out "$tmp/x2" >/dev/null 2>"$tmp/e2"; rc2=$?
"$BIN" compare --db "sqlite:$tmp/r.db" >/dev/null 2>"$tmp/e3"; rc3=$?
"$BIN" compare --db "sqlite:$tmp/r.db" -f json >"$tmp/c4" 2>/dev/null; rc4=$?
if [ $rc1 = 2 ] && [ "$(wc -l <"$tmp/e1")" = 1 ] && grep -q none.db "$tmp/e1" && [ ! -e "$tmp/x1" ] && [ ! -e "$tmp/none.db" ] &&
   [ $rc2 = 2 ] && grep -q -- --reviewed "$tmp/e2" && [ ! -e "$tmp/x2" ] &&
   [ $rc3 = 2 ] && grep -q "no shadow predictions" "$tmp/e3" && [ $rc4 = 2 ] && grep -q '"pairs":0' "$tmp/c4"; then ok export_compare_bad_input
else bad export_compare_bad_input "rc $rc1/$rc2/$rc3/$rc4: $(cat "$tmp/e1" "$tmp/e2" "$tmp/e3")"; fi

# retraining on the old data plus the reviewed images (training split only)
mkdir -p "$tmp/data"
for c in crack inclusion patch scratch spot; do cp -r "$tmp/syn/$c" "$tmp/data/$c"; done
"$BIN" train --data "$tmp/data" --add-data "$tmp/exp" --weights "$tmp/m.safetensors" --out "$tmp/m2.safetensors" \
    --freeze backbone --epochs 1 --image-size 64 --views 1 --no-aug --threads 1 --val 0.3 --test 0.3 >"$tmp/train.log" 2>&1; rc=$?
if [ $rc -eq 0 ] && [ -f "$tmp/m2.safetensors" ] && grep -q -- "--add-data $tmp/exp: 2 images added to the training split" "$tmp/train.log"
then ok train_add_data; else bad train_add_data "rc $rc: $(grep -i "add-data\|error\|defectnet train" "$tmp/train.log" | tail -n 3)"; fi
mkdir -p "$tmp/bogus/bogus"; cp "$tmp/syn/crack/$(ls "$tmp/syn/crack" | head -n 1)" "$tmp/bogus/bogus/"
"$BIN" train --data "$tmp/data" --add-data "$tmp/bogus" --weights "$tmp/m.safetensors" --out "$tmp/m3.safetensors" \
    --freeze backbone --epochs 1 --image-size 64 --threads 1 --val 0.3 --test 0.3 >"$tmp/train2.log" 2>&1; rc=$?
if [ $rc -eq 2 ] && grep -q "class 'bogus' is not a class of" "$tmp/train2.log" && [ ! -f "$tmp/m3.safetensors" ]; then ok train_add_data_unknown_class
else bad train_add_data_unknown_class "rc $rc: $(tail -n 2 "$tmp/train2.log")"; fi
finish
