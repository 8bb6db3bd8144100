#!/usr/bin/python3
"""Exchange lab upstream: a small, in-memory Exchange 2010-style RPC server.

Serves, over ncacn_ip_tcp (optionally with NTLM or SPNEGO/NTLM authentication,
--users / --require-auth; see README.md):
  epmapper (own port), RFR (MS-OXABREF), NSPI (MS-OXNSPI), EMSMDB + AsyncEMSMDB
  (MS-OXCRPC, ROPs per MS-OXCROPS over an in-memory mailbox).

Usage:
  /usr/bin/python3 tests/lab/exchange_lab.py --host 127.0.0.1 --epm-port PORT \
      [--rfr-port N --nspi-port N --emsmdb-port N] [--server-name NAME]
      [--users FILE] [--require-auth none|connect|integrity|privacy]

Prints "READY epm=P rfr=P nspi=P emsmdb=P" on stdout once all listeners are up.
"""

import argparse
import uuid as uuidlib
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rpcserver                                # noqa: E402
import labauth                                  # noqa: E402
from rpcserver import RpcListener, log          # noqa: E402
from lab_epm import EndpointMapper              # noqa: E402
from lab_rfr import Rfr                         # noqa: E402
import lab_nspi                                 # noqa: E402
import lab_emsmdb                               # noqa: E402
import lab_mapihttp                             # noqa: E402

ORG_DN = '/o=LabOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)'
DOMAIN = 'lab.example'


