#!/bin/sh
# `defectnet compare LIVE CANDIDATE --data|--manifest` end to end (docs/review.md, "Shadow model and
# compare"). Fixtures: a 6-class synthetic dataset (clean = the good class), a model trained on it in
# well under a second (the narrow fixture backbone, head only) and the same model with its most
# predicted class X renamed X_v2 (`convert --classes`). Every figure is checked against a value counted
# by hand from `predict --format csv` of the same models (the engine's own answers):
#   - the model against itself: agreement 1, no discordant pair, McNemar p = 1, "no significant difference";
#     accuracy / macro-F1 / escape intervals equal to `eval -f json` on the same images (the same functions);
#     its accuracy, escape and false-reject counts as predict's rows give them;
#   - against the renamed copy: the candidate loses exactly the X images the live model got right (recall
#     of X 0, every other recall delta 0), disagrees on every image the live model called X, McNemar
#     p = min(1, 2^(1 - r)) and the verdict that follows from it;
#   - on a manifest labelled with the live model's own answers: "candidate worse", and "candidate better"
#     with the two models swapped;
#   - the HTML page (self-contained, one thumbnail per listed disagreement), --split on train's split
#     manifest, an unreadable image (skipped, named, exit 1), bad input (exit 2, one stderr line, no stdout).
# Needs $DN_BIN (set by tests/run.sh).
BIN=${DN_BIN:-build/defectnet}
pass=0; fail=0
if [ ! -x "$BIN" ]; then
    echo "SKIP compare_cli: $BIN not built"; echo "RESULT passed=0 failed=0 skipped=1"; exit 0
fi
tmp=$(mktemp -d /tmp/dn_compare_cli.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1: $2"; fail=$((fail + 1)); }
finish() { echo "RESULT passed=$pass failed=$fail skipped=0"; [ $fail -eq 0 ]; exit $?; }

L=$tmp/L.safetensors; C=$tmp/C.safetensors
"$BIN" synth --out "$tmp/data" --per-class 12 --size 64 >/dev/null 2>&1
"$BIN" train --data "$tmp/data" --weights tests/fixtures/resnet/r18n.pth --out "$L" --stages head:150 --lr 0.05 \
    --patience 0 --image-size 64 --views 1 --threads 1 --quiet >"$tmp/train.log" 2>&1
"$BIN" predict -m "$L" -f csv "$tmp/data" >"$tmp/pl.csv" 2>/dev/null
# X: the class the live model predicts most often; the candidate calls it X_v2
X=$(awk -F, 'NR > 1 { c[$2]++ } END { for (k in c) if (c[k] > m) { m = c[k]; x = k } print x }' "$tmp/pl.csv")
classes=$("$BIN" info "$L" 2>/dev/null | sed -n 's/^classes: *[0-9]*: //p' | tr ' ' '\n' | sed 's/^[0-9]*=//' |
    sed "s/^$X\$/${X}_v2/" | paste -sd, -)
"$BIN" convert "$L" "$C" --classes "$classes" >/dev/null 2>&1
"$BIN" predict -m "$C" -f csv "$tmp/data" >"$tmp/pc.csv" 2>/dev/null
if [ -z "$X" ] || [ "$(wc -l <"$tmp/pl.csv")" -ne 73 ] || ! echo "$classes" | grep -q "${X}_v2" ||
    ! sed "s/,${X}_v2,/,$X,/g" "$tmp/pc.csv" | cmp -s - "$tmp/pl.csv"; then
    bad fixtures "train/predict/convert did not give the two models (X='$X', classes '$classes'): $(tail -n 2 "$tmp/train.log")"
    finish
fi
ok "fixtures (X = $X)"

# counts by hand from the live model's rows: truth = the folder
eval "$(awk -F, -v X="$X" 'NR > 1 { n = split($1, p, "/"); t = p[n - 1]; N++; a += ($2 == t); r += ($2 == X && t == X);
        d += ($2 == X); acc = ($2 == "clean" && $5 == "accepted"); if (t == "clean") { g++; fr += !acc } else { e += acc; nd++ } }
    END { printf "N=%d A=%d R=%d D=%d ESC=%d ND=%d FR=%d G=%d\n", N, a, r, d, e, nd, fr, g }' "$tmp/pl.csv")"
echo "     by hand: $N images, live right $A, $X right $R, predicted $X $D, escapes $ESC/$ND, false rejects $FR/$G"

