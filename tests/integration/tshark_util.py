"""tshark helpers for integration tests: capture on loopback, then dissect.

``Capture(ports)`` records ``tcp port A or tcp port B ...`` on ``lo`` into a
pcapng file; it only returns from ``__enter__`` once a probe datagram has
really been captured, and on exit it captures an end marker before stopping,
so everything sent inside the ``with`` block is in the file.

``dissect(pcap, decode_as_ports, nt_password)`` runs ``tshark -r`` with
``-d tcp.port==N,dcerpc`` and ``-o ntlmssp.nt_password:PW`` and returns one
``DcerpcPdu`` per DCE/RPC PDU (ptype, call id, opnum, auth level, interface
layer, whether the sealed stub was decrypted and dissected, all fields).

``only_conversations(pcap, ports, pairs)`` keeps the test's own connections
(its ports, and the proxy's upstream connections by both ends, from
``proxy_upstream_pairs(proxy.log())``): a fixed port such as Samba's 135 may
carry other programs' connections at the same time.

``malformed_or_unknown(...)`` lists frames that tshark calls malformed, that
carry expert infos of error severity, that hold an unknown DCE/RPC PDU type,
or whose TCP payload on a DCE/RPC port is not dissected as DCE/RPC.

Field names that show a decrypted call (tshark 4.0): the dcerpc layer has
``dcerpc.encrypted_stub_data`` and, only when decryption worked,
``dcerpc.payload_stub_data`` (under "Complete stub data"); the interface
layer (``epm``, ``lsarpc``, ...) then holds the NDR fields, e.g.
``epm.opnum``, ``epm.max_towers``, ``epm.tower.num_floors``, ``epm.uuid``,
``epm.proto.tcp_port``, ``lsarpc.opnum``, ``lsarpc.policy_handle`` ...
Without the password the interface layer only has its ``*.opnum`` and
``dcerpc.encrypted_stub_data``.
"""

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

TSHARK = shutil.which("tshark") or "/usr/bin/tshark"

# Connection-oriented DCE/RPC PDU types (C706 + MS-RPCE)
PTYPES = {
    0: "request", 1: "ping", 2: "response", 3: "fault", 4: "working",
    5: "nocall", 6: "reject", 7: "ack", 8: "cl_cancel", 9: "fack",
    10: "cancel_ack", 11: "bind", 12: "bind_ack", 13: "bind_nak",
    14: "alter_context", 15: "alter_context_resp", 16: "auth3",
    17: "shutdown", 18: "co_cancel", 19: "orphaned",
}
CO_PTYPES = {0, 2, 3, 11, 12, 13, 14, 15, 16, 17, 18, 19}

AUTH_LEVELS = {1: "none", 2: "connect", 3: "call", 4: "pkt", 5: "integrity",
               6: "privacy"}

# tshark expert severities (_ws.expert.severity)
SEVERITY = {"chat": 0x200000, "note": 0x400000, "warn": 0x600000,
            "error": 0x800000}

# Fields in an interface layer that are present even when the stub could not
# be decrypted/dissected.
_NON_STUB_FIELDS = {"dcerpc.encrypted_stub_data", "dcerpc.request_in",
                    "dcerpc.response_in", "dcerpc.time", "dcerpc.stub_data",
                    "_ws.expert", "_ws.expert.message", "_ws.expert.severity",
                    "_ws.expert.group"}


_capture_refused = None


def tshark_available():
    """None if tshark can capture here, else a reason string.  As a normal
    user, capturing needs dumpcap's capabilities (Debian's wireshark-common
    setuid option and the wireshark group): asked once of dumpcap itself."""
    global _capture_refused
    if not os.access(TSHARK, os.X_OK):
        return "tshark not installed"
    if os.geteuid() != 0:
        if _capture_refused is None:
            r = subprocess.run(["dumpcap", "-L", "-i", "lo"], capture_output=True, text=True)
            _capture_refused = "Operation not permitted" in r.stderr or r.returncode != 0
        if _capture_refused:
            return ("capturing on lo needs root or dumpcap's capabilities "
                    "(dpkg-reconfigure wireshark-common, group wireshark)")
    return None


# ---------------------------------------------------------------- capture ---
#
# Timeouts are upper bounds for a loaded machine (make test runs test files in
# parallel on 2 cores): tshark and dumpcap take seconds of CPU to start, and a
# tshark stopped by SIGKILL before dumpcap closes its file leaves a pcapng cut
# short, which tshark -r then refuses.  A quiet machine never waits for them.

