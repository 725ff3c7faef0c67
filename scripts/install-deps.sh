#!/bin/sh
# Installs the Debian packages defectnet needs to build and test (listed in
# .ci/packages.txt), only those that are missing. Uses sudo when not root.
set -e
cd "$(dirname "$0")/.."
missing=""
for p in $(grep -v '^#' .ci/packages.txt); do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then echo "install-deps: all packages present"; exit 0; fi
echo "install-deps: installing$missing"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