# 1. the model against itself
"$BIN" compare "$L" "$L" --data "$tmp/data" >"$tmp/same.txt" 2>"$tmp/same.err"; rc=$?
"$BIN" compare "$L" "$L" --data "$tmp/data" -f json >"$tmp/same.json" 2>/dev/null
want="\"agreement\":{\"same_class\":$N,\"share\":1,\"same_decision\":$N,\"both_right\":$A,\"only_live_right\":0,\"only_candidate_right\":0,\"both_wrong\":$((N - A)),\"mcnemar_p\":1}"
if [ $rc -eq 0 ] && [ "$(tail -n 1 "$tmp/same.txt")" = "verdict: no significant difference (McNemar p=1)" ] &&
    grep -q "^agreement: same class $N of $N (100.00%)" "$tmp/same.txt" && grep -qF "$want" "$tmp/same.json" &&
    grep -qF '"disagreements_total":0,"disagreements":[]' "$tmp/same.json" && [ ! -s "$tmp/same.err" ]; then
    ok identical_models
else bad identical_models "rc $rc: $(tail -n 1 "$tmp/same.txt") | $(grep -o '"agreement":{[^}]*}' "$tmp/same.json")"; fi
if grep -qF "\"live\":{\"path\":\"$L\"" "$tmp/same.json" && grep -qF "\"correct\":$A,\"accuracy\":{\"k\":$A,\"n\":$N," "$tmp/same.json" &&
    grep -qF "\"escape\":{\"k\":$ESC,\"n\":$ND," "$tmp/same.json" && grep -qF "\"false_reject\":{\"k\":$FR,\"n\":$G," "$tmp/same.json" &&
    grep -qF '"good_class":"clean"' "$tmp/same.json"; then ok figures_match_predict
else bad figures_match_predict "$(head -c 600 "$tmp/same.json")"; fi

# the same functions as eval: its accuracy and macro-F1 intervals and escape interval, to the digit
"$BIN" eval --model "$L" --data "$tmp/data" -f json >"$tmp/ev.json" 2>/dev/null
eacc=$(grep -o '"intervals":{"level":0.95,"accuracy":\[[^]]*\]' "$tmp/ev.json" | sed 's/.*\[//; s/\]//')
ef1=$(grep -o '"macro_f1":[0-9.]*' "$tmp/ev.json" | head -n 1 | cut -d: -f2)
ef1ci=$(grep -o '"macro_f1":\[[^]]*\]' "$tmp/ev.json" | sed 's/.*\[//; s/\]//')
eesc=$(grep -o '"escape":{"rate":[^}]*}' "$tmp/ev.json" | sed 's/.*"ci95":\[//; s/\]}//')
if [ -n "$eacc" ] && [ -n "$ef1" ] && [ -n "$ef1ci" ] && [ -n "$eesc" ] &&
    grep -qF "\"n\":$N,\"rate\":$(awk -v a=$A -v n=$N 'BEGIN { printf "%.6g", a / n }'),\"ci95\":[$eacc]}" "$tmp/same.json" &&
    grep -qF "\"macro_f1\":$ef1,\"macro_f1_ci95\":[$ef1ci]" "$tmp/same.json" && grep -qF "\"ci95\":[$eesc]},\"false_reject\"" "$tmp/same.json"; then
    ok "figures_match_eval (accuracy CI $eacc, macro-F1 $ef1 CI $ef1ci)"
else bad figures_match_eval "eval: acc [$eacc] f1 $ef1 [$ef1ci] escape [$eesc]"; fi

