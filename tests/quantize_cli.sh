#!/bin/sh
# `defectnet quantize` end to end on the committed narrow ResNet-18 fixture and a
# few fixture images, plus its bad-input cases. Needs $DN_BIN (set by tests/run.sh).
# Prints one line per check and a RESULT line.
BIN=${DN_BIN:-build/defectnet}
pass=0; fail=0; skip=0
ok()   { echo "ok   $1"; pass=$((pass+1)); }
bad()  { echo "FAIL $1"; fail=$((fail+1)); }
if [ ! -x "$BIN" ]; then
    echo "SKIP quantize_cli: $BIN not built"; echo "RESULT passed=0 failed=0 skipped=1"; exit 0
fi
tmp=$(mktemp -d /tmp/dn_quant_cli.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
M=tests/fixtures/resnet/r18n.pth
I=tests/fixtures/images
# validation folder with the fixture model's class names (class_0, class_1), one bad file
mkdir -p "$tmp/val/class_0" "$tmp/val/class_1" "$tmp/odd/class_0" "$tmp/odd/scratch"
cp $I/palette_50x37.png $I/prog_97x61.jpg "$tmp/val/class_0/"
cp $I/rgb16_45x61.png $I/gray_64x48.jpg "$tmp/val/class_1/"
echo "not an image" > "$tmp/val/class_1/broken.png"
cp $I/palette_50x37.png "$tmp/odd/class_0/"; cp $I/gray_64x48.jpg "$tmp/odd/scratch/"

# 1. usage errors exit 2 (and data errors: the one exit-code scheme)
"$BIN" quantize --model $M >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] && ok usage_missing_args || bad "usage_missing_args (rc $rc)"
"$BIN" quantize --model $M --data "$tmp/val" --mode fp8 --out "$tmp/o.safetensors" >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] && ok usage_bad_mode || bad "usage_bad_mode (rc $rc)"

# 2. int8: calibration (on --calib, here the validation folder), guard, record in the model, predicts;
#    a bad --calib-method is a usage error naming it
err=$("$BIN" quantize --model $M --data "$tmp/val" --mode int8 --calib-method mean --out "$tmp/o.safetensors" 2>&1 >/dev/null); rc=$?
if [ $rc -eq 2 ] && [ "$(echo "$err" | wc -l)" -eq 1 ] && echo "$err" | grep -q "'mean'"; then ok int8_bad_calib_method
else bad "int8_bad_calib_method (rc $rc): $err"; fi
out=$("$BIN" quantize --model $M --data "$tmp/val" --calib "$tmp/val" --mode int8 --out "$tmp/q8.safetensors" --min-agreement 0.5 2>"$tmp/err8"); rc=$?
if [ $rc -eq 1 ] && echo "$out" | grep -q "top-1 agreement with fp32" && grep -q "calibrating int8 activations (minmax) on 4 calibration images" "$tmp/err8"; then
    ok quantize_int8
else bad "quantize_int8 (rc $rc): $out $(cat "$tmp/err8")"; fi
info=$("$BIN" info "$tmp/q8.safetensors" 2>&1)
if echo "$info" | grep -q "quant.mode: int8" && echo "$info" | grep -q '"scales":{"layer1.0.conv1":'; then ok info_shows_int8
else bad "info_shows_int8: $info"; fi
out=$("$BIN" predict --model "$tmp/q8.safetensors" --format csv $I/palette_50x37.png 2>&1); rc=$?
[ $rc -eq 0 ] && echo "$out" | grep -q "palette_50x37.png" && ok predict_int8 || bad "predict_int8 (rc $rc): $out"

# 3. missing model file: one line naming it
err=$("$BIN" quantize --model "$tmp/none.pth" --data "$tmp/val" --mode bf16 --out "$tmp/o.safetensors" 2>&1 >/dev/null); rc=$?
if [ $rc -eq 2 ] && [ "$(echo "$err" | wc -l)" -eq 1 ] && echo "$err" | grep -q "none.pth"; then ok missing_model
else bad "missing_model (rc $rc): $err"; fi

# 4. validation class unknown to the model
err=$("$BIN" quantize --model $M --data "$tmp/odd" --mode bf16 --out "$tmp/o.safetensors" 2>&1 >/dev/null); rc=$?
if [ $rc -eq 2 ] && echo "$err" | grep -q "class 'scratch' is not one of the model's classes"; then ok unknown_class
else bad "unknown_class (rc $rc): $err"; fi
[ ! -e "$tmp/o.safetensors" ] && ok nothing_written_on_error || bad nothing_written_on_error

# 5. the real thing (needs AVX512_BF16): guard figures in the metadata, shown by info
if "$BIN" version | grep -q avx512bf16; then
    out=$("$BIN" quantize --model $M --data "$tmp/val" --mode bf16 --out "$tmp/q.safetensors" --min-agreement 0.5 2>"$tmp/err"); rc=$?
    if [ $rc -eq 1 ] && echo "$out" | grep -q "top-1 agreement with fp32" && grep -q "4 validation images (1 unreadable skipped)" "$tmp/err"; then
        ok quantize_bf16
    else bad "quantize_bf16 (rc $rc): $out $(cat "$tmp/err")"; fi
    info=$("$BIN" info "$tmp/q.safetensors" 2>&1)
    if echo "$info" | grep -q "quant.mode: bf16" && echo "$info" | grep -q "quant.top1_agreement: " &&
       echo "$info" | grep -q "quant.per_class_delta_pt: {\"class_0\":" && echo "$info" | grep -q "quant.val_images: 4"; then
        ok info_shows_guard
    else bad "info_shows_guard: $info"; fi
    # the quantized model predicts (engine honours quant.mode)
    out=$("$BIN" predict --model "$tmp/q.safetensors" --format csv $I/palette_50x37.png 2>&1); rc=$?
    [ $rc -eq 0 ] && echo "$out" | grep -q "palette_50x37.png" && ok predict_quantized || bad "predict_quantized (rc $rc): $out"
else
    err=$("$BIN" quantize --model $M --data "$tmp/val" --mode bf16 --out "$tmp/q.safetensors" 2>&1 >/dev/null); rc=$?
    if [ $rc -eq 2 ] && echo "$err" | grep -q "bf16"; then ok bf16_unsupported_cpu
    else bad "bf16_unsupported_cpu (rc $rc): $err"; fi
    echo "SKIP quantize_bf16: CPU has no AVX512_BF16"; skip=$((skip+1))
fi
echo "RESULT passed=$pass failed=$fail skipped=$skip"
[ $fail -eq 0 ]