class Capture:
    """Capture ``tcp port P`` for each of ``ports`` on ``iface`` into a file.

    Attributes after start: ``path`` (pcapng file), ``proc`` (tshark).
    ``path`` defaults to a new file in ``tmpdir`` (or the system temp dir).
    """

    def __init__(self, ports, iface="lo", path=None, tmpdir=None,
                 extra_filter=None, start_timeout=60.0):
        self.ports = sorted(set(int(p) for p in ports))
        if not self.ports:
            raise ValueError("no ports to capture")
        self.iface = iface
        if path is None:
            fd, path = tempfile.mkstemp(suffix=".pcapng", prefix="capture-",
                                        dir=str(tmpdir) if tmpdir else None)
            os.close(fd)
        self.path = str(path)
        self.extra_filter = extra_filter
        self.start_timeout = start_timeout
        self.proc = None
        self._probe_sock = None
        self._lines = queue.Queue()
        self._stderr = []

    @property
    def capture_filter(self):
        parts = ["tcp port %d" % p for p in self.ports]
        if self.extra_filter:
            parts.append("(%s)" % self.extra_filter)
        # UDP probe datagrams (to our own bound socket) prove the capture runs
        parts.append("(udp dst port %d and host 127.0.0.1)" % self.probe_port)
        return " or ".join(parts)

    def _reader(self, stream, sink):
        for raw in iter(stream.readline, b""):
            sink(raw.decode(errors="replace"))
        stream.close()

    def _probe(self, timeout):
        """Send a datagram to the probe port and wait until tshark shows it.

        Each probe comes from its own fresh source port, and only a summary
        line naming that port counts, so a late duplicate of an earlier
        probe can never be taken for this one.
        """
        deadline = time.monotonic() + timeout
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.bind(("127.0.0.1", 0))
        src = sender.getsockname()[1]
        marks = ("%d \u2192 %d " % (src, self.probe_port),
                 "%d -> %d " % (src, self.probe_port))
        next_send = 0.0
        try:
            while True:
                now = time.monotonic()
                if now >= next_send:  # resend: the first may predate the BPF
                    sender.sendto(b"mapiproxy-capture-probe",
                                  ("127.0.0.1", self.probe_port))
                    next_send = now + 0.5
                try:
                    line = self._lines.get(timeout=0.05)
                except queue.Empty:
                    line = None
                if line is not None and any(m in line for m in marks):
                    return
                if self.proc.poll() is not None:
                    raise RuntimeError("tshark exited (%s): %s"
                                       % (self.proc.returncode,
                                          "".join(self._stderr)))
                if time.monotonic() > deadline:
                    raise TimeoutError("tshark did not capture probe in "
                                       "%.1fs: %s" % (timeout,
                                                      "".join(self._stderr)))
        finally:
            sender.close()

    def start(self):
        reason = tshark_available()
        if reason:
            raise RuntimeError(reason)
        self._probe_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._probe_sock.bind(("127.0.0.1", 0))
        self.probe_port = self._probe_sock.getsockname()[1]
        cmd = [TSHARK, "-n", "-l", "-P", "-i", self.iface, "-w", self.path,
               "-f", self.capture_filter]
        # -P: print a summary line per packet even though we write a file;
        # that is how we know the capture is live and has seen everything.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE,
                                     start_new_session=True)
        threading.Thread(target=self._reader, daemon=True,
                         args=(self.proc.stdout, self._lines.put)).start()
        threading.Thread(target=self._reader, daemon=True,
                         args=(self.proc.stderr, self._stderr.append)).start()
        try:
            self._probe(self.start_timeout)
        except BaseException:
            self.stop(flush=False)
            raise
        return self

    def stop(self, flush=True, timeout=60.0):
        if self.proc is None:
            return
        try:
            if flush and self.proc.poll() is None:
                try:
                    self._probe(timeout)  # end marker: all before it is in
                except (TimeoutError, RuntimeError):
                    pass
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
        finally:
            if self._probe_sock is not None:
                self._probe_sock.close()
                self._probe_sock = None
            self.returncode = self.proc.returncode
            self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    @property
    def stderr(self):
        return "".join(self._stderr)


# ------------------------------------------------ the test's own traffic ---
#
# The capture sees the whole loopback interface.  A port of the test's own
# (a free_port() listener) names its connections, but a fixed one such as
# Samba's endpoint mapper on 135 is anyone's: another test run, or a client
# started by hand, may talk to it while the test captures, and its
# connections (other users, other keys: not decrypted with the test's
# password) are not the test's to judge.  The proxy logs both ends of each
# upstream connection it makes (log level debug); only_conversations keeps
# those and the connections to the test's own ports.