class LabConfig(object):
    def __init__(self, host='127.0.0.1', server_name='EXLAB01', domain=DOMAIN):
        self.host = host
        if '.' in server_name:
            short, _, dom = server_name.partition('.')
            self.server_name = short.upper()
            self.domain = dom
        else:
            self.server_name = server_name.upper()
            self.domain = domain
        self.fqdn = '%s.%s' % (self.server_name.lower(), self.domain)
        self.fqdn_upper = '%s.%s' % (self.server_name, self.domain)
        self.org_dn = ORG_DN
        self.org = 'LabOrg'
        self.server_dn = '%s/cn=Configuration/cn=Servers/cn=%s' % (ORG_DN, self.server_name)
        self.mdb_dn = self.server_dn + '/cn=Microsoft Private MDB'
        self.recipients_dn = ORG_DN + '/cn=Recipients'
        self.ports = {}
        # --per-mailbox-servers: every mailbox has its own server name
        # <mailbox-guid>@<domain> (Exchange 2013 and later, gromox); 'short':
        # MBX<8 hex digits>, as if every mailbox lived on its own server
        self.per_mailbox_servers = False
        self.mailbox_servers = {}          # per-mailbox server name (lower) -> user DN
        self.web_urls = False              # --web-urls: Autodiscover names ECP and OWA too

    def mailbox_server(self, user_dn):
        """The server name of user_dn's mailbox (in its server DN and home MDB)."""
        if not self.per_mailbox_servers:
            return self.server_name
        g = uuidlib.uuid5(uuidlib.NAMESPACE_URL, 'mbx:' + user_dn.lower())
        if self.per_mailbox_servers == 'short':       # a server per mailbox, NetBIOS-style
            name = 'MBX%s' % g.hex[:8].upper()
        else:
            name = '%s@%s' % (g, self.domain)
        self.mailbox_servers[name.lower()] = user_dn
        return name

    def user_server_dn(self, user_dn):
        return '%s/cn=Configuration/cn=Servers/cn=%s' % (ORG_DN, self.mailbox_server(user_dn))

    def user_mdb_dn(self, user_dn):
        return self.user_server_dn(user_dn) + '/cn=Microsoft Private MDB'

    def server_of_dn(self, dn):
        """The server name a server (or MDB) DN names, as this lab knows it, or None."""
        parts = [p.strip().lower() for p in dn.split('/') if p.strip()]
        for name in [self.server_name.lower(), self.fqdn.lower()] + list(self.mailbox_servers):
            if 'cn=%s' % name in parts:
                return name
        return None

    def server_dn_matches(self, dn):
        return self.server_of_dn(dn) is not None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--epm-port', type=int, default=0)
    ap.add_argument('--rfr-port', type=int, default=0)
    ap.add_argument('--nspi-port', type=int, default=0)
    ap.add_argument('--emsmdb-port', type=int, default=0)
    ap.add_argument('--server-name', default='EXLAB01',
                    help='NetBIOS-style server name, or an FQDN (default EXLAB01)')
    ap.add_argument('--per-mailbox-servers', nargs='?', const='guid', choices=('guid', 'short'),
                    help='every mailbox has its own server name in its server DN and home MDB: '
                    '<mailbox-guid>@<domain> (Exchange 2013+, gromox; the default) or short, '
                    'MBX<8 hex digits>')
    ap.add_argument('--web-urls', action='store_true',
                    help='Autodiscover also names ECP (EXCH EcpUrl) and OWA (WEB OWAUrl)')
    ap.add_argument('--users', metavar='FILE',
                    help='NTLM accounts, one "user:password" or "user:domain:password" '
                         'a line (domain defaults to LAB)')
    ap.add_argument('--require-auth', default='none',
                    choices=['none', 'connect', 'integrity', 'privacy'],
                    help='minimum authentication level for calls (default none)')
    ap.add_argument('--mapihttp-port', type=int, default=None, metavar='N',
                    help='also serve MAPI over HTTP + Autodiscover on port N (0: ephemeral)')
    ap.add_argument('--rpch-port', type=int, default=None, metavar='N',
                    help='also serve RPC over HTTP v2 (/rpc/rpcproxy.dll) on port N (0: ephemeral)')
    ap.add_argument('--rpch-out-length', type=int, default=1 << 30, metavar='BYTES',
                    help='Content-Length of the RPC_OUT_DATA answers: before it runs out the lab '
                         'asks the client for a new OUT channel (OUT_R1/A2; default 1 GiB)')
    ap.add_argument('--rpch-out-recycling', choices=['r1', 'r2'], default='r1',
                    help='the OUT channel recycling sequence the lab runs: r1 (OUT_R1, as a '
                         'successor outbound proxy that does not know the virtual connection) or '
                         'r2 (OUT_R2, as a single RPC proxy that does; MS-RPCH 3.2.4.5.6)')
    ap.add_argument('--tls-cert', metavar='FILE', help='PEM certificate: MAPI/HTTP over TLS')
    ap.add_argument('--tls-key', metavar='FILE', help='PEM private key for --tls-cert')
    ap.add_argument('--http-auth', default='ntlm,basic',
                    help='MAPI/HTTP and RPC over HTTP authentication: comma list of ntlm, '
                         'basic, negotiate (Kerberos with --keytab), or none (default ntlm,basic)')
    ap.add_argument('--pending-period', type=float, default=15.0, metavar='SECONDS',
                    help='MAPI/HTTP X-PendingPeriod: PENDING keep-alive interval (default 15)')
    ap.add_argument('--pending-delay', type=float, default=0.0, metavar='SECONDS',
                    help='MAPI/HTTP: delay every request (but NotificationWait/PING) this '
                         'long, so that PENDING keep-alives are sent (default 0)')
    ap.add_argument('--notification-wait', type=float, default=30.0, metavar='SECONDS',
                    help='MAPI/HTTP NotificationWait: longest park without an event (default 30)')
    ap.add_argument('--keytab', metavar='FILE',
                    help='accept Kerberos (DCE/RPC auth type 16, DCE style) with the keys in '
                         'FILE (python3-gssapi; KRB5_CONFIG from the environment)')
    ap.add_argument('--full-access', action='append', default=[], metavar='IDENTITY',
                    help='give IDENTITY (DOMAIN\\user or a Kerberos principal) full access to '
                         'every mailbox, as LAB\\Administrator has (repeatable)')
    args = ap.parse_args(argv)
    lab_emsmdb.FULL_ACCESS.update(x.lower() for x in args.full_access)
    http_auth = [m.strip().lower() for m in args.http_auth.split(',') if m.strip()]
    if not http_auth or any(m not in ('ntlm', 'basic', 'negotiate', 'none') for m in http_auth) or \
            ('none' in http_auth and len(http_auth) > 1):
        ap.error('--http-auth: a list of ntlm, basic, negotiate, or none')
    if 'negotiate' in http_auth and not args.keytab:
        ap.error('--http-auth negotiate needs --keytab')
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error('--tls-cert and --tls-key go together')

    config = LabConfig(args.host, args.server_name)
    config.per_mailbox_servers = args.per_mailbox_servers or False
    config.web_urls = args.web_urls
    auth = rpcserver.AUTH
    auth.required_level = labauth.LEVELS_BY_NAME[args.require_auth]
    auth.server_name = config.server_name
    auth.dns_domain = config.domain
    if args.keytab:
        why = labauth.kerberos_available()
        if why:
            ap.error('--keytab: %s' % why)
        auth.keytab = args.keytab
    if args.users:
        try:
            auth.userdb = labauth.UserDb.load(args.users)
        except (OSError, ValueError) as e:
            ap.error('--users: %s' % e)
    log('auth: required level %s, %d NTLM user(s)' % (
        args.require_auth, len(auth.userdb.users) if auth.userdb else 0))
    epmap = EndpointMapper(config)
    rfr = Rfr(config)
    directory = lab_nspi.Directory(config)
    nspi = lab_nspi.Nspi(config, directory)
    emsmdb = lab_emsmdb.Emsmdb(config, directory)

    listeners = {
        'epm': RpcListener('epm', args.host, args.epm_port, [epmap.interface()],
                           require_auth=False),
        'rfr': RpcListener('rfr', args.host, args.rfr_port, [rfr.interface()]),
        'nspi': RpcListener('nspi', args.host, args.nspi_port, [nspi.interface()]),
        'emsmdb': RpcListener('emsmdb', args.host, args.emsmdb_port, emsmdb.interfaces()),
    }
    for name, l in listeners.items():
        config.ports[name] = l.port
    mapihttp = None
    if args.mapihttp_port is not None:
        try:
            mapihttp = lab_mapihttp.MapiHttpServer(
                config, directory, nspi, emsmdb, args.host, args.mapihttp_port,
                args.tls_cert, args.tls_key, http_auth, auth.userdb,
                pending_period=args.pending_period, pending_delay=args.pending_delay,
                wait_timeout=args.notification_wait)
        except (OSError, ValueError) as e:
            ap.error('MAPI/HTTP listener: %s' % e)
        config.ports['mapihttp'] = mapihttp.port
        mapihttp.keytab = args.keytab
    rpch = None
    if args.rpch_port is not None:
        import lab_rpch
        try:
            rpch = lab_rpch.RpchServer(config, args.host, args.rpch_port, args.tls_cert,
                                       args.tls_key, http_auth, auth.userdb,
                                       out_length=args.rpch_out_length,
                                       out_recycling=args.rpch_out_recycling)
            rpch.keytab = args.keytab
        except (OSError, ValueError) as e:
            ap.error('RPC over HTTP listener: %s' % e)
    epmap.register(lab_rfr_uuid(), '1.0', listeners['rfr'].port, 'MS Exchange Directory RFR Interface')
    epmap.register(lab_nspi.NSPI_UUID, '56.0', listeners['nspi'].port,
                   'MS Exchange Directory NSPI Proxy')
    epmap.register(lab_emsmdb.EMSMDB_UUID, '0.81', listeners['emsmdb'].port,
                   'Exchange Server STORE EMSMDB Interface')
    epmap.register(lab_emsmdb.ASYNC_EMSMDB_UUID, '0.1', listeners['emsmdb'].port,
                   'Exchange Server STORE ASYNCEMSMDB Interface')

    # The handler only records the signal (list.append takes no lock).
    # Python runs a handler in the main thread between two bytecodes, so one
    # that takes a lock the main thread may hold deadlocks: threading.Event.set
    # did, when the signal came while the main thread was inside Event.wait
    # (which holds the Event's lock around its checks) or inside a first
    # handler's set() when a second signal came (`make run`'s Ctrl-C: SIGINT
    # from the terminal, SIGTERM from scripts/run-demo.sh's cleanup right after),
    # and the lab never exited.
    stop = []

    def on_signal(signum, frame):
        stop.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    for l in listeners.values():
        l.start()
    if mapihttp is not None:
        mapihttp.start()
    if rpch is not None:
        rpch.start()
    log('lab server %s (%s), org %s' % (config.server_name, config.fqdn, config.org_dn))
    sys.stdout.write('READY epm=%d rfr=%d nspi=%d emsmdb=%d%s%s\n' % (
        listeners['epm'].port, listeners['rfr'].port, listeners['nspi'].port,
        listeners['emsmdb'].port, '' if mapihttp is None else ' mapihttp=%d' % mapihttp.port,
        '' if rpch is None else ' rpch=%d' % rpch.port))
    sys.stdout.flush()
    while not stop:
        time.sleep(0.1)
    log('signal %d: shutting down' % stop[0])
    for l in listeners.values():
        l.stop()
    if mapihttp is not None:
        mapihttp.stop()
    if rpch is not None:
        rpch.stop()
    log('stopped')
    return 0


def lab_rfr_uuid():
    from lab_rfr import RFR_UUID
    return RFR_UUID


if __name__ == '__main__':
    sys.exit(main())
