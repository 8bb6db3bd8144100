#!/usr/bin/env bash
# `make run`: starts the Exchange lab upstream and mapiproxy in front of it,
# relays a few real calls through it with Impacket's clients, then follows the
# proxy's log until Ctrl-C.  Without a terminal (stdin or stdout not a tty) it
# stops both after the demo, so a script can run it.
#
# Ports: the lab takes free ports (its endpoint mapper on 1350 when free).  The
# proxy's endpoint mapper is on 135 as root; as a normal user, or when 135 is
# taken, on 1135 (the first free of 1135..1139), with a note.  The RPC port is
# 6100 (or the first free up to 6109).  The configuration used is written to
# build/run.conf.
#
# Every exit path stops what was started: Ctrl-C and SIGTERM exit 0 after
# stopping the proxy, the lab and the log follower; a failed start exits 1 and
# leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build

LAB="" PX="" TAIL=""
cleanup() {
    trap - EXIT INT TERM
    local p
    for p in $TAIL $PX $LAB; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo; echo "run: stopping the proxy and the lab"; exit 0' INT TERM
fail() {
    echo "run: $*" >&2
    exit 1
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
first_free() { # first port of the arguments nothing listens on
    local p
    for p in "$@"; do port_busy "$p" || { echo "$p"; return 0; }; done
    return 1
}

# --- the lab upstream -------------------------------------------------------
LAB_EPM=$(first_free 1350 1351 1352 1353 1354) || LAB_EPM=0
rm -f build/lab.out
/usr/bin/python3 tests/lab/exchange_lab.py --host 127.0.0.1 --epm-port "$LAB_EPM" \
    >build/lab.out 2>build/lab.log &
LAB=$!
for _ in $(seq 150); do
    grep -q READY build/lab.out 2>/dev/null && break
    kill -0 "$LAB" 2>/dev/null || break
    sleep 0.1
done
grep -q READY build/lab.out 2>/dev/null || fail "the lab did not start; see build/lab.log"
LAB_EPM=$(sed -n 's/^READY epm=\([0-9]*\).*/\1/p' build/lab.out)
echo "lab upstream:  $(cat build/lab.out)   (log: build/lab.log)"

# --- the proxy ----------------------------------------------------------------
if [ "$(id -u)" -eq 0 ] && ! port_busy 135; then
    EPM=135
else
    EPM=$(first_free 1135 1136 1137 1138 1139) || fail "ports 1135-1139 are all in use"
    if [ "$(id -u)" -ne 0 ]; then
        echo "note: not root, so the proxy's endpoint mapper listens on $EPM instead of 135"
    else
        echo "note: port 135 is in use here (often by Samba), so the proxy's endpoint mapper listens on $EPM"
    fi
fi
RPC=$(first_free 6100 6101 6102 6103 6104 6105 6106 6107 6108 6109) ||
    fail "ports 6100-6109 are all in use"
cat >build/run.conf <<EOF
# Written by scripts/run-demo.sh (make run): the embedded defaults, with the
# ports of this run.
[global]
    dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1
    dcerpc_mapiproxy:interfaces = exchange_emsmdb, exchange_async_emsmdb, \\
                                  exchange_nsp, exchange_ds_rfr
    mapiproxy:listen = 127.0.0.1
    mapiproxy:epmapper port = $EPM
    mapiproxy:rpc port = $RPC
    mapiproxy:upstream epmapper port = $LAB_EPM
    mapiproxy:log level = info
EOF
./build/mapiproxy -c build/run.conf >build/mapiproxy.log 2>&1 &
PX=$!
for _ in $(seq 100); do
    grep -q " ready: " build/mapiproxy.log 2>/dev/null && break
    kill -0 "$PX" 2>/dev/null || break
    sleep 0.1
done
grep -q " ready: " build/mapiproxy.log || {
    cat build/mapiproxy.log >&2
    fail "mapiproxy did not start (configuration: build/run.conf)"
}
echo "mapiproxy:     $(grep " ready: " build/mapiproxy.log | sed 's/^.*info  //')"
echo

# --- the demo -----------------------------------------------------------------
/usr/bin/python3 scripts/demo_client.py --host 127.0.0.1 --epm-port "$EPM" ||
    fail "the demo client failed; see build/mapiproxy.log and build/lab.log"
echo
echo "Every call above went client -> mapiproxy -> lab. One log line per connection and call:"
echo "  build/mapiproxy.log      (upstream's side: build/lab.log)"
echo "Point any DCE/RPC client at ncacn_ip_tcp:127.0.0.1 (endpoint mapper port $EPM)."
if ! [ -t 0 ] || ! [ -t 1 ]; then
    echo "No terminal: stopping the proxy and the lab."
    exit 0
fi
echo "Ctrl-C stops the proxy and the lab."
tail -n +1 --pid="$PX" -f build/mapiproxy.log &
TAIL=$!
set +e
wait "$PX"
rc=$?
set -e
# Only reached when the proxy ended by itself (a signal to us runs the trap).
fail "mapiproxy exited (status $rc); see build/mapiproxy.log"
