#!/bin/sh
# Bad input to every subcommand: each case must exit 1 or 2 (never 0, never a
# signal or a timeout), print at least one line on stderr whose FIRST line is
# "defectnet <command>: ..." and names the offending thing (a given substring),
# and show no sanitizer report (under `make SAN=1 test` ASan/UBSan/LSan run
# inside the binary). Needs $DN_BIN (set by tests/run.sh); builds its small
# fixtures (a converted narrow model, a synthetic dataset) in a temp folder.
BIN=${DN_BIN:-build/defectnet}
pass=0; fail=0; skip=0
if [ ! -x "$BIN" ]; then
    echo "SKIP cli_badinput: $BIN not built"; echo "RESULT passed=0 failed=0 skipped=1"; exit 0
fi
tmp=$(mktemp -d /tmp/dn_cli_bad.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# case NAME WANT -- ARGS...: WANT must appear in the first stderr line.
case_() {
    name=$1; want=$2; shift 3
    timeout 120 "$BIN" "$@" </dev/null >"$tmp/out" 2>"$tmp/err"; rc=$?
    first=$(head -n 1 "$tmp/err")
    why=""
    if [ $rc -eq 0 ]; then why="exit 0"
    elif [ $rc -gt 2 ]; then why="exit $rc (crash, signal or timeout)"
    elif grep -q 'Sanitizer\|runtime error\|LeakSanitizer' "$tmp/err"; then why="sanitizer report"
    else
        case "$first" in
            "defectnet $1: "*) ;;
            *) why="first stderr line is not 'defectnet $1: ...'" ;;
        esac
        [ -z "$why" ] && case "$first" in *"$want"*) ;; *) why="first line does not name '$want'" ;; esac
    fi
    if [ -z "$why" ]; then echo "ok   $name"; pass=$((pass+1))
    else echo "FAIL $name: $why: $first"; grep -m3 'Sanitizer\|runtime error' "$tmp/err"; fail=$((fail+1)); fi
}

# full_ NAME -- ARGS...: standard output is /dev/full; results that cannot be
# written must not look like success (exit 1 or 2 and a line saying so).
full_() {
    name=$1; shift 2
    if [ ! -w /dev/full ]; then echo "SKIP $name: no /dev/full"; skip=$((skip+1)); return; fi
    timeout 120 "$BIN" "$@" </dev/null >/dev/full 2>"$tmp/err"; rc=$?
    if [ $rc -ge 1 ] && [ $rc -le 2 ] && grep -q "defectnet $1: .*standard output" "$tmp/err"; then
        echo "ok   $name"; pass=$((pass+1))
    else echo "FAIL $name: exit $rc: $(head -n 1 "$tmp/err")"; fail=$((fail+1)); fi
}

# good_ NAME WANT -- ARGS...: exit 0 and WANT somewhere in standard output.
good_() {
    name=$1; want=$2; shift 3
    timeout 120 "$BIN" "$@" </dev/null >"$tmp/out" 2>"$tmp/err"; rc=$?
    if [ $rc -eq 0 ] && grep -qF -- "$want" "$tmp/out"; then echo "ok   $name"; pass=$((pass+1))
    else echo "FAIL $name: exit $rc, stdout lacks '$want': $(head -n 1 "$tmp/err")"; fail=$((fail+1)); fi
}

# fixtures: a 5-class narrow model whose classes match a 5-class synthetic dataset
M=$tmp/m.safetensors
"$BIN" convert tests/fixtures/resnet/r18n.pth "$M" --classes clean,crack,inclusion,patch,scratch >/dev/null 2>&1
"$BIN" synth --out "$tmp/ds" --per-class 3 --size 32 >/dev/null 2>&1
rm -rf "$tmp/ds/spot"
if [ ! -f "$M" ] || [ ! -d "$tmp/ds/clean" ]; then
    echo "FAIL fixtures: convert/synth did not produce the model and dataset"
    echo "RESULT passed=0 failed=1 skipped=0"; exit 1
