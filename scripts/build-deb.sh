#!/usr/bin/env bash
# make deb: builds the Debian package from a copy of the committed tree plus
# the working changes (git ls-files), in build/deb/mapiproxy-VERSION, so the
# package's `debian/rules clean` never touches this tree's build/.  The .deb
# lands in build/deb/; lintian runs on it (errors fail the target).
set -euo pipefail
cd "$(dirname "$0")/.."
ver=$(dpkg-parsechangelog -S Version)
out=build/deb
rm -rf "$out"
mkdir -p "$out/mapiproxy-$ver"
git ls-files -z --cached --others --exclude-standard | \
    xargs -0 cp -P --parents -t "$out/mapiproxy-$ver"
cd "$out/mapiproxy-$ver"
DEB_BUILD_OPTIONS="parallel=${JOBS:-2}" dpkg-buildpackage -us -uc -b
cd ..
ls -l ./*.deb
lintian --fail-on error --info ./*.changes
