"""A test peer for the HTTPS front: a small HTTPS upstream that behaves the
way the front must cope with (Python's http.server and ssl do the protocol).

It is NOT an Exchange server and not a MAPI/HTTP implementation; it answers:
  * /mapi/emsmdb and /mapi/nspi: a connection-bound handshake that imitates
    NTLM's shape (Authorization "NTLM negotiate" -> 401 with a challenge
    naming this TCP connection; "NTLM response-<challenge>" -> the connection
    is authenticated from then on), or Basic per request.  The answer echoes
    what the upstream received (as JSON).  With "X-Test-Stream: 1" the answer
    is a chunked stream PROCESSING, PENDING, then waits for
    Peer.release before DONE, the way a MAPI/HTTP response streams.
  * /autodiscover/autodiscover.xml and /autodiscover/autodiscover.json/...:
    answers that name this upstream (its host name, the extra names given).
  * anything else: 200 "other".
Certificates come from make_certs() (the openssl command line)."""
import hashlib
import itertools
import json
import os
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj",
            f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    return os.path.join(d, f"{name}.pem")


def make_cert(d, ca, name, sans):
    """A server certificate NAME.pem / NAME.key signed by CA (make_ca's name)."""
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write("subjectAltName=" + ",".join(sans) + "\n"
                "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
            cwd=d)
    return os.path.join(d, f"{name}.pem"), os.path.join(d, f"{name}.key")