fi
printf 'not an image' > "$tmp/bad.png"
printf 'path,label\n' > "$tmp/empty.csv"
mkdir -p "$tmp/empty"
: > "$tmp/afile"
ok=$(ls "$tmp"/ds/clean/* | head -n 1)

# convert / info
case_ convert_missing_input "/nonexistent.pth" -- convert /nonexistent.pth "$tmp/x.safetensors"
case_ convert_dir_input "$tmp" -- convert "$tmp" "$tmp/x.safetensors"
case_ convert_not_weights "bad.png" -- convert "$tmp/bad.png" "$tmp/x.safetensors"
case_ convert_unwritable_out "/nonexistent/dir/x.safetensors" -- convert tests/fixtures/resnet/r18n.pth /nonexistent/dir/x.safetensors
case_ convert_out_is_dir "$tmp" -- convert tests/fixtures/resnet/r18n.pth "$tmp"
case_ convert_empty_classes "--classes" -- convert tests/fixtures/resnet/r18n.pth "$tmp/x.safetensors" --classes ""
case_ convert_classes_file_missing "/nonexistent" -- convert tests/fixtures/resnet/r18n.pth "$tmp/x.safetensors" --classes-file /nonexistent
case_ convert_unknown_option "--bogus" -- convert --bogus
case_ info_missing "/nonexistent" -- info /nonexistent
case_ info_dir "$tmp" -- info "$tmp"
case_ info_not_model "bad.png" -- info "$tmp/bad.png"
case_ info_unknown_option "--bogus" -- info --bogus

# predict
case_ predict_model_missing "/nonexistent" -- predict --model /nonexistent "$ok"
case_ predict_model_dir "$tmp" -- predict --model "$tmp" "$ok"
case_ predict_no_paths "no image" -- predict --model "$M"
case_ predict_path_missing "/nonexistent.png" -- predict --model "$M" /nonexistent.png
case_ predict_empty_dir "no image" -- predict --model "$M" "$tmp/empty"
case_ predict_not_image "bad.png" -- predict --model "$M" "$tmp/bad.png"
case_ predict_batch_0 "--batch" -- predict --model "$M" --batch 0 "$ok"
case_ predict_batch_abc "--batch" -- predict --model "$M" --batch abc "$ok"
case_ predict_threads_neg "--threads" -- predict --model "$M" --threads -1 "$ok"
case_ predict_topk_huge "--top-k" -- predict --model "$M" --top-k 99999 "$ok"
case_ predict_format "xml" -- predict --model "$M" --format xml "$ok"
case_ predict_unknown_option "--bogus" -- predict --bogus
full_ predict_stdout_full -- predict --model "$M" --format csv "$tmp/ds"
full_ info_stdout_full -- info "$M"
full_ info_json_stdout_full -- info --json "$M"

# synth
case_ synth_unwritable "/proc/dn-synth" -- synth --out /proc/dn-synth
case_ synth_out_is_file "afile" -- synth --out "$tmp/afile"
case_ synth_size_5 "--size" -- synth --out "$tmp/s" --size 5
case_ synth_per_class_0 "--per-class" -- synth --out "$tmp/s" --per-class 0
case_ synth_missing_out "--out" -- synth
case_ synth_size_eq_5 "--size '5'" -- synth --out="$tmp/s" --size=5
case_ synth_short_o_no_value "'-o' needs a value" -- synth -o
case_ synth_extra_arg "unexpected argument 'extra'" -- synth -o "$tmp/s" extra

# train (argument and data errors, before any training)
case_ train_data_missing "/nonexistent" -- train --data /nonexistent --weights none --out "$tmp/t.safetensors"
case_ train_empty_manifest "empty.csv" -- train --data "$tmp/empty.csv" --weights none --out "$tmp/t.safetensors"
case_ train_batch_0 "--batch" -- train --data "$tmp/ds" --weights none --out "$tmp/t.safetensors" --batch 0
case_ train_threads_neg "--threads" -- train --data "$tmp/ds" --weights none --out "$tmp/t.safetensors" --threads -1
case_ train_image_size_5 "--image-size" -- train --data "$tmp/ds" --weights none --out "$tmp/t.safetensors" --image-size 5
case_ train_lr_abc "--lr" -- train --data "$tmp/ds" --weights none --out "$tmp/t.safetensors" --lr abc
case_ train_weights_missing "/nonexistent.pth" -- train --data "$tmp/ds" --weights /nonexistent.pth --out "$tmp/t2.safetensors" --quiet
case_ train_out_missing "--out" -- train --data "$tmp/ds" --weights none
case_ train_out_unwritable "/nonexistent" -- train --data "$tmp/ds" --weights none --out /nonexistent/t.safetensors
case_ train_out_is_dir "is a directory" -- train --data "$tmp/ds" --weights none --out "$tmp"
case_ train_checkpoint_unwritable "--checkpoint" -- train --data "$tmp/ds" --weights none --out "$tmp/t3.safetensors" --checkpoint /nonexistent/c.ckpt

# eval
case_ eval_model_missing "/nonexistent" -- eval --model /nonexistent --data "$tmp/ds"
case_ eval_data_missing "/nonexistent" -- eval --model "$M" --data /nonexistent
case_ eval_batch_0 "--batch" -- eval --model "$M" --data "$tmp/ds" --batch 0
case_ eval_threads_neg "--threads" -- eval --model "$M" --data "$tmp/ds" --threads -1
case_ eval_topk_huge "--top-k" -- eval --model "$M" --data "$tmp/ds" --top-k 99999
case_ eval_html_unwritable "/nonexistent/x.html" -- eval --model "$M" --data "$tmp/ds" --html /nonexistent/x.html

# quantize
case_ quantize_model_missing "/nonexistent" -- quantize --model /nonexistent --data "$tmp/ds" --mode bf16 --out "$tmp/q.safetensors"
case_ quantize_mode "fp4" -- quantize --model "$M" --data "$tmp/ds" --mode fp4 --out "$tmp/q.safetensors"
case_ quantize_val_missing "/nonexistent" -- quantize --model "$M" --data /nonexistent --mode bf16 --out "$tmp/q.safetensors"
case_ quantize_val_deprecated "deprecated" -- quantize --model "$M" --val /nonexistent --mode bf16 --out "$tmp/q.safetensors"
case_ quantize_batch_eq_0 "--batch '0'" -- quantize -m "$M" -d "$tmp/ds" --mode=bf16 -o "$tmp/q.safetensors" --batch=0
case_ quantize_batch_0 "--batch" -- quantize --model "$M" --data "$tmp/ds" --mode bf16 --out "$tmp/q.safetensors" --batch 0

# serve (all fail before binding or right at it)
case_ serve_model_missing "/nonexistent" -- serve --model /nonexistent --db "sqlite:$tmp/s.db" --listen 127.0.0.1:0
case_ serve_db_unwritable "/nonexistent/s.db" -- serve --model "$M" --db sqlite:/nonexistent/s.db --listen 127.0.0.1:0
case_ serve_bad_port "99999" -- serve --model "$M" --db "sqlite:$tmp/s.db" --listen 127.0.0.1:99999
case_ serve_workers_0 "--workers" -- serve --model "$M" --db "sqlite:$tmp/s.db" --listen 127.0.0.1:0 --workers 0
case_ serve_watch_missing "/nonexistent" -- serve --model "$M" --db "sqlite:$tmp/s.db" --listen 127.0.0.1:0 --watch /nonexistent

# report / rules
case_ report_db_missing "/nonexistent/x.db" -- report --db sqlite:/nonexistent/x.db
case_ report_db_not_db "bad.png" -- report --db "sqlite:$tmp/bad.png"
case_ report_format "pdf" -- report --db "sqlite:$tmp/r.db" --format pdf
case_ report_from "yesterday" -- report --db "sqlite:$tmp/r.db" --from yesterday
case_ report_db_not_created "no such database" -- report --db "sqlite:$tmp/never.db"
if [ -e "$tmp/never.db" ]; then echo "FAIL report_db_not_created: the report created $tmp/never.db"; fail=$((fail+1)); fi
case_ report_tz "Mars/Olympus" -- report --db "sqlite:$tmp/never.db" --tz Mars/Olympus
case_ report_group_by "week" -- report --db "sqlite:$tmp/never.db" -g week
case_ report_format_eq "pdf" -- report --db="sqlite:$tmp/never.db" -f pdf
case_ rules_missing "/nonexistent" -- rules check /nonexistent
case_ rules_dir "$tmp" -- rules check "$tmp"
case_ rules_garbage "bad.png" -- rules check "$tmp/bad.png"
case_ rules_model_missing "/nonexistent" -- rules check examples/rules.json --model /nonexistent
case_ rules_no_subcommand "expected 'check FILE'" -- rules
case_ version_extra "unexpected argument 'x'" -- version x

# the one grammar: --version/-V, help CMD == CMD --help, --opt=value, short options
good_ version_long "defectnet $(sed -n 's/^#define DN_VERSION "\(.*\)"/\1/p' include/defectnet.h)" -- --version
good_ version_short "defectnet " -- -V
good_ help_cmd "usage: defectnet synth" -- help synth
good_ synth_eq_form "wrote 6 images" -- synth --out="$tmp/s2" --per-class=1 --size=32
good_ synth_short_o "wrote 6 images" -- synth -o "$tmp/s3" --per-class 1 --size 32
"$BIN" help quantize >"$tmp/h1" 2>&1; "$BIN" quantize --help >"$tmp/h2" 2>&1
if cmp -s "$tmp/h1" "$tmp/h2"; then echo "ok   help_equals_dash_dash_help"; pass=$((pass+1))
else echo "FAIL help_equals_dash_dash_help"; fail=$((fail+1)); fi
"$BIN" help nope >/dev/null 2>"$tmp/err"; rc=$?
if [ $rc -eq 2 ] && grep -q "defectnet help: unknown command 'nope'" "$tmp/err"; then echo "ok   help_unknown"; pass=$((pass+1))
else echo "FAIL help_unknown: exit $rc"; fail=$((fail+1)); fi
# every --help states the one exit-code scheme
for c in convert download eval predict quantize report rules serve synth train version; do
    if "$BIN" "$c" --help 2>&1 | grep -q "exit status: 0 ok, 1 partial"; then echo "ok   help_exit_codes_$c"; pass=$((pass+1))
    else echo "FAIL help_exit_codes_$c: --help does not state the exit codes"; fail=$((fail+1)); fi
done

echo "RESULT passed=$pass failed=$fail skipped=$skip"
[ $fail -eq 0 ]
