#!/usr/bin/env bash
# `make run`: starts the Exchange lab upstream and mapiproxy (embedded default
# configuration) in front of it, relays a few real calls through it with
# Impacket's clients, then keeps the proxy in the foreground (Ctrl-C stops).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
LAB_EPM=1350   # the embedded default's "mapiproxy:upstream epmapper port"
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if port_busy "$LAB_EPM"; then
    echo "run: port $LAB_EPM is in use; stop what listens there (ss -ltnp) and retry" >&2
    exit 1
fi
/usr/bin/python3 tests/lab/exchange_lab.py --host 127.0.0.1 --epm-port "$LAB_EPM" \
    >build/lab.out 2>build/lab.log &
LAB=$!
PX=
cleanup() { [ -n "$PX" ] && kill "$PX" 2>/dev/null; kill "$LAB" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 0' INT TERM
for _ in $(seq 100); do grep -q READY build/lab.out 2>/dev/null && break; sleep 0.1; done
grep -q READY build/lab.out || { echo "run: the lab did not start; see build/lab.log" >&2; exit 1; }
echo "lab upstream:  $(cat build/lab.out)   (log: build/lab.log)"

ARGS=()
EPM=135
if port_busy 135; then
    # Something (often Samba) already serves port 135 here: same defaults, other port.
    EPM=1135
    ./build/mapiproxy --print-default | sed "s/^\(\s*mapiproxy:epmapper port\s*=\).*/\1 $EPM/" \
        >build/run.conf
    ARGS=(-c build/run.conf)
    echo "note: port 135 is in use here, so the proxy's endpoint mapper uses $EPM (build/run.conf)"
fi
./build/mapiproxy "${ARGS[@]}" >build/mapiproxy.log 2>&1 &
PX=$!
for _ in $(seq 100); do grep -q "ready" build/mapiproxy.log 2>/dev/null && break; sleep 0.1; done
grep -q "ready" build/mapiproxy.log || { cat build/mapiproxy.log; exit 1; }
echo "mapiproxy:     $(grep ready build/mapiproxy.log | sed 's/^.*info  //')"
echo
/usr/bin/python3 scripts/demo_client.py --host 127.0.0.1 --epm-port "$EPM"
echo
echo "Every call above went client -> mapiproxy -> lab. One log line per connection and call:"
echo "  tail -f build/mapiproxy.log      (upstream's side: build/lab.log)"
echo "Point any DCE/RPC client at ncacn_ip_tcp:127.0.0.1 (endpoint mapper port $EPM)."
echo "Ctrl-C stops the proxy and the lab."
tail -n +1 -f build/mapiproxy.log &
TAIL=$!
wait "$PX" || true
kill "$TAIL" 2>/dev/null || true
