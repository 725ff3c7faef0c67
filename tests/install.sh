#!/bin/sh
# `make install` into a DESTDIR, then use it as a user would: the installed binary,
# libdefectnet.so with its SONAME and only the public DN_API functions exported,
# `pkg-config --cflags --libs defectnet` building examples/classify.c and
# examples/camera_loop.c against the installed header and library (shared, and
# classify statically), running them on a model, the man pages, the bash
# completion; then `make uninstall` leaves nothing behind.
BUILD=${BUILD:-build}
pass=0; fail=0; skip=0
ok() { echo "ok   $1"; pass=$((pass+1)); }
bad() { echo "FAIL $1"; fail=$((fail+1)); }
check() { name=$1; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }
if grep -q fsanitize "$BUILD/.cflags" 2>/dev/null; then
    # programs built outside the sanitizer would load a sanitized libdefectnet.so
    echo "SKIP install: $BUILD is a sanitizer build (run with the plain build)"; echo "RESULT passed=0 failed=0 skipped=1"; exit 0
fi
tmp=$(mktemp -d /tmp/dn_install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
D=$tmp/root P=/usr
if ! make -s BUILD="$BUILD" install DESTDIR="$D" PREFIX=$P >"$tmp/log" 2>&1; then
    bad "make install"; tail -5 "$tmp/log"; echo "RESULT passed=$pass failed=$fail skipped=$skip"; exit 1
fi
ok "make install DESTDIR PREFIX=/usr"
L=$D$P/lib
for f in bin/defectnet lib/libdefectnet.a lib/libdefectnet.so lib/libdefectnet.so.0 include/defectnet.h \
         lib/pkgconfig/defectnet.pc share/man/man1/defectnet.1 share/man/man1/defectnet-report.1 \
         share/bash-completion/completions/defectnet share/doc/defectnet/examples/LICENSE; do
    check "installed $f" test -e "$D$P/$f"
done
# a man page per command
for c in $(sed -n 's/^    X(\([a-z_]*\),.*/\1/p' src/cli/commands.h); do
    [ -f "$D$P/share/man/man1/defectnet-$c.1" ] || bad "man page defectnet-$c.1"
done
ok "a man page for every command"
if command -v man >/dev/null; then
    check "man defectnet-report renders the options" sh -c "MANWIDTH=100 man -l '$D$P/share/man/man1/defectnet-report.1' 2>/dev/null | grep -q -- '--group-by'"
    check "man defectnet lists the commands and exit codes" sh -c "man -l '$D$P/share/man/man1/defectnet.1' 2>/dev/null | grep -q 'EXIT STATUS' && man -l '$D$P/share/man/man1/defectnet.1' 2>/dev/null | grep -q 'quantize'"
else echo "SKIP man rendering: man not installed"; skip=$((skip+1)); fi
check "installed binary --version" sh -c "'$D$P/bin/defectnet' --version | grep -q '^defectnet '"

# shared library: SONAME and the exported symbols = the DN_API declarations of the header
check "SONAME libdefectnet.so.0" sh -c "readelf -d '$L/libdefectnet.so' | grep -q 'SONAME.*\\[libdefectnet.so.0\\]'"
nm -D --defined-only "$L/libdefectnet.so" | awk '$2 ~ /^[TDBRV]$/ {print $3}' | sort > "$tmp/exported"
grep -o '^DN_API [^(]*(' include/defectnet.h | sed 's/.*[ *]\(dn_[a-z0-9_]*\)($/\1/' | sort > "$tmp/declared"
n_exp=$(wc -l < "$tmp/exported"); n_dec=$(wc -l < "$tmp/declared")
if cmp -s "$tmp/exported" "$tmp/declared"; then ok "exports exactly the $n_dec DN_API functions"
else bad "exports $n_exp symbols, header declares $n_dec:"; diff "$tmp/declared" "$tmp/exported" | head -10; fi
check "internal symbols hidden (dn_fail, dn_pool_new, dn_store_open)" sh -c "! grep -qx 'dn_fail\\|dn_pool_new\\|dn_store_open' '$tmp/exported'"

# pkg-config against the DESTDIR
export PKG_CONFIG_SYSROOT_DIR="$D" PKG_CONFIG_PATH="$L/pkgconfig"
flags=$(pkg-config --cflags --libs defectnet 2>"$tmp/pc.err")
check "pkg-config --cflags --libs defectnet" sh -c "echo '$flags' | grep -q -- '-I$D$P/include' && echo '$flags' | grep -q -- '-ldefectnet'"
for ex in classify camera_loop; do
    check "cc examples/$ex.c \$(pkg-config --cflags --libs defectnet)" \
        sh -c "cc -std=c11 -Wall -Wextra -Werror -o '$tmp/$ex' '$D$P/share/doc/defectnet/examples/$ex.c' $flags 2>'$tmp/cc.err'"
done
check "classify linked statically (pkg-config --static)" sh -c "cc -std=c11 -o '$tmp/classify_static' examples/classify.c \
    \$(pkg-config --cflags defectnet) -Wl,-Bstatic -ldefectnet -Wl,-Bdynamic \$(pkg-config --static --libs defectnet | sed 's/-ldefectnet//') 2>'$tmp/cc.err'"
check "the example uses the installed libdefectnet.so.0" sh -c "LD_LIBRARY_PATH='$L' ldd '$tmp/classify' | grep -q '$L/libdefectnet.so.0'"

# run them on a model and images
M=$tmp/m.safetensors
"$D$P/bin/defectnet" convert tests/fixtures/resnet/r18n.pth "$M" --classes a,b,c,d,e >/dev/null 2>&1
"$D$P/bin/defectnet" synth -o "$tmp/imgs" --per-class 1 --size 32 >/dev/null 2>&1
imgs=$(ls "$tmp"/imgs/*/*.png | head -n 3 | tr '\n' ' ')
if [ -x "$tmp/classify" ] && [ -f "$M" ]; then
    LD_LIBRARY_PATH="$L" "$tmp/classify" "$M" $imgs > "$tmp/out" 2>&1; rc=$?
    check "classify runs on 3 images (exit $rc)" sh -c "[ $rc -eq 0 ] && [ \$(grep -c '\\.png [a-e] [01]\\.' '$tmp/out') -eq 3 ]"
    cp "$tmp/out" "$tmp/out1"
    LD_LIBRARY_PATH="$L" "$tmp/classify" "$M" /nonexistent.png > "$tmp/out" 2>&1; rc=$?
    check "classify names an unreadable image and exits 1" sh -c "[ $rc -eq 1 ] && grep -q '/nonexistent.png' '$tmp/out'"
    "$tmp/classify_static" "$M" $imgs > "$tmp/out2" 2>&1
    check "static classify gives the same answers" cmp -s "$tmp/out1" "$tmp/out2"
else bad "classify: not built or no model"; fi
if [ -x "$tmp/camera_loop" ]; then
    LD_LIBRARY_PATH="$L" "$tmp/camera_loop" "$M" 6 > "$tmp/out" 2>&1; rc=$?
    check "camera_loop classifies 6 wrapped BGR frames (exit $rc)" sh -c "[ $rc -eq 0 ] && grep -q '^6 frames classified in place' '$tmp/out' && [ \$(grep -c '^frame [0-5]: [a-e] ' '$tmp/out') -eq 6 ]"
else bad "camera_loop: not built"; fi
# the in-tree examples built by make run too
if [ -x "$BUILD/examples/camera_loop" ]; then
    check "make-built camera_loop runs" sh -c "'$BUILD/examples/camera_loop' '$M' 3 | grep -q '^3 frames'"
fi

# bash completion: subcommands and a subcommand's options
if command -v bash >/dev/null; then
    out=$(PATH="$D$P/bin:$PATH" bash -c ". '$D$P/share/bash-completion/completions/defectnet'
        COMP_WORDS=(defectnet rep); COMP_CWORD=1; _defectnet; echo \${COMPREPLY[@]}
        COMP_WORDS=(defectnet report --gro); COMP_CWORD=2; _defectnet; echo \${COMPREPLY[@]}" 2>&1)
    check "bash completion: 'rep' -> report, 'report --gro' -> --group-by" sh -c "echo '$out' | grep -qx 'report' && echo '$out' | grep -qx -- '--group-by'"
fi

# uninstall removes everything it installed
make -s BUILD="$BUILD" uninstall DESTDIR="$D" PREFIX=$P >/dev/null 2>&1
left=$(find "$D" -type f -o -type l | wc -l)
check "make uninstall leaves no files ($left left)" test "$left" -eq 0
echo "RESULT passed=$pass failed=$fail skipped=$skip"
[ $fail -eq 0 ]
