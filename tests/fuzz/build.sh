#!/bin/sh
# Builds the libFuzzer targets tests/fuzz/fuzz_<target>.c against the library
# sources (clang 14, -fsanitize=fuzzer,address,undefined; Debian packages clang-14
# and libclang-rt-14-dev) and seeds their corpora from the committed fixtures.
#
#   tests/fuzz/build.sh                     build every target into $FUZZ_BUILD (build-fuzz)
#   tests/fuzz/build.sh run TARGET SECONDS  build, then fuzz TARGET for SECONDS (nice'd, one
#                                           process) with the working corpus
#                                           $FUZZ_BUILD/corpus/TARGET seeded from fixtures and
#                                           tests/fuzz/corpus/TARGET; crashes are written to
#                                           $FUZZ_BUILD/crash/TARGET/
#   tests/fuzz/build.sh campaign RUNS [JOBS [ROUNDS]] build, then run every target (or those in
#                                           $FUZZ_TARGETS) to -runs=RUNS, JOBS at a time
#                                           (default 1), each under nice -n ${FUZZ_NICE:-19};
#                                           writes the table target | executions | cov | ft |
#                                           crashes | seconds | exec/s to $FUZZ_TABLE
#                                           (default $FUZZ_BUILD/campaign-RUNS.md), logs to
#                                           $FUZZ_BUILD/campaign/TARGET.log
#
# Crash inputs worth keeping go into tests/fuzz/corpus/TARGET/ (small files);
# tests/test_fuzz_regress.c replays that folder through the same entry points in the
# normal and sanitizer builds. Run from the repository root.
set -e
CC=${FUZZ_CC:-clang}
B=${FUZZ_BUILD:-build-fuzz}
ALL_TARGETS="image zip pickle pth safetensors model_meta json manifest rules names multipart http mqtt mqtt_packet"
TARGETS=${FUZZ_TARGETS:-$ALL_TARGETS}
FLAGS="-std=c11 -D_GNU_SOURCE -O1 -g -fno-omit-frame-pointer -Wall -Wextra -Wno-unused-parameter -pthread -Iinclude -Isrc"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
AVX512="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16 -mfma -mavx2 -mf16c"
AVX2="-mavx2 -mfma -mf16c"
LIBS="-ljpeg -lpng -lstb -lz -lsqlite3 -lmicrohttpd -lcurl -lmosquitto -lpq -lcrypto -lprotobuf-c -lrdkafka -lm" # as the Makefile

[ -f include/defectnet.h ] || { echo "build.sh: run from the repository root" >&2; exit 2; }

# One campaign run (called by "campaign" through xargs): fuzz $2 to -runs=$3 and
# append its row to the table $4. Columns from libFuzzer's -print_final_stats=1
# (stat::number_of_executed_units) and its last status line (cov:, ft:); crashes =
# files libFuzzer wrote into the crash folder during this run (crash-, leak-,
# timeout-, oom- inputs) plus 1 if it exited non-zero without writing one.
if [ "$1" = campaign-one ]; then
    t=$2; runs=$3; table=$4
    log="$B/campaign/$t.log"
    mkdir -p "$B/crash/$t" "$B/campaign"
    before=$(ls "$B/crash/$t" | wc -l)
    t0=$(date +%s.%N)
    rc=0
    nice -n "${FUZZ_NICE:-19}" "$B/fuzz_$t" -runs="$runs" -rss_limit_mb=2048 -timeout=10 \
        -max_len="${FUZZ_MAX_LEN:-65536}" -artifact_prefix="$B/crash/$t/" -print_final_stats=1 \
        "$B/corpus/$t" >"$log" 2>&1 || rc=$?
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    crashes=$(($(ls "$B/crash/$t" | wc -l) - before))
    [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ] && crashes=1
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    rate=$(awk -v e="${execs:-0}" -v s="$secs" 'BEGIN { printf "%d", (s > 0 ? e / s : e) }')
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$crashes" "$secs" "$rate" >>"$table"
    echo "campaign: $t: ${execs:-?} executions, cov ${cov:-?}, ft ${ft:-?}, crashes $crashes, ${secs} s (exit $rc, log $log)"
    exit 0