_UPSTREAM_RE = re.compile(r"connected upstream port (\d+)(?: \(endpoint mapper\))? "
                          r"from local port (\d+)")


def proxy_upstream_pairs(log):
    """(local port, server port) of every upstream connection a proxy's log
    names (assoc.c on_connected, at log level debug)."""
    return sorted({(int(m.group(2)), int(m.group(1))) for m in _UPSTREAM_RE.finditer(log)})


def only_conversations(pcap, ports=(), pairs=(), path=None, timeout=300):
    """A copy of pcap (path, default beside it) with only the TCP frames of
    the test's own connections: those with one of ``ports`` at either end,
    and for each (a, b) of ``pairs`` those between ports a and b."""
    terms = ["tcp.port == %d" % int(p) for p in ports]
    terms += ["(tcp.port == %d && tcp.port == %d)" % (int(a), int(b)) for a, b in pairs]
    if not terms:
        raise ValueError("no connection to keep")
    if path is None:
        root, ext = os.path.splitext(str(pcap))
        path = root + "-own" + (ext or ".pcapng")
    cmd = [TSHARK, "-n", "-r", str(pcap), "-Y", " || ".join(terms), "-w", str(path)]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), r.returncode,
                                                    r.stderr.decode()))
    return str(path)


# --------------------------------------------------------------- dissect ---

def _flatten(node, out):
    """Collect every 'proto.field' key of a tshark JSON tree into out."""
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, dict):
                if "." in k or k.startswith("_ws"):
                    out.setdefault(k, []).append("")
                _flatten(v, out)
            elif isinstance(v, list):
                for item in v:
                    if isinstance(item, (dict, list)):
                        if "." in k:
                            out.setdefault(k, []).append("")
                        _flatten(item, out)
                    else:
                        out.setdefault(k, []).append(item)
            else:
                out.setdefault(k, []).append(v)
    elif isinstance(node, list):
        for item in node:
            _flatten(item, out)
    return out


def _as_list(v):
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _tshark_args(pcap, decode_as_ports=(), nt_password=None,
                 display_filter=None, prefs=None):
    cmd = [TSHARK, "-n", "-r", str(pcap)]
    for p in decode_as_ports or ():
        cmd += ["-d", "tcp.port==%d,dcerpc" % int(p)]
    if nt_password is not None:
        cmd += ["-o", "ntlmssp.nt_password:%s" % nt_password]
    for k, v in (prefs or {}).items():
        cmd += ["-o", "%s:%s" % (k, v)]
    if display_filter:
        cmd += ["-Y", display_filter]
    return cmd


def frames(pcap, decode_as_ports=(), nt_password=None, display_filter=None,
           prefs=None, timeout=300):
    """Full dissection as a list of ``_source.layers`` dicts (tshark -T json).

    Repeated fields are merged into lists (``--no-duplicate-keys``); a frame
    with several DCE/RPC PDUs has a list under 'dcerpc'.
    """
    cmd = _tshark_args(pcap, decode_as_ports, nt_password, display_filter,
                       prefs) + ["-T", "json", "--no-duplicate-keys"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), r.returncode,
                                                    r.stderr.decode()))
    out = r.stdout.decode(errors="replace").strip()
    if not out:
        return []
    return [p["_source"]["layers"] for p in json.loads(out)]


def text(pcap, decode_as_ports=(), nt_password=None, display_filter=None,
         verbose=False, prefs=None, timeout=300):
    """tshark's human-readable output (one line per frame, or -V)."""
    cmd = _tshark_args(pcap, decode_as_ports, nt_password, display_filter,
                       prefs)
    if verbose:
        cmd.append("-V")
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout)
    return r.stdout.decode(errors="replace")