# 2. against the copy with X renamed
"$BIN" compare "$L" "$C" --data "$tmp/data" -f json >"$tmp/ren.json" 2>"$tmp/ren.err"; rc=$?
P=$(awk -v r="$R" 'BEGIN { p = 2 * 0.5 ^ r; if (p > 1) p = 1; printf "%.6g", p }')
V=$(awk -v r="$R" 'BEGIN { print (2 * 0.5 ^ r < 0.05) ? "candidate worse" : "no significant difference" }')
want="\"agreement\":{\"same_class\":$((N - D)),\"share\":$(awk -v n=$N -v d=$D 'BEGIN { printf "%.6g", (n - d) / n }'),\"same_decision\":$N,\"both_right\":$((A - R)),\"only_live_right\":$R,\"only_candidate_right\":0,\"both_wrong\":$((N - A)),\"mcnemar_p\":$P}"
xrow=$(awk -v X="$X" -v r="$R" -v d="$D" 'BEGIN { printf "{\"class\":\"%s\",\"data_class\":true,\"images\":12,\"live\":{\"predicted\":%d,\"recall\":%.6g,\"precision\":%.6g},\"candidate\":{\"predicted\":0,\"recall\":0,\"precision\":null},\"recall_delta\":%.6g}", X, d, r / 12, r / d, -r / 12 }')
zero=$(grep -o '"recall_delta":[^}]*}' "$tmp/ren.json" | grep -c '"recall_delta":0}')
if [ $rc -eq 0 ] && grep -qF "$want" "$tmp/ren.json" && grep -qF "$xrow" "$tmp/ren.json" && [ "$zero" -eq 5 ] &&
    grep -qF "\"disagreements_total\":$D," "$tmp/ren.json" && grep -qF "\"verdict\":\"$V\"" "$tmp/ren.json" &&
    grep -qF "\"correct\":$((A - R)),\"accuracy\":{\"k\":$((A - R)),\"n\":$N," "$tmp/ren.json" &&
    grep -qF '"images_of_classes_it_lacks":12}' "$tmp/ren.json" &&
    grep -qF "{\"class\":\"${X}_v2\",\"data_class\":false,\"images\":0,\"live\":{\"predicted\":0," "$tmp/ren.json" &&
    [ "$(wc -l <"$tmp/ren.err")" -eq 2 ] && grep -q "note: .*C.safetensors lacks class(es) $X of" "$tmp/ren.err" &&
    [ "$(tail -n 1 "$tmp/ren.err")" = "verdict: $V (McNemar p=$(awk -v p="$P" 'BEGIN { printf "%.4g", p }'))" ]; then
    ok "renamed_class ($V, p=$P)"
else bad renamed_class "rc $rc: $(grep -o '"agreement":{[^}]*}' "$tmp/ren.json") want $want; $(cat "$tmp/ren.err")"; fi
# the listed disagreements: the first min(50, D) images the live model called X, both answers given
nl=$(grep -o "\"live\":{\"class\":\"$X\",\"confidence\":[0-9.e-]*,\"decision\":\"[a-z]*\"},\"candidate\":{\"class\":\"${X}_v2\"" "$tmp/ren.json" | wc -l)
first=$(awk -F, -v X="$X" 'NR > 1 && $2 == X { print $1; exit }' "$tmp/pl.csv")
if [ "$nl" -eq $((D < 50 ? D : 50)) ] && grep -qF "\"disagreements\":[{\"path\":\"$first\"" "$tmp/ren.json"; then ok disagreement_list
else bad disagreement_list "$nl listed of $D, first $first"; fi
"$BIN" compare "$L" "$C" --data "$tmp/data" >"$tmp/ren.txt" 2>/dev/null
if [ "$(tail -n 1 "$tmp/ren.txt")" = "verdict: $V (McNemar p=$(awk -v p="$P" 'BEGIN { printf "%.4g", p }'))" ] &&
    grep -q "^$X  *12  *[0-9.]*  *0.000  *[-+][0-9.]*  " "$tmp/ren.txt"; then ok renamed_text
else bad renamed_text "$(tail -n 1 "$tmp/ren.txt"); $(grep "^$X " "$tmp/ren.txt")"; fi

