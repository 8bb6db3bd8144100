"""An LMTP server for test_svc.py: Debian's aiosmtpd (python3-aiosmtpd),
its LMTP class; each message is saved as DIR/N.eml exactly as received
(envelope in DIR/N.json).  Usage: svc_lmtp_server.py HOST PORT DIR"""
import asyncio
import json
import os
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP


class Save:
    def __init__(self, d):
        self.d, self.n = d, 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        base = os.path.join(self.d, str(self.n))
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content)
        with open(base + ".json", "w") as f:
            json.dump({"from": envelope.mail_from, "rcpt": envelope.rcpt_tos}, f)
        # LMTP: one reply per accepted recipient (RFC 2033 4.2); aiosmtpd
        # sends what the handler returns as it is.
        return "\r\n".join("250 2.0.0 delivered to " + r for r in envelope.rcpt_tos)


class LMTPController(Controller):
    def factory(self):
        return LMTP(self.handler)


def main():
    host, port, d = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    c = LMTPController(Save(d), hostname=host, port=port, decode_data=False)
    c.start()
    print("ready", flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