fi
command -v "$CC" >/dev/null || { echo "build.sh: $CC not found (apt-get install clang-14 libclang-rt-14-dev)" >&2; exit 2; }

mkdir -p "$B/obj"
objs=""
for src in $(find src -name '*.c' -not -path 'src/cli/*' | sort); do
    obj="$B/obj/$(echo "$src" | tr / _ | sed 's/\.c$/.o/')"
    objs="$objs $obj"
    # Rebuild when the source or any header under src/ include/ is newer than the object.
    if [ -f "$obj" ] && [ -z "$(find "$src" src include -newer "$obj" \( -name '*.h' -o -name '*.inc' -o -path "$src" \) 2>/dev/null | head -1)" ]; then
        continue
    fi
    case "$src" in
        *_avx512.c) extra="$AVX512" ;;
        *_avx2.c) extra="$AVX2" ;;
        *) extra="" ;;
    esac
    # Numeric code (kernels, layers, training) is linked, not fuzzed: -O0 keeps the build
    # short (direct16_avx512.c alone took over an hour at -O1 + ASan on a busy 2-core box),
    # and it gets no coverage instrumentation (still ASan + UBSan): its comparisons are not
    # input-driven, and tracing them took over a third of model_meta's time (cloning the
    # base model per input), which the campaign's 10 million executions per target pay for.
    cov="-fsanitize=fuzzer-no-link"
    case "$src" in src/kernels/*|src/nn/*|src/train/*) extra="$extra -O0"; cov="" ;; esac
    # ... except the model binding (tensor names and shapes -> ResNet), which loading a file drives.
    case "$src" in src/nn/resnet.c|src/nn/arch.c) cov="-fsanitize=fuzzer-no-link" ;; esac
    echo "cc $src"
    nice $CC $FLAGS $SAN $cov $extra -c "$src" -o "$obj"
done
rm -f "$B/libdn-fuzz.a"
ar rcs "$B/libdn-fuzz.a" $objs
for t in $TARGETS; do
    nice $CC $FLAGS $SAN -fsanitize=fuzzer "tests/fuzz/fuzz_$t.c" "$B/libdn-fuzz.a" $LIBS -o "$B/fuzz_$t"
done

# Seeds: committed fixtures by kind, plus the committed regression inputs.
seed() {
    dir="$B/corpus/$1"; shift
    mkdir -p "$dir"
    for f in "$@"; do [ -f "$f" ] && cp "$f" "$dir/"; done
    return 0
}
seed image tests/fixtures/images/*.png tests/fixtures/images/*.jpg tests/fixtures/images/*.bmp \
    tests/fixtures/images/*.pgm tests/fixtures/images/*.ppm
seed zip tests/fixtures/weights/dtypes_zip.pth tests/fixtures/weights/dtypes_deflate.pth
seed pth tests/fixtures/weights/dtypes_zip.pth tests/fixtures/weights/dtypes_deflate.pth \
    tests/fixtures/weights/dtypes_legacy.pth
seed json tests/fixtures/weights/dtypes.json tests/fixtures/resnet/fixtures.json tests/fixtures/eval/calib.json \
    tests/fixtures/train/head_only.json
seed pickle
seed model_meta
seed rules examples/*.json
seed safetensors
seed manifest
seed names
seed multipart
seed http
seed mqtt
seed mqtt_packet
# A real (narrow) defectnet model, so the safetensors target reaches model binding
# and the metadata contract; made by the CLI when one is built ($DN_BIN or build/).
conv=${DN_BIN:-build/defectnet}
if [ -x "$conv" ]; then
    "$conv" convert tests/fixtures/resnet/r18n.pth "$B/corpus/safetensors/r18n.safetensors" \
        --classes ok,scratch,crack,spot,patch >/dev/null 2>&1 || true
fi
# The pickle inside a zip .pth is the pickle target's seed.
if command -v unzip >/dev/null; then
    unzip -p tests/fixtures/weights/dtypes_zip.pth '*/data.pkl' > "$B/corpus/pickle/dtypes_data.pkl" 2>/dev/null || true
