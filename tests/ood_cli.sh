#!/bin/sh
# Unknown-input detection and heatmaps from the command line (docs/ood.md):
# calibrate fits a detector into the narrow fixture model (converted with the
# classes of a small synthetic dataset), info reports it, predict prints
# decision/ood_score (jsonl, csv), calibrate --ood measures a class the model lacks,
# explain writes PNG overlays; bad input gets one line naming the problem and
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
