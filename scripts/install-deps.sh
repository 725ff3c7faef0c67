#!/bin/sh
# Installs the Debian packages defectnet needs, only those that are missing.
#   scripts/install-deps.sh --runtime   shared libraries the defectnet binary links (to run it)
#   scripts/install-deps.sh --build     runtime + compiler and -dev packages (to build it; the demo)
#   scripts/install-deps.sh --test      everything in .ci/packages.txt (the test suite: PostgreSQL
#                                       server, mosquitto, chromium, python3-torch, ...) [default]
#   --list prints the chosen packages instead of installing them; other words are extra
#   package names (the demo adds curl, which it runs).
# Uses sudo when not root.
set -e
cd "$(dirname "$0")/.."
RUNTIME="libjpeg62-turbo libpng16-16 zlib1g libstb0 libsqlite3-0 libmicrohttpd12 libcurl4 libmosquitto1 libpq5
libssl3 libprotobuf-c1 librdkafka1 tzdata"
BUILD="build-essential pkg-config protobuf-c-compiler $(grep -v '^#' .ci/packages.txt | grep -- '-dev$' | tr '\n' ' ')"
mode=test list=0 extra=""
for a in "$@"; do
    case "$a" in
        --runtime) mode=runtime ;;
        --build) mode=build ;;
        --test) mode=test ;;
        --list) list=1 ;;
        -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "install-deps: unknown option '$a' (--runtime, --build, --test, --list)" >&2; exit 2 ;;
        *) extra="$extra $a" ;;
    esac
done
case $mode in
    runtime) want="$RUNTIME" ;;
    build) want="$RUNTIME $BUILD" ;;
    test) want="$RUNTIME $BUILD $(grep -v '^#' .ci/packages.txt | tr '\n' ' ')" ;;
esac
want=$(echo $want $extra | tr ' ' '\n' | sort -u | tr '\n' ' ')
if [ $list -eq 1 ]; then echo $want; exit 0; fi
missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then echo "install-deps: all $mode packages present"; exit 0; fi
echo "install-deps ($mode): installing$missing"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