def read_chunked(rfile):
    body = b""
    while True:
        line = rfile.readline(1000)
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while rfile.readline(1000) not in (b"\r\n", b"\n", b""):
                pass
            return body
        body += rfile.read(size)
        rfile.readline(10)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are separate writes
    ids = itertools.count(1)

    def setup(self):
        super().setup()
        self.conn_id = next(Handler.ids)
        self.authed = False
        self.server.peer.connections.append(self.conn_id)

    def log_message(self, fmt, *args):
        self.server.peer.log.append(fmt % args)

    def body(self):
        if self.headers.get("X-Test-Discard") == "1":  # read, count, keep nothing
            left, got = int(self.headers.get("Content-Length", "0")), 0
            while left:
                b = self.rfile.read(min(65536, left))
                if not b:
                    break
                got, left = got + len(b), left - len(b)
            self.server.peer.discarded.append(got)
            return b""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return read_chunked(self.rfile)
        n = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(n)

    def send(self, status, body, ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Upstream-Conn", str(self.conn_id))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def seen(self, data):
        h = self.headers
        return {
            "conn": self.conn_id, "path": self.path, "method": self.command,
            "host": h.get("Host"), "length": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "authorization": h.get("Authorization"), "cookie": h.get("Cookie"),
            "x-requestid": h.get("X-RequestId"), "x-clientinfo": h.get("X-ClientInfo"),
            "x-clientapplication": h.get("X-ClientApplication"),
            "x-requesttype": h.get("X-RequestType"),
            "accept-encoding": h.get("Accept-Encoding"),
            "te": h.get("Transfer-Encoding"),
        }

    def authenticate(self):
        """True when the request may go on; otherwise a 401 was sent."""
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic ") and auth == self.server.peer.basic:
            return True
        if auth.startswith("Bearer ") and auth == "Bearer " + self.server.peer.bearer:
            return True
        if auth == "NTLM negotiate":
            self.send(401, b"", extra=[("WWW-Authenticate", f"NTLM challenge-{self.conn_id}")])
            return False
        if auth == f"NTLM response-challenge-{self.conn_id}":
            self.authed = True
        if self.authed:
            return True
        self.send(401, b"", extra=[("WWW-Authenticate", "NTLM")])
        return False

    def stream(self, seen):
        self.send_response(200)
        self.send_header("Content-Type", "application/mapi-http")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-RequestType", seen["x-requesttype"] or "")
        self.send_header("X-ResponseCode", "0")
        self.send_header("X-Upstream-Conn", str(self.conn_id))
        self.end_headers()

        def chunk(b):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
            self.wfile.flush()
        chunk(b"PROCESSING\r\n")
        chunk(b"PENDING\r\n")
        self.server.peer.release.wait(60)
        chunk(b"DONE\r\n" + json.dumps(seen).encode())
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def big(self, n):
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Upstream-Conn", str(self.conn_id))
        self.end_headers()
        block = hashlib.sha256(b"block").digest() * 2048  # 64 KiB
        sent = 0
        while sent < n:
            b = block[:min(len(block), n - sent)]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
            sent += len(b)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_POST(self):
        data = self.body()
        seen = self.seen(data)
        self.server.peer.requests.append(seen)
        path = self.path.lower()
        names = self.server.peer
        if path.startswith("/autodiscover/autodiscover.xml"):
            self.send(200, names.autodiscover_xml().encode(), "text/xml; charset=utf-8")
            return
        if path.startswith("/autodiscover/autodiscover.json"):
            self.send(200, names.autodiscover_json().encode())
            return
        if path.startswith("/mapi/"):
            if not self.authenticate():
                return
            if self.headers.get("X-Test-Stream") == "1":
                self.stream(seen)
                return
            if self.headers.get("X-Test-Hang") == "1":  # answers only once released
                self.server.peer.release.wait(60)
            if self.headers.get("X-Test-Big"):  # N pseudo-random bytes, chunked
                self.big(int(self.headers["X-Test-Big"]))
                return
            if self.headers.get("X-Test-Close") == "1":
                self.close_connection = True
                self.send(200, json.dumps(seen).encode(), extra=[("Connection", "close")])
                return
            self.send(200, json.dumps(seen).encode(),
                      extra=[("Set-Cookie", f"sid=conn{self.conn_id}; Path=/mapi/"),
                             ("X-RequestId", seen["x-requestid"] or "")])
            return
        self.send(200, b"other", "text/plain")

    do_GET = do_POST
    do_HEAD = do_POST


class Peer:
    """The upstream, serving in threads of this process on 127.0.0.1."""

    def __init__(self, certfile, keyfile, name="localhost", extra_names=("exch01.test.local",
                                                                         "EXCH01")):
        self.name = name
        self.extra_names = extra_names
        self.basic = "Basic dXNlcjpzM2NyZXQtcGFzc3dvcmQ="  # user:s3cret-password
        self.bearer = "tok-SECRET-bearer-value"
        self.connections, self.requests, self.log = [], [], []
        self.discarded = []
        self.release = threading.Event()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile, keyfile)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.server.peer = self
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"https://{self.name}:{self.port}"

    def autodiscover_xml(self):
        up = f"{self.name}:{self.port}"
        fq, nb = self.extra_names
        return f"""<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">
  <Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">
    <User><DisplayName>Alice</DisplayName><AutoDiscoverSMTPAddress>alice@example.com</AutoDiscoverSMTPAddress></User>
    <Account>
      <AccountType>email</AccountType><Action>settings</Action>
      <Protocol Type="mapiHttp" Version="1">
        <MailStore>
          <InternalUrl>https://{up}/mapi/emsmdb/?MailboxId=abc@example.com</InternalUrl>
          <ExternalUrl>https://{fq}/mapi/emsmdb/?MailboxId=abc@example.com</ExternalUrl>
        </MailStore>
        <AddressBook>
          <InternalUrl>https://{up}/mapi/nspi/?MailboxId=abc@example.com</InternalUrl>
          <ExternalUrl>https://{fq.upper()}/mapi/nspi/?MailboxId=abc@example.com</ExternalUrl>
        </AddressBook>
      </Protocol>
      <Protocol><Type>EXCH</Type><Server>{nb}</Server><ServerDN>/o=Org/cn=Servers/cn={nb}</ServerDN>
        <EwsUrl>https://{up}/EWS/Exchange.asmx</EwsUrl><OABUrl>https://{fq}/OAB/x/</OABUrl></Protocol>
      <Protocol><Type>EXPR</Type><Server>{fq}</Server><SSL>On</SSL></Protocol>
      <Protocol><Type>EXHTTP</Type><Server>{self.name}</Server><SSL>On</SSL></Protocol>
    </Account>
  </Response>
</Autodiscover>
"""

    def autodiscover_json(self):
        up = f"{self.name}:{self.port}"
        # written by hand: JSON's optional "\/" escape, as some servers send it
        return ('{"Protocol": "MapiHttp", "Url": "https://%s/mapi/emsmdb/?MailboxId=abc@example.com",'
                ' "Escaped": "https:\\/\\/%s\\/mapi\\/nspi"}' % (up, self.extra_names[0]))

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
