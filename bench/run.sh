#!/bin/sh
# One command, one run: ResNet-18 (224x224, same weights, same input tensor) on
# defectnet (every conv implementation available; int8 calibrated on the input
# images), ONNX Runtime (npm onnxruntime-node, CPU) and PyTorch (Debian
# python3-torch; fp32 and its own int8 ResNet-18), alternating the
# systems round by round. Prints a ratio table and the per-layer conv GFLOP/s
# and % of the measured FMA peak (bench_conv), and appends both to BENCHMARKS.md.
#
#   bench/run.sh [--rounds N] [--threads T] [--no-append]
#
# Needs: /usr/bin/python3 with torch+torchvision (export + PyTorch side), node/npm
# (onnxruntime-node is installed into bench/node_modules with --ignore-scripts on
# first use), ../shared/weights/resnet18-imagenet.pth (or $DN_SHARED).
set -e
cd "$(dirname "$0")/.."
ROUNDS=3; THREADS=2; APPEND=1
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) ROUNDS=$2; shift 2;;
    --threads) THREADS=$2; shift 2;;
    --no-append) APPEND=0; shift;;
    *) echo "bench/run.sh: unknown option $1" >&2; exit 2;;
    esac
done
SHARED=${DN_SHARED:-../shared}
W=$SHARED/weights/resnet18-imagenet.pth
[ -f "$W" ] || { echo "bench/run.sh: $W: weights not found (set DN_SHARED)" >&2; exit 1; }
BUILD=${BUILD:-build-bench}
OUT=bench/out
mkdir -p $OUT
make -s BUILD=$BUILD -j2 $BUILD/bench/bench_infer $BUILD/bench/bench_conv $BUILD/bench/bench_train >/dev/null 2>$OUT/build.log \
    || make -s BUILD=$BUILD -j2 $BUILD/bench/bench_infer $BUILD/bench/bench_conv >/dev/null
[ -f $OUT/resnet18.onnx ] && [ -f $OUT/input.f32 ] ||
    /usr/bin/python3 tools/export_onnx.py --weights "$W" --out $OUT/resnet18.onnx --input $OUT/input.f32
[ -d bench/node_modules/onnxruntime-node ] ||
    (cd bench && npm install --ignore-scripts --no-audit --no-fund >/dev/null)

RES=$OUT/results.jsonl
: > $RES
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
impl_arg() { # a conv implementation, or a per-conv mix given as a quantization mode
    case "$1" in *+*) echo "--quant $1";; *) echo "--impl $1";; esac
}
IMPLS="direct"
for i in winograd bf16 bf16+winograd int8; do
    # an implementation is benchmarked if this build and CPU can run it
    if $BUILD/bench/bench_infer --weights "$W" --input $OUT/input.f32 --batch 1 --iters 1 --warmup 0 \
        --threads $THREADS $(impl_arg $i) >/dev/null 2>&1; then IMPLS="$IMPLS $i"; fi
done
run() { # label, command...
    label=$1; shift
    if ! "$@" >>$RES 2>$OUT/last.err; then echo "bench/run.sh: $label failed: $(tail -1 $OUT/last.err)" >&2; fi
}
r=1
while [ $r -le $ROUNDS ]; do
    echo "round $r/$ROUNDS ($IMPLS)" >&2
    for b in 1 32; do
        if [ $b = 1 ]; then it=30; wu=3; else it=4; wu=1; fi
        run ort node bench/bench_ort.js --model $OUT/resnet18.onnx --input $OUT/input.f32 --batch $b \
            --threads $THREADS --iters $it --warmup $wu
        for i in $IMPLS; do
            run "defectnet $i" $BUILD/bench/bench_infer --weights "$W" --input $OUT/input.f32 --batch $b \
                --threads $THREADS --iters $it --warmup $wu $(impl_arg $i)
        done
        run pytorch /usr/bin/python3 tools/bench_torch.py --weights "$W" --input $OUT/input.f32 --batch $b \
            --threads $THREADS --iters $it --warmup $wu
        # PyTorch's own int8 ResNet-18 (fused, static, calibrated on the same images as defectnet's int8)
        run "pytorch int8" /usr/bin/python3 tools/bench_torch.py --weights "$W" --input $OUT/input.f32 --batch $b \
            --threads $THREADS --iters $it --warmup $wu --int8
    done
    for t in all head; do
        run "pytorch train-$t" /usr/bin/python3 tools/bench_torch.py --weights "$W" --input $OUT/input.f32 \
            --batch 32 --threads $THREADS --iters 3 --warmup 1 --train $t
        if [ -x $BUILD/bench/bench_train ]; then
            run "defectnet train-$t" $BUILD/bench/bench_train --weights "$W" --input $OUT/input.f32 \
                --batch 32 --threads $THREADS --iters 3 --warmup 1 --train $t
        fi
    done
    r=$((r + 1))
done
# per-layer GFLOP/s and % of the FMA peak measured in the same process (fp32
# direct on blocked activations, as the engine runs it), batch 1 and 32
LAYERS=$OUT/layers.txt
: > $LAYERS
for b in 1 32; do
    echo "\$ $BUILD/bench/bench_conv --batch $b --threads $THREADS" >> $LAYERS
    $BUILD/bench/bench_conv --batch $b --threads $THREADS >> $LAYERS 2>&1 || echo "bench_conv --batch $b failed" >> $LAYERS
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
CPU=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
A=""
[ $APPEND = 1 ] && A="--append BENCHMARKS.md"
/usr/bin/python3 bench/report.py $RES --cmd "bench/run.sh --rounds $ROUNDS --threads $THREADS" \
    --cpu "$CPU ($(nproc) CPUs)" --load "$LOAD_BEFORE -> $LOAD_AFTER" $A
echo "Per-layer convolutions (wall GFLOP/s and % of the wall FMA peak of $THREADS thread(s); cpuGF/s and %core from CPU time):"
cat $LAYERS
if [ $APPEND = 1 ]; then
    { echo; echo "Per-layer convolutions, same run (\`bench_conv\`: %peak = of the wall FMA peak of $THREADS thread(s) measured in"
      echo "the same process, %core = CPU-time GFLOP/s of the per-core peak):"; echo; echo '```'; cat $LAYERS; echo '```'; } >> BENCHMARKS.md
fi
