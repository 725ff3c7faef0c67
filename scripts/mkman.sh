#!/bin/sh
# Writes the man pages from the program's own help, so they never drift from it:
#   scripts/mkman.sh BIN OUTDIR   -> OUTDIR/defectnet.1 and OUTDIR/defectnet-CMD.1 per command.
# man/defectnet.1.in holds the hand-written parts of the main page (@COMMANDS@ is filled in).
set -e
BIN=$1; OUT=$2
[ -x "$BIN" ] && [ -n "$OUT" ] || { echo "usage: mkman.sh BIN OUTDIR" >&2; exit 2; }
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
VER=$(sed -n 's/^#define DN_VERSION "\(.*\)"/\1/p' include/defectnet.h)
# roff-safe text: backslashes and leading dots/quotes
esc() { sed -e 's/\\/\\e/g' -e 's/^\./\\\&./' -e "s/^'/\\\\\\&'/" -e 's/-/\\-/g'; }
cmds=$(sed -n 's/^    X(\([a-z_]*\), "\(.*\)").*$/\1/p' src/cli/commands.h)
list=""
for c in $cmds; do
    desc=$(sed -n "s/^    X($c, \"\(.*\)\").*\$/\1/p" src/cli/commands.h)
    f="$OUT/defectnet-$c.1"
    {
        echo ".TH DEFECTNET-$(echo $c | tr a-z A-Z) 1 \"\" \"defectnet $VER\" \"defectnet manual\""
        echo ".SH NAME"
        echo "defectnet\\-$c \\- $(echo "$desc" | esc)"
        echo ".SH SYNOPSIS AND OPTIONS"
        echo ".nf"
        "$BIN" "$c" --help 2>&1 | esc
        echo ".fi"
        echo ".SH SEE ALSO"
        echo ".BR defectnet (1)"
    } > "$f"
    list="$list.TP\n.B $c\n$(echo "$desc" | esc) (\\\\fBdefectnet\\\\-$c\\\\fR(1))\n"
done
sed -e "s/@VERSION@/$VER/" man/defectnet.1.in | awk -v L="$list" '{ if ($0 == "@COMMANDS@") printf "%s", L; else print }' \
    | sed 's/\\\\n/\n/g' > "$OUT/defectnet.1"