# 3. labels = the live model's own answers: live is right everywhere, the candidate loses the D X-images
awk -F, 'NR == 1 { print "path,label"; next } { print $1 "," $2 }' "$tmp/pl.csv" >"$tmp/own.csv"
P3=$(awk -v r="$D" 'BEGIN { p = 2 * 0.5 ^ r; if (p > 1) p = 1; printf "%.4g", p }')
"$BIN" compare "$L" "$C" --manifest "$tmp/own.csv" >"$tmp/w.txt" 2>/dev/null; rc1=$?
"$BIN" compare "$C" "$L" --manifest "$tmp/own.csv" >"$tmp/b.txt" 2>/dev/null; rc2=$?
if [ "$D" -lt 6 ]; then bad verdicts "the live model predicts $X only $D times: no significant test possible"
elif [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && [ "$(tail -n 1 "$tmp/w.txt")" = "verdict: candidate worse (McNemar p=$P3)" ] &&
    [ "$(tail -n 1 "$tmp/b.txt")" = "verdict: candidate better (McNemar p=$P3)" ] &&
    grep -q "^accuracy (95% Wilson)   100.00%" "$tmp/w.txt"; then ok "verdicts (p=$P3)"
else bad verdicts "rc $rc1/$rc2: $(tail -n 1 "$tmp/w.txt") | $(tail -n 1 "$tmp/b.txt")"; fi

# 4. HTML: self-contained, a thumbnail per listed disagreement; the verdict line on stderr
"$BIN" compare "$L" "$C" --data "$tmp/data" -o "$tmp/r.html" >"$tmp/h.out" 2>"$tmp/h.err"; rc=$?
th=$(grep -o 'src="data:image/png;base64,' "$tmp/r.html" | wc -l)
if [ $rc -eq 0 ] && [ ! -s "$tmp/h.out" ] && head -n 1 "$tmp/r.html" | grep -q '<!DOCTYPE html>' &&
    grep -q 'id="mcnemar"' "$tmp/r.html" && grep -q 'id="per-class"' "$tmp/r.html" && grep -q '</html>' "$tmp/r.html" &&
    ! grep -qi '<script\|src="http\|href="http' "$tmp/r.html" && [ "$th" -eq $((D < 50 ? D : 50)) ] &&
    grep -q "^verdict: $V (McNemar p=.*); report: $tmp/r.html" "$tmp/h.err"; then ok html_report
else bad html_report "rc $rc, $th thumbnails for $D: $(cat "$tmp/h.err")"; fi

# 5. --split on the split manifest train wrote (default: its test split)
nt=$(awk -F, 'NR > 1 && $3 == "test"' "$L.split.csv" | wc -l)
nv=$(awk -F, 'NR > 1 && $3 == "val"' "$L.split.csv" | wc -l)
"$BIN" compare "$L" "$L" --manifest "$L.split.csv" -f json >"$tmp/s1.json" 2>/dev/null; rc1=$?
"$BIN" compare "$L" "$L" --manifest "$L.split.csv" --split val -f json >"$tmp/s2.json" 2>/dev/null; rc2=$?
if [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && [ "$nt" -gt 0 ] && grep -qF "\"split\":\"test\",\"listed\":$nt,\"images\":$nt," "$tmp/s1.json" &&
    grep -qF "\"split\":\"val\",\"listed\":$nv,\"images\":$nv," "$tmp/s2.json"; then ok "split ($nt test, $nv val)"
else bad split "rc $rc1/$rc2: $(head -c 200 "$tmp/s1.json")"; fi

# 6. an unreadable image: skipped and named, the rest compared, exit 1
cp -r "$tmp/data" "$tmp/data2"
printf 'not a png' >"$tmp/data2/crack/zz_broken.png"
"$BIN" compare "$L" "$L" --data "$tmp/data2" -f json >"$tmp/u.json" 2>"$tmp/u.err"; rc=$?
if [ $rc -eq 1 ] && grep -q "skipped: .*zz_broken.png" "$tmp/u.err" && grep -qF "\"listed\":$((N + 1)),\"images\":$N,\"skipped\":1" "$tmp/u.json"; then
    ok unreadable_image_skipped
else bad unreadable_image_skipped "rc $rc: $(cat "$tmp/u.err")"; fi

# 7. decisions: the same weights with a confidence threshold (eval --threshold --write-model) give the same
#    classes, the uncertain answers counted as predict's decision column gives them, and the escape /
#    false-reject counts under that policy; --good-class re-aims both models' policies
U=$tmp/U.safetensors
"$BIN" eval --model "$L" --data "$tmp/data" --threshold 0.3 --write-model "$U" >/dev/null 2>&1
"$BIN" predict -m "$U" -f csv "$tmp/data" >"$tmp/pu.csv" 2>/dev/null
counts() { # good class, csv -> "UN ESC FR"
    awk -F, -v G="$1" 'NR > 1 { n = split($1, p, "/"); t = p[n - 1]; u += ($5 == "uncertain"); acc = ($2 == G && $5 == "accepted")
        if (t == G) fr += !acc; else e += acc } END { printf "%d %d %d", u, e, fr }' "$2"
}
set -- $(counts clean "$tmp/pu.csv"); UN=$1; UESC=$2; UFR=$3
"$BIN" compare "$L" "$U" --data "$tmp/data" -f json >"$tmp/d.json" 2>/dev/null; rc=$?
if [ $rc -eq 0 ] && [ "$UN" -gt 0 ] && grep -qF "\"same_class\":$N,\"share\":1,\"same_decision\":$((N - UN))," "$tmp/d.json" &&
    grep -qF "\"escape\":{\"k\":$UESC,\"n\":$ND," "$tmp/d.json" && grep -qF "\"false_reject\":{\"k\":$UFR,\"n\":$G," "$tmp/d.json" &&
    grep -qF "\"decisions\":{\"accepted\":$((N - UN)),\"uncertain\":$UN,\"unknown\":0}" "$tmp/d.json" &&
    grep -qF '"verdict":"no significant difference"' "$tmp/d.json"; then ok "decisions ($UN uncertain, escapes $UESC, false rejects $UFR)"
else bad decisions "rc $rc, $UN uncertain: $(grep -o '"candidate":{"path[^}]*}[^}]*}[^}]*}' "$tmp/d.json")"; fi
set -- $(counts crack "$tmp/pl.csv"); CESC=$2; CFR=$3
"$BIN" compare "$L" "$L" --data "$tmp/data" --good-class crack -f json >"$tmp/g.json" 2>/dev/null; rc=$?
if [ $rc -eq 0 ] && grep -qF '"good_class":"crack"' "$tmp/g.json" &&
    [ "$(grep -o "\"escape\":{\"k\":$CESC,\"n\":60," "$tmp/g.json" | wc -l)" -eq 2 ] &&
    [ "$(grep -o "\"false_reject\":{\"k\":$CFR,\"n\":12," "$tmp/g.json" | wc -l)" -eq 2 ]; then ok "good_class_given (crack: escapes $CESC, false rejects $CFR)"
