"""Address Book Name Service Provider Interface referral (MS-OXABREF), interface
exchange_ds_rfr 1544f5e0-613c-11d1-93df-00c04fd7bd09 v1.0.

  long RfrGetNewDSA([in] handle_t hRpc, [in] unsigned long ulFlags,
                    [in, string] unsigned char *pUserDN,
                    [in, out, unique, string] unsigned char **ppszUnused,
                    [in, out, unique, string] unsigned char **ppszServer);
  long RfrGetFQDNFromServerDN([in] handle_t hRpc, [in] unsigned long ulFlags,
                    [in, range(10,1024)] unsigned long cbMailboxServerDN,
                    [in, string, size_is(cbMailboxServerDN)] unsigned char *szMailboxServerDN,
                    [out, ref, string] unsigned char **ppszServerFQDN);
"""

from rpcserver import Interface, StubError, log
from labndr import NdrWriter, NdrReader

RFR_UUID = '1544f5e0-613c-11d1-93df-00c04fd7bd09'
MAPI_E_NOT_FOUND = 0x8004010F
MAPI_E_INVALID_PARAMETER = 0x80070057


class Rfr(object):
    def __init__(self, config):
        self.config = config

    def interface(self):
        return Interface('rfr', RFR_UUID, '1.0', {0: self.op_get_new_dsa,
                                                 1: self.op_get_fqdn})

    def op_get_new_dsa(self, call, stub):
        r = NdrReader(stub)
        flags = r.u32()
        user_dn = r.cv_string()
        # ppszUnused: unique pointer to unique pointer to string
        unused_present = r.u32() != 0
        if unused_present:
            if r.u32() != 0:
                r.cv_string()
        server_present = r.u32() != 0
        if server_present:
            if r.u32() != 0:
                r.cv_string()
        if r.remaining() > 3:
            raise StubError('trailing data in RfrGetNewDSA')
        log('rfr: RfrGetNewDSA flags=0x%x userDN=%r -> %s' % (
            flags, user_dn.decode('latin-1'), self.config.fqdn))
        w = NdrWriter()
        # ppszUnused: returned as NULL (the server does not use it)
        if unused_present:
            w.refid(True)
            w.refid(False)
        else:
            w.refid(False)
        if server_present:
            w.refid(True)
            w.refid(True)
            w.cv_string(self.config.fqdn)
            status = 0
        else:
            w.refid(False)
            status = MAPI_E_INVALID_PARAMETER
        w.u32(status)
        return w.getvalue()

    def op_get_fqdn(self, call, stub):
        r = NdrReader(stub)
        flags = r.u32()
        cb = r.u32()
        dn = r.cv_string().decode('latin-1')
        known = self.config.server_dn_matches(dn)
        log('rfr: RfrGetFQDNFromServerDN flags=0x%x cb=%d dn=%r -> %s' % (
            flags, cb, dn, self.config.fqdn if known else 'not found'))
        w = NdrWriter()
        if known:
            w.refid(True)
            w.cv_string(self.config.fqdn)
            w.u32(0)
        else:
            w.refid(False)
            w.u32(MAPI_E_NOT_FOUND)
        return w.getvalue()
