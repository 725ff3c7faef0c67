#!/bin/sh
# The one command-line grammar (src/cli/args.c), checked on EVERY subcommand that
# `defectnet --help` lists (so a new command is covered without editing this file):
#   - `defectnet help CMD` and `defectnet CMD --help` exit 0, print the same text,
#     start with "usage: defectnet CMD" and end with the exit-code line;
#   - `-h` is the same as `--help`;
#   - an unknown option exits 2 with exactly one stderr line "defectnet CMD: unknown
#     option '--no-such-option' ..." and nothing on stdout;
#   - `--opt=value` is parsed like `--opt value` (a bad value given with '=' is named
#     in the error, a good one works).
# Then progress lines: piped stderr has none, DN_PROGRESS=1 forces them (predict,
# eval, explain, calibrate). Needs $DN_BIN (tests/run.sh sets it).
BIN=${DN_BIN:-build/defectnet}
pass=0; fail=0; skip=0
if [ ! -x "$BIN" ]; then
    echo "SKIP test_cli: $BIN not built"; echo "RESULT passed=0 failed=0 skipped=1"; exit 0
fi
tmp=$(mktemp -d /tmp/dn_cli.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
ok_() { echo "ok   $1"; pass=$((pass+1)); }
no_() { echo "FAIL $1: $2"; fail=$((fail+1)); }

EXIT_LINE="exit status: 0 ok, 1 partial (some inputs skipped), 2 usage or data error, 3 internal error"
cmds=$("$BIN" --help | sed -n '/^commands:/,/^$/p' | awk 'NF >= 2 && $1 != "commands:" {print $1}')
n=$(echo "$cmds" | wc -w)
if [ "$n" -ge 14 ]; then ok_ "command_list ($n commands)"; else no_ command_list "only $n commands parsed from --help"; fi

for c in $cmds; do
    "$BIN" help "$c" >"$tmp/h1" 2>"$tmp/e1"; r1=$?
    "$BIN" "$c" --help >"$tmp/h2" 2>"$tmp/e2"; r2=$?
    "$BIN" "$c" -h >"$tmp/h3" 2>&1; r3=$?
    why=""
    if [ $r1 -ne 0 ] || [ $r2 -ne 0 ] || [ $r3 -ne 0 ]; then why="exit $r1/$r2/$r3"
    elif [ -s "$tmp/e1" ] || [ -s "$tmp/e2" ]; then why="help wrote to stderr: $(head -n 1 "$tmp/e2")"
    elif ! cmp -s "$tmp/h1" "$tmp/h2" || ! cmp -s "$tmp/h2" "$tmp/h3"; then why="help CMD, CMD --help and CMD -h differ"
    elif ! head -n 1 "$tmp/h2" | grep -q "^usage: defectnet $c"; then why="first line is not 'usage: defectnet $c': $(head -n 1 "$tmp/h2")"
    elif [ "$(tail -n 1 "$tmp/h2")" != "$EXIT_LINE" ]; then why="last line is not the exit-code line: $(tail -n 1 "$tmp/h2")"
    fi
    if [ -z "$why" ]; then ok_ "help_$c"; else no_ "help_$c" "$why"; fi

    "$BIN" "$c" --no-such-option </dev/null >"$tmp/o" 2>"$tmp/e"; rc=$?
    lines=$(wc -l <"$tmp/e")
    if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && [ ! -s "$tmp/o" ] &&
        grep -q "^defectnet $c: unknown option '--no-such-option'" "$tmp/e"; then ok_ "unknown_option_$c"
    else no_ "unknown_option_$c" "exit $rc, $lines stderr lines: $(head -n 1 "$tmp/e")"; fi
    "$BIN" "$c" -Z </dev/null >"$tmp/o" 2>"$tmp/e"; rc=$?
    if [ $rc -eq 2 ] && [ "$(wc -l <"$tmp/e")" -eq 1 ] && grep -q "^defectnet $c: unknown option '-Z'" "$tmp/e"; then
        ok_ "unknown_short_option_$c"
    else no_ "unknown_short_option_$c" "exit $rc: $(head -n 1 "$tmp/e")"; fi
done

# fixtures: a narrow 5-class model whose classes match a 5-class synthetic dataset
M=$tmp/m.safetensors
"$BIN" synth -o "$tmp/ds" --per-class 4 --size 32 >/dev/null 2>&1
rm -rf "$tmp/ds/spot"
"$BIN" convert tests/fixtures/resnet/r18n.pth -o "$M" --classes clean,crack,inclusion,patch,scratch >/dev/null 2>&1
if [ ! -f "$M" ] || [ ! -d "$tmp/ds/clean" ]; then
    no_ fixtures "convert/synth did not produce the model and dataset"
    echo "RESULT passed=$pass failed=$fail skipped=$skip"; exit 1
fi
img=$(ls "$tmp"/ds/crack/* | head -n 1)

# --opt=value: a bad value after '=' is named (so the '=' form was split), per command
# (command, option=value, word the one-line error must contain)
while IFS='|' read -r c args want; do
    [ -z "$c" ] && continue
    # shellcheck disable=SC2086
    eval "set -- $args"
    "$BIN" "$c" "$@" </dev/null >"$tmp/o" 2>"$tmp/e"; rc=$?
    if [ $rc -eq 2 ] && grep -q "^defectnet $c: .*$want" "$tmp/e"; then ok_ "eq_form_$c"
    else no_ "eq_form_$c" "exit $rc: $(head -n 1 "$tmp/e")"; fi
done <<EOF
info|--format=xml "$M"|--format 'xml'
explain|--model="$M" --out="$tmp/x" --layer=layer9 "$img"|--layer 'layer9'
calibrate|--model="$M" --data="$tmp/ds" --k=0|--k '0'
predict|--model="$M" --batch=0 "$img"|--batch '0'
eval|--model="$M" --data="$tmp/ds" --batch=0|--batch '0'
quantize|--model="$M" --data="$tmp/ds" --mode=bf16 --out="$tmp/q" --batch=0|--batch '0'
train|--data="$tmp/ds" --weights=none --out="$tmp/t.safetensors" --batch=0|--batch '0'
serve|--model="$M" --workers=0|--workers '0'
synth|--out="$tmp/s" --size=5|--size '5'
report|--db="sqlite:$tmp/none.db" --format=pdf|--format 'pdf'
convert|tests/fixtures/resnet/r18n.pth --out="$tmp/c.safetensors" --arch-check=resnet99|resnet99
download|--out="$tmp/dl" --url=http://127.0.0.1:9/x.pth|--sha256
rules|check --model=/nonexistent/m.safetensors examples/rules.json|/nonexistent/m.safetensors
EOF

# --opt=value and short forms that work
"$BIN" info --format=json "$M" >"$tmp/j1" 2>"$tmp/e"; r1=$?
"$BIN" info -f json -m "$M" >"$tmp/j2" 2>>"$tmp/e"; r2=$?
"$BIN" info --json "$M" >"$tmp/j3" 2>"$tmp/e3"; r3=$?
if [ $r1 -eq 0 ] && [ $r2 -eq 0 ] && [ $r3 -eq 0 ] && head -c 9 "$tmp/j1" | grep -q '^{"file":' && cmp -s "$tmp/j1" "$tmp/j2" &&
    cmp -s "$tmp/j1" "$tmp/j3" && [ ! -s "$tmp/e3" ]; then ok_ info_format_forms
else no_ info_format_forms "exit $r1/$r2/$r3: $(head -n 1 "$tmp/e")"; fi
"$BIN" info "$M" --out="$tmp/info.json" >"$tmp/o" 2>"$tmp/e"; rc=$?
if [ $rc -eq 0 ] && [ ! -s "$tmp/o" ] && head -c 9 "$tmp/info.json" | grep -q '^{"file":'; then ok_ info_out_json_by_extension
else no_ info_out_json_by_extension "exit $rc: $(head -n 1 "$tmp/e")"; fi
"$BIN" info "$M" -o /nonexistent/dir/i.txt >/dev/null 2>"$tmp/e"; rc=$?
if [ $rc -eq 2 ] && grep -q "^defectnet info: /nonexistent/dir/i.txt: cannot write" "$tmp/e"; then ok_ info_out_unwritable
else no_ info_out_unwritable "exit $rc: $(head -n 1 "$tmp/e")"; fi
"$BIN" info "$M" "$M" >/dev/null 2>"$tmp/e"; rc=$?
if [ $rc -eq 2 ] && grep -q "^defectnet info: unexpected argument" "$tmp/e"; then ok_ info_two_models
else no_ info_two_models "exit $rc: $(head -n 1 "$tmp/e")"; fi
"$BIN" explain -m "$M" -o "$tmp/cam" "$img" >"$tmp/o" 2>"$tmp/e"; rc=$?
if [ $rc -eq 0 ] && [ -f "$tmp/cam/$(basename "$img").cam.png" ] && grep -q "cam.png" "$tmp/o"; then ok_ explain_short_forms
else no_ explain_short_forms "exit $rc: $(head -n 1 "$tmp/e")"; fi
"$BIN" explain -m "$M" -o "$M" "$img" >/dev/null 2>"$tmp/e"; rc=$?
if [ $rc -eq 2 ] && grep -q "^defectnet explain: $M: cannot create the output folder" "$tmp/e"; then ok_ explain_out_is_file
else no_ explain_out_is_file "exit $rc: $(head -n 1 "$tmp/e")"; fi
"$BIN" calibrate -m "$M" -d "$tmp/ds" -o "$tmp/mc.safetensors" --k=3 --bank=50 >"$tmp/o" 2>"$tmp/e"; rc=$?
if [ $rc -eq 0 ] && [ -f "$tmp/mc.safetensors" ] && grep -q "^wrote $tmp/mc.safetensors" "$tmp/o"; then ok_ calibrate_short_and_eq_forms
else no_ calibrate_short_and_eq_forms "exit $rc: $(head -n 1 "$tmp/e")"; fi

# predict -o FILE: format from the extension, nothing written for a bad model, unwritable named
"$BIN" predict -m "$M" -o "$tmp/p.csv" "$tmp/ds" >"$tmp/o" 2>"$tmp/e"; r1=$?
"$BIN" predict -m "$M" --out="$tmp/p.jsonl" "$tmp/ds" >>"$tmp/o" 2>>"$tmp/e"; r2=$?
if [ $r1 -eq 0 ] && [ $r2 -eq 0 ] && [ ! -s "$tmp/o" ] && head -n 1 "$tmp/p.csv" | grep -q '^path,class,confidence' &&
    [ "$(wc -l <"$tmp/p.csv")" -eq 21 ] && head -c 9 "$tmp/p.jsonl" | grep -q '^{"path":'; then ok_ predict_out_by_extension
else no_ predict_out_by_extension "exit $r1/$r2: $(head -n 1 "$tmp/e")"; fi
"$BIN" predict -m /nonexistent/m.safetensors -o "$tmp/never.csv" "$tmp/ds" >/dev/null 2>"$tmp/e"; rc=$?
if [ $rc -eq 2 ] && [ ! -e "$tmp/never.csv" ]; then ok_ predict_out_untouched_on_error
else no_ predict_out_untouched_on_error "exit $rc, file exists: $(ls "$tmp/never.csv" 2>&1)"; fi
"$BIN" predict -m "$M" -o /nonexistent/dir/p.csv "$tmp/ds" >/dev/null 2>"$tmp/e"; rc=$?
if [ $rc -eq 2 ] && grep -q "^defectnet predict: /nonexistent/dir/p.csv: cannot write" "$tmp/e"; then ok_ predict_out_unwritable
else no_ predict_out_unwritable "exit $rc: $(head -n 1 "$tmp/e")"; fi

# progress: never in piped stderr; DN_PROGRESS=1 forces it (a '\r' line with an ETA)
prog_() { # NAME -- ARGS...
    name=$1; shift 2
    env -u DN_PROGRESS "$BIN" "$@" >"$tmp/o" 2>"$tmp/e"; r1=$?
    DN_PROGRESS=1 "$BIN" "$@" >"$tmp/o" 2>"$tmp/ef"; r2=$?
    if [ $r1 -gt 1 ] || [ $r2 -gt 1 ]; then no_ "progress_$name" "exit $r1/$r2: $(head -n 1 "$tmp/e")"
    elif grep -q "ETA\|$(printf '\r')" "$tmp/e"; then no_ "progress_$name" "progress in piped stderr"
    elif ! grep -q "ETA" "$tmp/ef" || ! grep -q "$(printf '\r')" "$tmp/ef"; then no_ "progress_$name" "DN_PROGRESS=1 drew no progress line"
    else ok_ "progress_$name"; fi
}
prog_ predict -- predict -m "$M" -f csv "$tmp/ds"
prog_ eval -- eval -m "$M" -d "$tmp/ds"
prog_ explain -- explain -m "$M" -o "$tmp/cam2" "$img" "$img"
prog_ calibrate -- calibrate -m "$M" -d "$tmp/ds" --no-write
DN_PROGRESS=0 "$BIN" predict -m "$M" -f csv "$tmp/ds" >/dev/null 2>"$tmp/e"
if grep -q "ETA" "$tmp/e"; then no_ progress_off "DN_PROGRESS=0 still drew progress"; else ok_ progress_off; fi

echo "RESULT passed=$pass failed=$fail skipped=$skip"
[ $fail -eq 0 ]
