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
# build/run.conf (RUN_DIR below).
#
# Every exit path stops what was started: Ctrl-C and SIGTERM exit 0 after
# stopping the proxy, the lab and the log follower; a failed start exits 1 and
# leaves nothing running.  Under `make run`, scripts/run-foreground.py makes
# this script's process group the terminal's foreground one, so Ctrl-C reaches
# it and not make, and `make run` exits 0 too.
#
# For tests (tests/integration/test_run_demo.py): RUN_DIR (default build) holds
# run.conf and the logs; RUN_EPM_PORTS, RUN_RPC_PORTS and RUN_LAB_EPM_PORTS,
# when set, list the ports to try instead of 135 and 1135..1139 (the proxy's
# endpoint mapper), 6100..6109 (its RPC port) and 1350..1354 (the lab's
# endpoint mapper).  0 in a list: any free port, taken by the bind itself
# (not for RUN_EPM_PORTS: the client must know that port), so two runs at once
# cannot both pick the same fixed port between the check and the bind.
#
# Stopping is bounded: what has not exited 10 s after SIGTERM is killed, and
# the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
RD=${RUN_DIR:-build}
mkdir -p "$RD"

LAB="" PX="" TAIL=""
cleanup() {
    trap - EXIT INT TERM
    local p left end=$((SECONDS + 10))
    for p in $TAIL $PX $LAB; do kill "$p" 2>/dev/null || true; done
    while :; do
        left=""
        for p in $TAIL $PX $LAB; do alive "$p" && left="$left $p"; done
        [ -z "$left" ] || [ "$SECONDS" -ge "$end" ] && break
        sleep 0.1
    done
    if [ -n "$left" ]; then
        echo "run: did not stop within 10 s of SIGTERM, killed:$left" >&2
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null || true
    fi
    wait 2>/dev/null || true
}
# alive PID: running (a zombie, dead but not yet reaped, is not)
alive() { [ -r "/proc/$1/stat" ] && ! sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | grep -q '^Z'; }
trap cleanup EXIT
trap 'echo; echo "run: stopping the proxy and the lab"; exit 0' INT TERM
fail() {
    echo "run: $*" >&2
    exit 1
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
first_free() { # first port of the arguments nothing listens on (0: any, at bind time)
    local p
    for p in "$@"; do
        [ "$p" = 0 ] && { echo 0; return 0; }
        port_busy "$p" || { echo "$p"; return 0; }
    done
    return 1
}

# --- the lab upstream -------------------------------------------------------
# shellcheck disable=SC2086
LAB_EPM=$(first_free ${RUN_LAB_EPM_PORTS:-1350 1351 1352 1353 1354}) || LAB_EPM=0
rm -f "$RD/lab.out"
/usr/bin/python3 tests/lab/exchange_lab.py --host 127.0.0.1 --epm-port "$LAB_EPM" \
    >"$RD/lab.out" 2>"$RD/lab.log" &
LAB=$!
for _ in $(seq 150); do
    grep -q READY "$RD/lab.out" 2>/dev/null && break
    kill -0 "$LAB" 2>/dev/null || break
    sleep 0.1
done
grep -q READY "$RD/lab.out" 2>/dev/null || fail "the lab did not start; see $RD/lab.log"
LAB_EPM=$(sed -n 's/^READY epm=\([0-9]*\).*/\1/p' "$RD/lab.out")
echo "lab upstream:  $(cat "$RD/lab.out")   (log: $RD/lab.log)"

# --- the proxy ----------------------------------------------------------------
if [ -n "${RUN_EPM_PORTS:-}" ]; then
    # shellcheck disable=SC2086
    EPM=$(first_free $RUN_EPM_PORTS) || fail "ports $RUN_EPM_PORTS are all in use"
elif [ "$(id -u)" -eq 0 ] && ! port_busy 135; then
    EPM=135
else
    EPM=$(first_free 1135 1136 1137 1138 1139) || fail "ports 1135-1139 are all in use"
    if [ "$(id -u)" -ne 0 ]; then
        echo "note: not root, so the proxy's endpoint mapper listens on $EPM instead of 135"
    else
        echo "note: port 135 is in use here (often by Samba), so the proxy's endpoint mapper listens on $EPM"
    fi
fi
# shellcheck disable=SC2086
RPC=$(first_free ${RUN_RPC_PORTS:-6100 6101 6102 6103 6104 6105 6106 6107 6108 6109}) ||
    fail "ports ${RUN_RPC_PORTS:-6100-6109} are all in use"
cat >"$RD/run.conf" <<EOF
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
./build/mapiproxy -c "$RD/run.conf" >"$RD/mapiproxy.log" 2>&1 &
PX=$!
for _ in $(seq 100); do
    grep -q " ready: " "$RD/mapiproxy.log" 2>/dev/null && break
    kill -0 "$PX" 2>/dev/null || break
    sleep 0.1
done
grep -q " ready: " "$RD/mapiproxy.log" || {
    cat "$RD/mapiproxy.log" >&2
    fail "mapiproxy did not start (configuration: $RD/run.conf)"
}
echo "mapiproxy:     $(grep " ready: " "$RD/mapiproxy.log" | sed 's/^.*info  //')"
echo

# --- the demo -----------------------------------------------------------------
/usr/bin/python3 scripts/demo_client.py --host 127.0.0.1 --epm-port "$EPM" ||
    fail "the demo client failed; see $RD/mapiproxy.log and $RD/lab.log"
echo
echo "Every call above went client -> mapiproxy -> lab. One log line per connection and call:"
echo "  $RD/mapiproxy.log      (upstream's side: $RD/lab.log)"
echo "Point any DCE/RPC client at ncacn_ip_tcp:127.0.0.1 (endpoint mapper port $EPM)."
if ! [ -t 0 ] || ! [ -t 1 ]; then
    echo "No terminal: stopping the proxy and the lab."
    exit 0
fi
echo "Ctrl-C stops the proxy and the lab."
tail -n +1 --pid="$PX" -f "$RD/mapiproxy.log" &
TAIL=$!
set +e
wait "$PX"
rc=$?
set -e
# Only reached when the proxy ended by itself (a signal to us runs the trap).
fail "mapiproxy exited (status $rc); see $RD/mapiproxy.log"