else bad good_class_given "rc $rc: $(grep -o '"escape":{[^}]*}' "$tmp/g.json")"; fi

# 8. bad input: exit 2, exactly one stderr line naming the problem, nothing on stdout
printf 'garbage' >"$tmp/bad.safetensors"
mkdir -p "$tmp/empty"
odd=$(echo "$classes" | awk -F, -v OFS=, '{ for (i = 1; i <= NF; i++) $i = "q" $i; print }')
"$BIN" convert "$L" "$tmp/odd.safetensors" --classes "$odd" >/dev/null 2>&1
case_() { # name, word the line must contain, args...
    name=$1; want=$2; shift 2
    "$BIN" compare "$@" >"$tmp/o" 2>"$tmp/e" </dev/null; rc=$?
    if [ $rc -eq 2 ] && [ "$(wc -l <"$tmp/e")" -eq 1 ] && [ ! -s "$tmp/o" ] && grep -q "^defectnet compare: .*$want" "$tmp/e"; then
        ok "bad_$name"
    else bad "bad_$name" "rc $rc, $(wc -l <"$tmp/e") lines: $(head -n 2 "$tmp/e")"; fi
}
case_ model_missing "/nonexistent.safetensors" /nonexistent.safetensors "$L" --data "$tmp/data"
case_ model_corrupt "bad.safetensors" "$L" "$tmp/bad.safetensors" --data "$tmp/data"
case_ no_images "empty" "$L" "$C" --data "$tmp/empty"
case_ no_class_in_common "none of the classes" "$L" "$tmp/odd.safetensors" --data "$tmp/data"
case_ split_without_images "no images in split test" "$L" "$L" --data "$tmp/data" --split test
case_ split_unknown "--split" "$L" "$L" --data "$tmp/data" --split nope
case_ good_class_unknown "--good-class 'nope'" "$L" "$L" --data "$tmp/data" --good-class nope
case_ one_model "give two models" "$L" --data "$tmp/data"
case_ three_models "unexpected argument" "$L" "$L" "$L" --data "$tmp/data"
case_ no_data "--data" "$L" "$L"
case_ format_csv "--format 'csv'" "$L" "$L" --data "$tmp/data" -f csv
case_ batch_0 "--batch '0'" "$L" "$L" --data "$tmp/data" --batch 0
case_ db_and_models "unexpected argument" --db "sqlite:$tmp/x.db" "$L" "$L"
case_ db_with_data "--db takes only" --db "sqlite:$tmp/x.db" --data "$tmp/data"
case_ db_missing "no such database" --db "sqlite:$tmp/x.db"
case_ out_unwritable "cannot write" "$L" "$L" --data "$tmp/data" -o /nonexistent/r.html
finish
