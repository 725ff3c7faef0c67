#!/bin/sh
# Unknown-input detection and heatmaps from the command line (docs/ood.md):
# calibrate fits a detector into the narrow fixture model (converted with the
# classes of a small synthetic dataset), info reports it, predict prints
# decision/ood_score (jsonl, csv), calibrate --ood measures a class the model lacks,
# explain writes PNG overlays, eval --ood measures the evaluated images against unknown
# sets (checked against predict's own decisions and scores) and eval's HTML gallery
# carries Grad-CAM overlays; bad input gets one line naming the problem and
# exit 1/2. Needs $DN_BIN (set by tests/run.sh).
BIN=${DN_BIN:-build/defectnet}
pass=0; fail=0
if [ ! -x "$BIN" ]; then
    echo "SKIP ood_cli: $BIN not built"; echo "RESULT passed=0 failed=0 skipped=1"; exit 0
fi
tmp=$(mktemp -d /tmp/dn_ood_cli.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1: $2"; fail=$((fail + 1)); }

"$BIN" synth --out "$tmp/syn" --per-class 12 --size 64 >/dev/null 2>&1 || bad synth "synth failed"
mkdir -p "$tmp/data"
for c in crack inclusion patch scratch spot; do cp -r "$tmp/syn/$c" "$tmp/data/$c"; done
"$BIN" convert tests/fixtures/resnet/r18n.pth "$tmp/m.safetensors" --classes crack,inclusion,patch,scratch,spot >/dev/null 2>&1 ||
    bad convert "convert failed"

"$BIN" info "$tmp/m.safetensors" >"$tmp/info0" 2>&1
if grep -q "^unknown inputs: none" "$tmp/info0"; then ok info_without_detector; else bad info_without_detector "$(grep unknown "$tmp/info0")"; fi

"$BIN" predict --model "$tmp/m.safetensors" --format jsonl "$tmp/data/crack" >"$tmp/p0" 2>&1
if grep -q '"decision": "accepted"\|"decision": "uncertain"' "$tmp/p0" && grep -q '"ood_score": null' "$tmp/p0"; then ok predict_without_detector
else bad predict_without_detector "$(head -c 300 "$tmp/p0")"; fi

"$BIN" calibrate --model "$tmp/m.safetensors" --data "$tmp/data" --out "$tmp/m2.safetensors" --k 3 --ood "$tmp/syn/clean" \
    --json "$tmp/ood.json" >"$tmp/cal" 2>&1; rc=$?
if [ $rc -eq 0 ] && grep -q "wrote" "$tmp/cal" && grep -q '"auroc"' "$tmp/ood.json" && grep -q "msp" "$tmp/cal"; then ok calibrate
else bad calibrate "rc $rc: $(tail -n 3 "$tmp/cal")"; fi

"$BIN" info "$tmp/m2.safetensors" >"$tmp/info1" 2>&1
if grep -q "^unknown inputs: score combo (knn k=3" "$tmp/info1" && grep -q "Grad-CAM reference" "$tmp/info1"; then ok info_with_detector
else bad info_with_detector "$(grep unknown "$tmp/info1")"; fi

"$BIN" predict --model "$tmp/m2.safetensors" --format csv "$tmp/data/crack" >"$tmp/p1" 2>&1
if head -n 1 "$tmp/p1" | grep -q "^path,class,confidence,uncertain,decision,ood_score" &&
    sed -n 2p "$tmp/p1" | grep -Eq ',(accepted|uncertain|unknown),-?[0-9]'; then ok predict_csv_fields
else bad predict_csv_fields "$(head -n 2 "$tmp/p1")"; fi

"$BIN" explain --model "$tmp/m2.safetensors" --out "$tmp/heat" --layer layer3 "$tmp/data/spot/"*_0001.png >"$tmp/ex" 2>&1; rc=$?
if [ $rc -eq 0 ] && ls "$tmp/heat/"*.cam.png >/dev/null 2>&1 && ! grep -q "warning" "$tmp/ex"; then ok explain
else bad explain "rc $rc: $(cat "$tmp/ex")"; fi

# eval --ood: the evaluated images against unknown sets with the model's detector
"$BIN" eval --model "$tmp/m2.safetensors" --data "$tmp/data" --ood "$tmp/syn/clean" --ood "$tmp/syn/clean/clean_0001.png" \
    --json "$tmp/ev.json" --html "$tmp/ev.html" >"$tmp/ev" 2>"$tmp/ev.err"; rc=$?
# every score and msp: one table row per set with AUROC and FPR in [0, 1] (text) and in the JSON
rows=$(awk '$1 ~ /^(knn|energy|rmd|combo|msp)$/ && NF >= 3 && $2 >= 0 && $2 <= 1 && $3 >= 0 && $3 <= 1 { n++ } END { print n + 0 }' "$tmp/ev")
jrows=$(grep -o '"[a-z]*":{"auroc":[0-9.]*,"fpr95":[0-9.]*}' "$tmp/ev.json" | awk -F'[:,}]' '$3 >= 0 && $3 <= 1 && $5 >= 0 && $5 <= 1 { n++ } END { print n + 0 }')
if [ $rc -eq 0 ] && [ "$rows" -eq 10 ] && [ "$jrows" -eq 10 ] && grep -q '"ood":{"score":"combo"' "$tmp/ev.json" &&
    grep -q "^unknown set .*/syn/clean: 12 images" "$tmp/ev"; then ok eval_ood_table
else bad eval_ood_table "rc $rc, $rows text rows, $jrows JSON rows: $(tail -n 3 "$tmp/ev.err")"; fi
if grep -q 'id="ood-table"' "$tmp/ev.html" && grep -q 'id="svg-ood-dist-0"' "$tmp/ev.html" &&
    grep -q 'id="svg-ood-dist-1"' "$tmp/ev.html" && ! grep -q 'svg-ood-dist-2' "$tmp/ev.html" &&
    [ "$(grep -o '<th colspan="2">\(knn\|energy\|rmd\|combo (model)\|msp\)</th>' "$tmp/ev.html" | wc -l)" -eq 5 ]; then
    ok eval_ood_html
else bad eval_ood_html "no table or distribution charts"; fi
# cross-check with predict (the engine's own ood_score and decision): the share flagged unknown and the
# model score's AUROC, in-distribution = every image of data/, unknown = syn/clean. One image may differ in
# its decision: the val image whose score is the threshold (the quantile) sits on it, and predict's batch
# path rounds differently from eval's.
"$BIN" eval --model "$tmp/m2.safetensors" --data "$tmp/data" --ood "$tmp/syn/clean" --format json >"$tmp/ev1.json" 2>/dev/null
"$BIN" predict --model "$tmp/m2.safetensors" --format csv "$tmp/data" >"$tmp/pin" 2>/dev/null
"$BIN" predict --model "$tmp/m2.safetensors" --format csv "$tmp/syn/clean" >"$tmp/pout" 2>/dev/null
want=$(awk -F, 'FNR == 1 { f++; next } { s[f, ++n[f]] = $6; u[f] += ($5 == "unknown") }
    END { for (i = 1; i <= n[1]; i++) for (j = 1; j <= n[2]; j++) a += (s[2, j] > s[1, i]) + 0.5 * (s[2, j] == s[1, i]);
          printf "%d %d %d %d %.6f", n[1], u[1], n[2], u[2], a / (n[1] * n[2]) }' "$tmp/pin" "$tmp/pout")
got=$(tr -d '\n' <"$tmp/ev1.json" |
    sed 's/.*"ood":{.*"in":{"split":"all","n":\([0-9]*\),"flagged":\([0-9.]*\)},"sets":\[{"set":"[^"]*","n":\([0-9]*\),"flagged":\([0-9.]*\),.*"combo":{"auroc":\([0-9.]*\).*/\1 \2 \3 \4 \5/' |
    awk 'NF == 5 { printf "%d %d %d %d %.6f", $1, $1 * $2 + 0.5, $3, $3 * $4 + 0.5, $5 }')
if [ -n "$got" ] && echo "$want $got" | awk '{ d = $2 - $7; if (d < 0) d = -d; e = $5 - $10; if (e < 0) e = -e
        exit !($1 == 60 && $6 == 60 && $3 == 12 && $8 == 12 && d <= 1 && $4 == $9 && e < 0.005) }'; then
    ok "eval_ood_matches_predict ($want | $got)"
else bad eval_ood_matches_predict "predict gives '$want' (n in, flagged, n out, flagged, combo AUROC), eval '$got'"; fi

# the gallery of mistakes carries a Grad-CAM overlay per thumbnail; --no-heatmaps none
"$BIN" eval --model "$tmp/m.safetensors" --data "$tmp/data" --html "$tmp/g1.html" >/dev/null 2>&1; rc1=$?
"$BIN" eval --model "$tmp/m.safetensors" --data "$tmp/data" --html "$tmp/g0.html" --no-heatmaps >/dev/null 2>&1; rc0=$?
n1=$(grep -o 'data:image/png;base64' "$tmp/g1.html" | wc -l); c1=$(grep -o 'class="cam" [^>]*src="data:image/png;base64,' "$tmp/g1.html" | wc -l)
n0=$(grep -o 'data:image/png;base64' "$tmp/g0.html" | wc -l); c0=$(grep -c 'class="cam"' "$tmp/g0.html")
if [ $rc1 -eq 0 ] && [ $rc0 -eq 0 ] && [ "$c1" -gt 0 ] && [ $((n1 - c1)) -eq "$c1" ] && [ "$n0" -eq "$c1" ] && [ "$c0" -eq 0 ] &&
    grep -q "no Grad-CAM reference" "$tmp/g1.html"; then ok eval_gallery_heatmaps
else bad eval_gallery_heatmaps "rc $rc1/$rc0, $n1 images with $c1 overlays, $n0 images with $c0 overlays with --no-heatmaps"; fi
if [ "$(grep -o 'class="cam" [^>]*src="data:image/png;base64,' "$tmp/ev.html" | wc -l)" -gt 0 ] &&
    grep -q "anchored to the model's own reference" "$tmp/ev.html"; then ok eval_gallery_heatmaps_anchored
else bad eval_gallery_heatmaps_anchored "no anchored overlays in the report of the calibrated model"; fi

# eval --ood errors: exit 2 and one line naming the set or the model
case2() {
    name=$1; want=$2; shift 2
    timeout 120 "$BIN" "$@" </dev/null >"$tmp/out" 2>"$tmp/err"; rc=$?
    if [ $rc -eq 2 ] && [ "$(grep -c . "$tmp/err")" -eq 1 ] && grep -q "^defectnet eval: .*$want" "$tmp/err"; then ok "$name"
    else bad "$name" "rc $rc, stderr: $(head -c 300 "$tmp/err")"; fi
}
mkdir -p "$tmp/empty" "$tmp/junk"
printf 'not an image' >"$tmp/junk/a.png"
case2 eval_ood_missing "--ood $tmp/nope: cannot access" eval --model "$tmp/m2.safetensors" --data "$tmp/data" --ood "$tmp/nope"
case2 eval_ood_empty "--ood $tmp/empty: no image files" eval --model "$tmp/m2.safetensors" --data "$tmp/data" --ood "$tmp/empty"
case2 eval_ood_no_detector "m.safetensors: model has no OOD data" eval --model "$tmp/m.safetensors" --data "$tmp/data" --ood "$tmp/syn/clean"
set -- eval --model "$tmp/m2.safetensors" --data "$tmp/data"
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17; do set -- "$@" --ood "$tmp/syn/clean"; done
case2 eval_ood_too_many "--ood: at most 16 sets" "$@"
"$BIN" eval --model "$tmp/m2.safetensors" --data "$tmp/data" --ood "$tmp/junk" >/dev/null 2>"$tmp/err"; rc=$?
if [ $rc -eq 2 ] && head -n 1 "$tmp/err" | grep -q "^defectnet eval: --ood $tmp/junk: 1 unreadable image(s) skipped, first: .*a.png" &&
    tail -n 1 "$tmp/err" | grep -q "^defectnet eval: --ood $tmp/junk: no readable images (1 file(s))"; then ok eval_ood_unreadable
else bad eval_ood_unreadable "rc $rc: $(cat "$tmp/err")"; fi

# bad input: exit 1 or 2, first stderr line "defectnet CMD: ..." naming the problem
case_() {
    name=$1; want=$2; shift 2
    timeout 120 "$BIN" "$@" </dev/null >"$tmp/out" 2>"$tmp/err"; rc=$?
    first=$(head -n 1 "$tmp/err")
    if [ $rc -ge 1 ] && [ $rc -le 2 ] && case "$first" in "defectnet $1: "*"$want"*) true;; *) false;; esac; then ok "$name"
    else bad "$name" "rc $rc, stderr: $first"; fi
}
cp -r "$tmp/syn/clean" "$tmp/data/clean"
case_ cal_foreign_class "class 'clean'" calibrate --model "$tmp/m.safetensors" --data "$tmp/data"
case_ cal_no_data "--data" calibrate --model "$tmp/m.safetensors"
case_ cal_bad_k "--k" calibrate --model "$tmp/m.safetensors" --data "$tmp/data" --k 0
case_ cal_bad_score "nope" calibrate --model "$tmp/m.safetensors" --data "$tmp/data" --score nope
case_ explain_layer "layer9" explain --model "$tmp/m2.safetensors" --out "$tmp/h2" --layer layer9 x.png
case_ explain_class "'nope'" explain --model "$tmp/m2.safetensors" --out "$tmp/h2" --class nope x.png
case_ explain_missing "missing.png" explain --model "$tmp/m2.safetensors" --out "$tmp/h2" "$tmp/missing.png"
case_ explain_no_out "--out" explain --model "$tmp/m2.safetensors" x.png
echo "RESULT passed=$pass failed=$fail skipped=0"
[ $fail -eq 0 ]