class DcerpcPdu:
    """One connection-oriented DCE/RPC PDU as tshark dissected it.

    frame, src_port, dst_port, ptype (int), ptype_name, call_id, ctx_id,
    opnum, auth_type, auth_level (int or None), auth_level_name,
    interface (name of the layer after dcerpc: 'epm', 'lsarpc', ... or None),
    bind_uuids (for bind/alter_context), encrypted (sealed stub present),
    decrypted (sealed stub decrypted and dissected by the interface layer),
    stub_dissected (interface layer has NDR fields, sealed or not),
    fields (dict field -> [values] of the dcerpc + interface layers).
    """

    def __init__(self, frame, layers, rpc, iface_name, iface):
        def first(d, key, conv=int):
            vals = d.get(key)
            if not vals:
                return None
            try:
                return conv(vals[0], 0) if conv is int else conv(vals[0])
            except (TypeError, ValueError):
                return None

        rf = _flatten(rpc, {})
        ifields = _flatten(iface, {}) if iface is not None else {}
        tcp = layers.get("tcp", {})
        self.frame = frame
        self.src_port = int(tcp.get("tcp.srcport", 0) or 0)
        self.dst_port = int(tcp.get("tcp.dstport", 0) or 0)
        self.ptype = first(rf, "dcerpc.pkt_type")
        self.ptype_name = PTYPES.get(self.ptype, "unknown(%s)" % self.ptype)
        self.call_id = first(rf, "dcerpc.cn_call_id")
        self.ctx_id = first(rf, "dcerpc.cn_ctx_id")
        self.opnum = first(rf, "dcerpc.opnum")
        self.auth_type = first(rf, "dcerpc.auth_type")
        self.auth_level = first(rf, "dcerpc.auth_level")
        self.auth_level_name = AUTH_LEVELS.get(self.auth_level)
        self.interface = iface_name
        self.bind_uuids = rf.get("dcerpc.cn_bind_to_uuid", [])
        self.encrypted = ("dcerpc.encrypted_stub_data" in rf
                          or "dcerpc.encrypted_stub_data" in ifields)
        stub_fields = [k for k in ifields
                       if k not in _NON_STUB_FIELDS
                       and not k.endswith(".opnum")]
        self.stub_dissected = bool(stub_fields)
        self.decrypted = bool(self.encrypted and self.stub_dissected
                              and "dcerpc.payload_stub_data" in rf)
        self.fields = dict(rf)
        for k, v in ifields.items():
            self.fields.setdefault(k, []).extend(v)

    def get(self, field, default=None):
        v = self.fields.get(field)
        return v[0] if v else default

    def __repr__(self):
        return ("DcerpcPdu(frame=%d %d->%d %s call=%s opnum=%s iface=%s "
                "auth=%s enc=%s dec=%s)" % (
                    self.frame, self.src_port, self.dst_port, self.ptype_name,
                    self.call_id, self.opnum, self.interface,
                    self.auth_level_name, self.encrypted, self.decrypted))


_LOWER_LAYERS = ("frame", "eth", "sll", "null", "raw", "ip", "ipv6", "tcp",
                 "dcerpc", "_ws.malformed", "_ws.expert", "data",
                 "ntlmssp", "gss-api", "spnego")


def dissect(pcap, decode_as_ports=(), nt_password=None, display_filter=None,
            prefs=None):
    """Return a list of DcerpcPdu, one per DCE/RPC PDU in the capture.

    decode_as_ports: TCP ports to dissect as DCE/RPC (135 is by default).
    nt_password: the NTLM user's password, lets tshark unseal the stubs.
    display_filter: extra tshark -Y filter (default 'dcerpc').
    """
    flt = display_filter or "dcerpc"
    result = []
    for layers in frames(pcap, decode_as_ports, nt_password, flt, prefs):
        frame = int(layers["frame"]["frame.number"])
        rpcs = _as_list(layers.get("dcerpc"))
        iface_names = [k for k in layers if k not in _LOWER_LAYERS]
        iface_name = iface_names[0] if iface_names else None
        ifaces = _as_list(layers.get(iface_name)) if iface_name else []
        # the interface layers belong to the PDUs with a stub (requests and
        # responses), in order: a segment may hold an AUTH3 (or a bind)
        # before the request (the proxy writes its AUTH3 and the client's
        # request together when that was already there), and pairing by
        # position gave the request's layer to the AUTH3
        j = 0
        for rpc in rpcs:
            if not isinstance(rpc, dict):
                continue
            iface = None
            if _first_int(rpc, "dcerpc.pkt_type") in (0, 2):
                iface = ifaces[j] if j < len(ifaces) else None
                j += 1
            result.append(DcerpcPdu(frame, layers, rpc,
                                    iface_name if iface is not None else None,
                                    iface))
    return result


def _first_int(rpc, key):
    vals = _flatten(rpc, {}).get(key)
    try:
        return int(vals[0], 0)
    except (TypeError, ValueError, IndexError):
        return None


def calls(pdus, interface=None, opnum=None, ptype=0):
    """Filter PDUs: requests (ptype 0) by default, of an interface/opnum."""
    return [p for p in pdus
            if (ptype is None or p.ptype == ptype)
            and (interface is None or p.interface == interface)
            and (opnum is None or p.opnum == opnum)]


