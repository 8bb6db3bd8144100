#!/usr/bin/env bash
# The Debian package in a clean bookworm (root only, needs mmdebstrap and
# network access to deb.debian.org; about 3 minutes): mmdebstrap a minimal
# system with systemd and man-db, apt-get install the .deb from make deb,
# then: the mapiproxy user, --check of the sample, systemd-analyze verify,
# man mapiproxy, and a start as the unit would run it (user mapiproxy, only
# CAP_NET_BIND_SERVICE, port 135, in a private network namespace) with a log
# rotation by SIGUSR1 and a SIGTERM stop.  Usage: scripts/deb-chroot-check.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(ls build/deb/mapiproxy_*_amd64.deb)
root=${1:-build/deb/chroot}
rm -rf "$root"
mmdebstrap --variant=apt --include=man-db,systemd bookworm "$root" http://deb.debian.org/debian
cp "$deb" "$root/tmp/mapiproxy.deb"
chroot "$root" sh -ec 'apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /tmp/mapiproxy.deb >/dev/null
    getent passwd mapiproxy
    cp /etc/mapiproxy/mapiproxy.conf.sample /etc/mapiproxy/mapiproxy.conf
    mapiproxy --check -c /etc/mapiproxy/mapiproxy.conf
    systemd-analyze verify /lib/systemd/system/mapiproxy.service && echo "systemd-analyze verify: OK"
    MANPAGER=cat man mapiproxy | head -1'
unshare -n sh -ec "ip link set lo up; chroot '$root' sh -ec '
    setpriv --reuid mapiproxy --regid mapiproxy --init-groups --inh-caps +net_bind_service \
        --ambient-caps +net_bind_service --bounding-set -all,+net_bind_service \
        /usr/sbin/mapiproxy -c /etc/mapiproxy/mapiproxy.conf & pid=\$!
    sleep 2
    mv /var/log/mapiproxy/mapiproxy.log /var/log/mapiproxy/mapiproxy.log.1
    kill -USR1 \$pid; sleep 0.5; kill -TERM \$pid; wait \$pid; echo exit=\$?
    grep -q \"port 135 (epmapper)\" /var/log/mapiproxy/mapiproxy.log.1
    grep -q \"mapiproxy.log reopened\" /var/log/mapiproxy/mapiproxy.log
    echo \"started as mapiproxy on port 135, log reopened on USR1: OK\"'"