fi
for t in $TARGETS; do
    [ -d "tests/fuzz/corpus/$t" ] && cp tests/fuzz/corpus/$t/* "$B/corpus/$t/" 2>/dev/null || true
done

if [ "$1" = campaign ]; then
    runs=${2:?usage: build.sh campaign RUNS [JOBS [ROUNDS]]}
    jobs=${3:-1}
    rounds=${4:-1}
    table=${FUZZ_TABLE:-$B/campaign-$runs.md}
    # ROUNDS > 1: every target runs ROUNDS times to -runs=RUNS on its growing corpus, one
    # table per round ($table.roundK), then $table sums them per target. A round that was
    # cut short (the machine stopped) loses only its unfinished target; rerunning with the
    # same FUZZ_TABLE and FUZZ_RESUME=1 continues: complete rounds are kept, and in the first
    # incomplete one only the targets without a row run.
    k=1
    if [ "$rounds" -gt 1 ] && [ "${FUZZ_RESUME:-0}" = 1 ]; then
        while [ -f "$table.round$k" ] && [ "$(grep -c '^| [a-z_]* | [0-9]' "$table.round$k")" -eq "$(echo $TARGETS | wc -w)" ]; do
            k=$((k + 1))
        done
    fi
    while [ "$k" -le "$rounds" ]; do
        t_round=$table
        [ "$rounds" -gt 1 ] && t_round="$table.round$k"
        todo=$TARGETS
        if [ "$rounds" -gt 1 ] && [ "${FUZZ_RESUME:-0}" = 1 ] && [ -f "$t_round" ]; then
            todo=""
            for t in $TARGETS; do grep -q "^| $t | [0-9]" "$t_round" || todo="$todo $t"; done
            echo "Resumed $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null):$todo" >>"$t_round"
        else
            {
                echo "Fuzz campaign: -runs=$runs, $jobs at a time, nice -n ${FUZZ_NICE:-19}, round $k of $rounds, started $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD 2>/dev/null)"
                echo
                echo "| target | executions | cov | ft | crashes | seconds | exec/s |"
                echo "|---|---|---|---|---|---|---|"
            } >"$t_round"
        fi
        for t in $todo; do echo "$t"; done | xargs -r -P "$jobs" -I{} sh "$0" campaign-one {} "$runs" "$t_round"
        k=$((k + 1))
    done
    if [ "$rounds" -gt 1 ]; then
        {
            echo "Fuzz campaign: $rounds rounds of -runs=$runs per target, $jobs at a time (tables $table.round1..$rounds)"
            echo
            echo "| target | executions | cov (last round) | ft (last round) | crashes | seconds | exec/s |"
            echo "|---|---|---|---|---|---|---|"
            for t in $TARGETS; do
                cat "$table".round* | awk -F' *[|] *' -v t="$t" '$2 == t && $3 ~ /^[0-9]+$/ {
                    e += $3; cov = $4; ft = $5; c += $6; s += $7; n++ }
                    END { if (n) printf "| %s | %d | %s | %s | %d | %.1f | %d |\n", t, e, cov, ft, c, s, (s > 0 ? e / s : e) }'
            done
        } >"$table"
    fi
    echo "campaign: table in $table"
    cat "$table"
fi

if [ "$1" = run ]; then
    t=$2; secs=${3:-60}
    mkdir -p "$B/crash/$t"
    nice "$B/fuzz_$t" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=${FUZZ_MAX_LEN:-65536} \
        -artifact_prefix="$B/crash/$t/" -print_final_stats=1 "$B/corpus/$t"
fi
