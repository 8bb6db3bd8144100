#!/usr/bin/env bash
# Installs what mapiproxy needs to build, run and test (Debian 12). Idempotent:
# only missing packages are installed, so `make run` stays quick on a ready machine.
set -euo pipefail
PKGS=(gcc make pkg-config libssl-dev clang libclang-rt-14-dev valgrind
      python3-impacket python3-pytest python3-requests python3-requests-ntlm tshark samba haproxy
      krb5-kdc krb5-admin-server krb5-user libkrb5-dev libgssapi-krb5-2
      krb5-kdc-ldap slapd ldap-utils python3-gssapi
      libhttp-parser-dev
      libwbclient-dev winbind samba-ad-dc python3-pytest-timeout)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
