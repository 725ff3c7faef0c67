#!/bin/sh
# The main job, end to end, on a fresh clone:
#   install missing Debian packages -> build -> synthesize a defect dataset ->
#   fine-tune -> evaluate (HTML report) -> predict -> serve + post images -> report.
# Weights: $DN_WEIGHTS if set (e.g. torchvision's resnet18-f37072fd.pth), else
# ../shared/weights/resnet18-imagenet.pth if present, else (or with DN_WEIGHTS=none) a
# from-scratch run.
# Everything is written under demo-out/ (or $DN_DEMO_OUT).
set -e
cd "$(dirname "$0")/.."
OUT=${DN_DEMO_OUT:-demo-out}
scripts/install-deps.sh --build curl   # runtime libraries + compiler + curl: only what the demo runs
make -j"$(nproc)" >/dev/null
DN=./build/defectnet
mkdir -p "$OUT"

W=${DN_WEIGHTS:-}
[ -z "$W" ] && [ -f ../shared/weights/resnet18-imagenet.pth ] && W=../shared/weights/resnet18-imagenet.pth
[ "$W" = none ] && W=""   # DN_WEIGHTS=none forces the from-scratch path
echo "== 1/6 synthesize a defect dataset (6 classes) into $OUT/data"
rm -rf "$OUT/data"
# From scratch a ResNet needs more examples than a fine-tuned head does.
PER_CLASS=80; [ -z "$W" ] && PER_CLASS=150
$DN synth --out "$OUT/data" --per-class $PER_CLASS --size 96 --seed 7

echo "== 2/6 fine-tune"
rm -f "$OUT/model.safetensors" "$OUT/split.csv" "$OUT/model.safetensors.ckpt"
if [ -n "$W" ]; then
    echo "   pretrained weights: $W (frozen backbone, head on cached features)"
    $DN train --data "$OUT/data" --weights "$W" --out "$OUT/model.safetensors" \
        --split-manifest "$OUT/split.csv" --image-size 96 --epochs 30
else
    echo "   no pretrained weights found: training from scratch (set DN_WEIGHTS=resnet18-f37072fd.pth to fine-tune)"
    $DN train --data "$OUT/data" --weights none --freeze none --out "$OUT/model.safetensors" \
        --split-manifest "$OUT/split.csv" --image-size 48 --epochs 20 --lr 2e-3 --patience 0
fi
$DN info "$OUT/model.safetensors"

echo "== 3/6 evaluate on the held-out test split"
$DN eval --model "$OUT/model.safetensors" --manifest "$OUT/split.csv" --split test \
    --calibrate-on val --write-model "$OUT/model.safetensors" --html "$OUT/report.html"
echo "   report: $OUT/report.html"

echo "== 4/6 predict a few images"
$DN predict --model "$OUT/model.safetensors" --format table --top-k 2 \
    "$OUT/data/crack" | head -8

echo "== 5/6 serve: post images, rules fire a command action"
rm -f "$OUT/predictions.db" "$OUT/actions.log"
cat > "$OUT/rules.json" <<RULES
{ "rules": [ { "name": "divert-cracks", "when": { "class": ["crack"], "min_confidence": 0.5 },
  "actions": [ { "type": "command", "argv": ["sh", "-c", "cat >> $OUT/actions.log; echo >> $OUT/actions.log"], "timeout_s": 5 } ] } ] }
RULES
PORT=${DN_DEMO_PORT:-18080}
$DN serve --model "$OUT/model.safetensors" --db "sqlite:$OUT/predictions.db" \
    --rules "$OUT/rules.json" --listen 127.0.0.1:$PORT &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
i=0; until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do i=$((i+1)); [ $i -gt 100 ] && exit 1; sleep 0.1; done
for cls in crack scratch spot; do
    for f in $(ls "$OUT/data/$cls" | head -3); do
        curl -sf --data-binary "@$OUT/data/$cls/$f" -H 'Content-Type: application/octet-stream' \
            "http://127.0.0.1:$PORT/v1/predict?line=L1&station=S1&camera=C1&part=$f" ; echo
    done
done
sleep 1
kill -TERM $SERVER; wait $SERVER || true; trap - EXIT

echo "== 6/6 manufacturing report"
$DN report --db "sqlite:$OUT/predictions.db" --group-by class --format csv
$DN report --db "sqlite:$OUT/predictions.db" --group-by line --format html --out "$OUT/production.html"
echo "   actions fired: $(grep -c . "$OUT/actions.log" 2>/dev/null || echo 0) (log: $OUT/actions.log)"
echo "done: model $OUT/model.safetensors, reports $OUT/report.html $OUT/production.html"
