#!/usr/bin/env bash
# Installs what mapiproxy needs to build, run and test (Debian 12). Idempotent:
# only missing packages are installed, so `make run` and `make test` stay quick on a
# ready machine.  As a normal user it calls sudo for apt-get (only when something is
# missing).  The list is everything `make run` and `make test` use: compilers and
# libraries, clang-format (make test's first step), the Python peers, and the real
# servers the integration tests start (Samba, its AD DC provisioning data for the
# winbind tests, MIT Kerberos with its LDAP back end, tshark, valgrind, openssl, ss,
# logrotate, systemd-analyze and man for test_install).
set -euo pipefail
PKGS=(gcc make pkg-config git libssl-dev clang clang-format libclang-rt-14-dev valgrind
      python3 openssl iproute2
      python3-impacket python3-pytest python3-requests python3-requests-ntlm tshark samba haproxy nginx-light
      krb5-kdc krb5-admin-server krb5-user libkrb5-dev libgssapi-krb5-2
      krb5-kdc-ldap slapd ldap-utils python3-gssapi python3-requests-kerberos
      libhttp-parser-dev libgmime-3.0-dev libsystemd-dev
      libwbclient-dev winbind samba-ad-dc samba-ad-provision python3-samba
      python3-pytest-timeout python3-pytest-xdist python3-prometheus-client logrotate systemd man-db groff-base
      libjson-c-dev clamav-daemon clamdscan c-icap libc-icap-mod-virus-scan spamassassin spamc
      rspamd clamav-milter python3-aiosmtpd libidn2-dev)
# --deb: what `make deb` needs instead (dpkg-buildpackage's debhelper and
# fakeroot, lintian), kept apart so that `make test` does not pay for them.
if [ "${1:-}" = "--deb" ]; then
    PKGS=(dpkg-dev debhelper fakeroot lintian)
fi
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
        echo "install-deps: missing packages and no sudo; as root run: apt-get install ${missing[*]}" >&2
        exit 1
    fi
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
