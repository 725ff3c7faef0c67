#!/bin/sh
# `defectnet rules check|dry-run` on examples/rules.json and on broken inputs.
# Needs $DN_BIN (set by tests/run.sh). Prints one line per check and a RESULT line.
BIN=${DN_BIN:-build/defectnet}
pass=0; fail=0; skip=0
ok()   { echo "ok   $1"; pass=$((pass+1)); }
bad()  { echo "FAIL $1"; fail=$((fail+1)); }
if [ ! -x "$BIN" ]; then
    echo "SKIP rules_cli: $BIN not built"; echo "RESULT passed=0 failed=0 skipped=1"; exit 0
fi
tmp=$(mktemp -d /tmp/dn_rules_cli.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# 1. the documented example parses and is listed
out=$("$BIN" rules check examples/rules.json 2>&1); rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q '^examples/rules.json: 4 rules' &&
   echo "$out" | grep -q "rule 'scratch-burst': when class=scratches 3-of-last-5-on-line; cooldown 300s per line"; then
    ok check_example
else bad "check_example (rc $rc): $out"; fi

# 2. a broken file: exit 1, one line naming file, rule and problem
cat > "$tmp/bad.json" <<'EOF'
{"rules": [{"name": "stop-line", "when": {"confidence": 0.9},
            "actions": [{"type": "command", "argv": ["true"]}]}]}
EOF
err=$("$BIN" rules check "$tmp/bad.json" 2>&1 >/dev/null); rc=$?
if [ $rc -eq 2 ] && [ "$(echo "$err" | wc -l)" -eq 1 ] &&
   echo "$err" | grep -q "bad.json: rule 'stop-line': unknown condition \"confidence\""; then
    ok check_bad_file
else bad "check_bad_file (rc $rc): $err"; fi

# 3. dry-run over JSON lines: history (3 of last 5), uncertain, class+confidence rules
cat > "$tmp/preds.jsonl" <<'EOF'
{"id":1,"time":100,"class":"scratches","confidence":0.95,"decision":"accepted","line":"L1"}
{"id":2,"time":101,"class":"scratches","confidence":0.4,"decision":"uncertain","line":"L1"}

{"id":3,"time":102,"class":"scratches","confidence":0.8,"decision":"accepted","line":"L1"}
{"id":4,"time":103,"class":"scratches","confidence":0.8,"decision":"accepted","line":"L2"}
{"id":5,"time":104,"class":"scratches","confidence":0.8,"decision":"accepted","line":"L1"}
EOF
out=$("$BIN" rules dry-run examples/rules.json "$tmp/preds.jsonl" 2>&1); rc=$?
# 1: divert; 2: review x2; 3: burst x2 (3 of 3 on L1); 4: nothing (L2 has 1); 5: cooldown
cat > "$tmp/want.txt" <<'EOF'
prediction 1: rule 'divert-confident-scratches' dry-run: would run /usr/local/bin/divert-part --gate 2 with the prediction JSON (91 bytes) on stdin, timeout 2 s
prediction 2: rule 'uncertain-for-review' dry-run: would publish the prediction JSON (91 bytes) to topic 'factory/L1/review/scratches' on 127.0.0.1:1883, qos 1, retain false
prediction 2: rule 'uncertain-for-review' dry-run: would run /bin/sh -c "cat >> /var/lib/defectnet/review.jsonl && echo >> /var/lib/defectnet/review.jsonl" with the prediction JSON (91 bytes) on stdin, timeout 5 s
prediction 3: rule 'scratch-burst' dry-run: would POST the prediction JSON (90 bytes) to http://127.0.0.1:8080/page, timeout 5 s
prediction 3: rule 'scratch-burst' dry-run: would publish the prediction JSON (90 bytes) to topic 'factory/L1/stop' on 127.0.0.1:1883, qos 1, retain true
5 predictions, 5 actions would fire
EOF
if [ $rc -eq 0 ] && [ "$out" = "$(cat "$tmp/want.txt")" ]; then ok dry_run_jsonl
else bad "dry_run_jsonl (rc $rc):"; echo "$out"; fi

# 4. the same predictions as one JSON document (GET /v1/predictions shape), from stdin
{ printf '{"predictions": ['; sed '/^$/d' "$tmp/preds.jsonl" | paste -sd, -; printf ']}\n'; } > "$tmp/doc.json"
out=$("$BIN" rules dry-run examples/rules.json - < "$tmp/doc.json" 2>&1); rc=$?
if [ $rc -eq 0 ] && echo "$out" | tail -1 | grep -q '^5 predictions, 5 actions would fire$'; then ok dry_run_document
else bad "dry_run_document (rc $rc): $out"; fi

# 5. broken predictions and a missing rules file: exit 1 with a one-line message
err=$(printf '{"id":1,"class":"x","confidence":0.5}\nnot json\n' | "$BIN" rules dry-run examples/rules.json 2>&1 >/dev/null); rc=$?
if [ $rc -eq 2 ] && echo "$err" | grep -q '^defectnet rules: stdin:2: invalid JSON'; then ok dry_run_bad_json
else bad "dry_run_bad_json (rc $rc): $err"; fi
err=$(printf '{"id":1,"confidence":0.5}\n' | "$BIN" rules dry-run examples/rules.json 2>&1 >/dev/null); rc=$?
if [ $rc -eq 2 ] && echo "$err" | grep -q 'stdin:1: prediction needs "class"'; then ok dry_run_missing_class
else bad "dry_run_missing_class (rc $rc): $err"; fi
err=$("$BIN" rules check "$tmp/none.json" 2>&1 >/dev/null); rc=$?
if [ $rc -eq 2 ] && echo "$err" | grep -q 'none.json: cannot open'; then ok check_missing_file
else bad "check_missing_file (rc $rc): $err"; fi
"$BIN" rules >/dev/null 2>&1; rc=$?
if [ $rc -eq 2 ]; then ok usage_exit_2; else bad "usage_exit_2 (rc $rc)"; fi

echo "RESULT passed=$pass failed=$fail skipped=$skip"
[ $fail -eq 0 ]