# tshark 4.0 limitation: a sealed (privacy) request/response whose stub
# (incl. auth padding) is shorter than this is decrypted, but dissecting it
# throws "Malformed Packet (Exception occurred)" and the NTLMSSP verifier is
# not shown. Seen with 4-byte (dssetup DsRoleGetPrimaryDomainInformation) and
# 12-byte (samr Connect) stubs; 20 bytes and more are fine. The same calls at
# integrity dissect cleanly, and Samba accepts them, so the bytes are right.
SHORT_SEALED_STUB = 16


def _short_sealed_stub(layers):
    """True if the frame holds a sealed request/response, and every one it
    holds has a stub shorter than SHORT_SEALED_STUB (other PDU types in the
    same segment, such as an AUTH3, are passed over)."""
    rpcs = [r for r in _as_list(layers.get("dcerpc")) if isinstance(r, dict)]
    seen = False
    for rpc in rpcs:
        f = _flatten(rpc, {})
        try:
            ptype = int(f["dcerpc.pkt_type"][0])
            level = int(f["dcerpc.auth_level"][0])
            frag = int(f["dcerpc.cn_frag_len"][0])
            auth_len = int(f["dcerpc.cn_auth_len"][0])
        except (KeyError, IndexError, ValueError):
            return False
        if ptype not in (0, 2):
            continue  # e.g. an AUTH3 sent in the same TCP segment: not the cause
        if level != 6:
            return False
        stub = frag - 24 - 8 - auth_len
        if stub >= SHORT_SEALED_STUB:
            return False
        seen = True
    return seen


def malformed_or_unknown(pcap, decode_as_ports=(), nt_password=None,
                         min_severity="error", ignore_messages=(),
                         ignore_short_sealed_stubs=True, prefs=None):
    """Problems tshark sees in the capture, as a list of dicts
    {frame, kind, detail}; kind is one of 'malformed', 'expert',
    'unknown_ptype', 'undissected'. Empty list == clean capture.

    min_severity: lowest expert severity to report ('error' or 'warn').
    ignore_messages: substrings of expert messages to ignore.
    ignore_short_sealed_stubs: skip the malformed report tshark 4.0 gives
      for sealed PDUs with a stub < SHORT_SEALED_STUB bytes (see above).
    """
    floor = SEVERITY[min_severity]
    dce_ports = set(int(p) for p in decode_as_ports) | {135}
    problems = []
    for layers in frames(pcap, decode_as_ports, nt_password, None, prefs):
        frame = int(layers["frame"]["frame.number"])
        flat = _flatten(layers, {})
        malformed = "_ws.malformed" in flat or any(
            k.startswith("_ws.malformed") for k in flat)
        if malformed and ignore_short_sealed_stubs and nt_password and \
                _short_sealed_stub(layers):
            malformed = None  # known tshark limitation, not our traffic
        if malformed:
            problems.append({"frame": frame, "kind": "malformed",
                             "detail": flat.get("_ws.malformed.expert",
                                                flat.get("_ws.malformed"))})
        sevs = flat.get("_ws.expert.severity", [])
        msgs = flat.get("_ws.expert.message", [])
        for j, sev in enumerate(sevs):
            try:
                sev_i = int(sev, 0)
            except ValueError:
                continue
            msg = msgs[j] if j < len(msgs) else ""
            if malformed is None and "Malformed" in msg:
                continue
            if sev_i >= floor and not any(s in msg for s in ignore_messages):
                problems.append({"frame": frame, "kind": "expert",
                                 "detail": "%s (severity 0x%x)" % (msg, sev_i)})
        for pt in flat.get("dcerpc.pkt_type", []):
            try:
                pt_i = int(pt, 0)
            except ValueError:
                pt_i = -1
            if pt_i not in CO_PTYPES:
                problems.append({"frame": frame, "kind": "unknown_ptype",
                                 "detail": "dcerpc.pkt_type=%s" % pt})
        tcp = layers.get("tcp", {})
        ports = {int(tcp.get("tcp.srcport", 0) or 0),
                 int(tcp.get("tcp.dstport", 0) or 0)}
        if (ports & dce_ports and "tcp.payload" in flat
                and "dcerpc" not in layers
                and "tcp.reassembled_in" not in flat
                and "tcp.segment_data" not in flat):
            problems.append({"frame": frame, "kind": "undissected",
                             "detail": "TCP payload on a DCE/RPC port is not "
                                       "DCE/RPC: %s" % ", ".join(
                                           k for k in layers
                                           if k not in ("frame", "eth", "ip",
                                                        "tcp"))})
    return problems
