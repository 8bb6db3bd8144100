"""NSPI (MS-OXNSPI) server for the Exchange lab, interface exchange_nsp
f5cc5a18-4264-101a-8c59-08002b2f8426 v56.0, over an in-memory directory.

Request and response stubs are decoded/encoded with Impacket's nspi.py NDR
structures.  Where Impacket's call definitions differ from the IDL in
MS-OXNSPI (NspiGetProps / NspiGetSpecialTable declare pStat as a unique
pointer, NspiSeekEntries passes lpETable/pPropTags inline) the server decodes
the spec layout first and falls back to Impacket's layout, so both
spec-conformant clients and Impacket's helpers work.  NspiGetMatches is not
defined by Impacket and is declared here from MS-OXNSPI 3.1.4.1.10.
"""

import logging
import re
import struct
import threading
import uuid as uuidlib

from impacket.dcerpc.v5 import nspi
from impacket.dcerpc.v5.nspi import (handle_t, STAT, PropertyValue_r, PPropertyValue_r,
                                     PropertyRow_r, PPropertyRow_r, PropertyRowSet_r,
                                     PPropertyRowSet_r, PropertyTagArray_r, PPropertyTagArray_r,
                                     PRestriction_r, PPropertyName_r, LPSTR, LPWSTR,
                                     Binary_r, StringArray_r, WStringArray_r)
from impacket.dcerpc.v5.ndr import NDRCALL, NULL
from impacket.dcerpc.v5.dtypes import DWORD, ULONG, LONG, LPLONG
from impacket.uuid import string_to_bin

from rpcserver import Interface, RpcFault, StubError, log, new_context_handle, \
    NCA_S_FAULT_CONTEXT_MISMATCH

logging.getLogger('impacket').setLevel(logging.CRITICAL)

NSPI_UUID = 'f5cc5a18-4264-101a-8c59-08002b2f8426'
GUID_NSPI = string_to_bin('C840A7DC-42C0-1A10-B4B9-08002B2FE182')
LAB_SERVER_GUID = string_to_bin('4c616221-e0c1-4d61-8f2a-3e5c0b1d7a01')

# Error codes (MS-OXNSPI 2.2.1.2)
SUCCESS = 0x00000000
ERRORS_RETURNED = 0x00040380
GENERAL_FAILURE = 0x80004005
NOT_FOUND = 0x8004010F
INVALID_PARAMETER = 0x80070057
TOO_COMPLEX = 0x80040117
TABLE_TOO_BIG = 0x80040403
INVALID_BOOKMARK = 0x80040405
NOT_SUPPORTED = 0x80040102
LOGON_FAILED = 0x80040111

CP_WINUNICODE = 0x04B0
CP_TELETEX = 0x4F25

MID_BEGINNING_OF_TABLE = 0
MID_CURRENT = 1
MID_END_OF_TABLE = 2
MID_UNRESOLVED = 0
MID_AMBIGUOUS = 1

fSkipObjects = 0x1
fEphID = 0x2
NspiAddressCreationTemplates = 0x2
NspiUnicodeStrings = 0x4
NspiUnicodeProptypes = 0x80000000

PT_UNSPECIFIED = 0x0000
PT_LONG = 0x0003
PT_BOOLEAN = 0x000B
PT_STRING8 = 0x001E
PT_UNICODE = 0x001F
PT_BINARY = 0x0102
PT_MV_STRING8 = 0x101E
PT_MV_UNICODE = 0x101F
PT_MV_BINARY = 0x1102
PT_ERROR = 0x000A
PT_OBJECT = 0x000D

# Property ids
PR = dict(
    DISPLAY_NAME=0x3001, ADDRTYPE=0x3002, EMAIL_ADDRESS=0x3003, COMMENT=0x3004, DEPTH=0x3005,
    OBJECT_TYPE=0x0FFE, ENTRYID=0x0FFF, INSTANCE_KEY=0x0FF6, RECORD_KEY=0x0FF9,
    MAPPING_SIGNATURE=0x0FF8, SEARCH_KEY=0x300B, DISPLAY_TYPE=0x3900, DISPLAY_TYPE_EX=0x3905,
    TEMPLATEID=0x3902, ACCOUNT=0x3A00, GIVEN_NAME=0x3A06, BUSINESS_TELEPHONE=0x3A08,
    SURNAME=0x3A11, TITLE=0x3A17, DEPARTMENT_NAME=0x3A18, OFFICE_LOCATION=0x3A19,
    PRIMARY_TELEPHONE=0x3A1A, TRANSMITABLE_DISPLAY_NAME=0x3A20, COMPANY_NAME=0x3A16,
    SMTP_ADDRESS=0x39FE, DISPLAY_NAME_PRINTABLE=0x39FF, CONTAINER_FLAGS=0x3600,
    EMS_AB_HOME_MDB=0x8006, EMS_AB_HOME_MTA=0x8007, EMS_AB_MEMBER=0x8009,
    EMS_AB_PROXY_ADDRESSES=0x800F, EMS_AB_NETWORK_ADDRESS=0x8170, EMS_AB_OBJECT_GUID=0x8C6D,
    EMS_AB_CONTAINERID=0xFFFD, EMS_AB_PARENT_ENTRYID=0xFFFC, EMS_AB_IS_MASTER=0xFFFB,
)


def tag(pid, ptype):
    return ((pid & 0xFFFF) << 16) | ptype


def is_string_type(t):
    return t in (PT_STRING8, PT_UNICODE)


def is_mv_string_type(t):
    return t in (PT_MV_STRING8, PT_MV_UNICODE)


class DirObject(object):
    def __init__(self, mid, dn, kind, display_type, object_type):
        self.mid = mid
        self.dn = dn
        self.kind = kind
        self.display_type = display_type
        self.object_type = object_type
        self.props = {}   # pid -> (canonical type, value)
        self.guid = uuidlib.uuid5(uuidlib.NAMESPACE_URL, dn.lower()).bytes_le

    def set(self, pid, ptype, value):
        self.props[pid] = (ptype, value)

    def display_name(self):
        return self.props.get(PR['DISPLAY_NAME'], (None, ''))[1]


class Directory(object):
    """The lab organisation's address book."""

    def __init__(self, config):
        self.config = config
        self.lock = threading.RLock()
        self.objects = []
        self.by_mid = {}
        self.by_dn = {}
        self.next_mid = 0x00001001
        self.containers = []     # (container id, name, depth, [objects])
        self._build()

    def _add(self, obj):
        self.objects.append(obj)
        self.by_mid[obj.mid] = obj
        self.by_dn[obj.dn.lower()] = obj
        return obj

    def _mid(self):
        m = self.next_mid
        self.next_mid += 1
        return m

    def network_addresses(self):
        c = self.config
        return ['ncacn_ip_tcp:%s' % c.fqdn_upper, 'ncalrpc:%s' % c.server_name,
                'ncacn_http:%s' % c.fqdn_upper, 'netbios:%s' % c.server_name]

    def _build(self):
        c = self.config
        users = [
            ('Administrator', 'Administrator', '', '', 'IT', 'Administrator'),
            ('alice', 'Alice Anders', 'Alice', 'Anders', 'Engineering', 'Engineer'),
            ('bob', 'Bob Brown', 'Bob', 'Brown', 'Engineering', 'Developer'),
            ('carol', 'Carol Clark', 'Carol', 'Clark', 'Sales', 'Account Manager'),
            ('dave', 'Dave Davis', 'Dave', 'Davis', 'Sales', 'Sales Rep'),
            ('erin', 'Erin Evans', 'Erin', 'Evans', 'Finance', 'Controller'),
        ]
        self.users = []
        for alias, name, given, sur, dept, title in users:
            dn = '%s/cn=%s' % (c.recipients_dn, alias)
            o = self._add(DirObject(self._mid(), dn, 'user', 0, 6))
            smtp = '%s@%s' % (alias.lower(), c.domain)
            o.alias = alias
            o.set(PR['DISPLAY_NAME'], PT_UNICODE, name)
            o.set(PR['TRANSMITABLE_DISPLAY_NAME'], PT_UNICODE, name)
            o.set(PR['DISPLAY_NAME_PRINTABLE'], PT_UNICODE, alias)
            o.set(PR['ACCOUNT'], PT_UNICODE, alias)
            o.set(PR['ADDRTYPE'], PT_UNICODE, 'EX')
            o.set(PR['EMAIL_ADDRESS'], PT_UNICODE, dn)
            o.set(PR['SMTP_ADDRESS'], PT_UNICODE, smtp)
            if given:
                o.set(PR['GIVEN_NAME'], PT_UNICODE, given)
            if sur:
                o.set(PR['SURNAME'], PT_UNICODE, sur)
            o.set(PR['DEPARTMENT_NAME'], PT_UNICODE, dept)
            o.set(PR['TITLE'], PT_UNICODE, title)
            o.set(PR['COMPANY_NAME'], PT_UNICODE, c.org)
            o.set(PR['OFFICE_LOCATION'], PT_UNICODE, 'Lab %s' % c.server_name)
            o.set(PR['BUSINESS_TELEPHONE'], PT_UNICODE, '+1 555 01%02d' % len(self.users))
            o.set(PR['EMS_AB_HOME_MDB'], PT_UNICODE, c.user_mdb_dn(dn))
            o.set(PR['EMS_AB_HOME_MTA'], PT_UNICODE, c.server_dn + '/cn=Microsoft MTA')
            o.set(PR['EMS_AB_NETWORK_ADDRESS'], PT_MV_UNICODE, self.network_addresses())
            o.set(PR['EMS_AB_PROXY_ADDRESSES'], PT_MV_UNICODE,
                  ['SMTP:%s' % smtp, 'X500:%s' % dn,
                   'smtp:%s@%s' % (alias.lower(), c.fqdn)])
            self.users.append(o)
        # Distribution list
        dn = '%s/cn=staff' % c.recipients_dn
        dl = self._add(DirObject(self._mid(), dn, 'dl', 1, 8))
        dl.alias = 'staff'
        dl.set(PR['DISPLAY_NAME'], PT_UNICODE, 'Lab Staff')
        dl.set(PR['TRANSMITABLE_DISPLAY_NAME'], PT_UNICODE, 'Lab Staff')
        dl.set(PR['DISPLAY_NAME_PRINTABLE'], PT_UNICODE, 'staff')
        dl.set(PR['ACCOUNT'], PT_UNICODE, 'staff')
        dl.set(PR['ADDRTYPE'], PT_UNICODE, 'EX')
        dl.set(PR['EMAIL_ADDRESS'], PT_UNICODE, dn)
        dl.set(PR['SMTP_ADDRESS'], PT_UNICODE, 'staff@%s' % c.domain)
        dl.set(PR['EMS_AB_PROXY_ADDRESSES'], PT_MV_UNICODE,
               ['SMTP:staff@%s' % c.domain, 'X500:%s' % dn])
        dl.members = [u.mid for u in self.users[1:]]
        self.dl = dl
        # Server object and its private MDB (not listed in address lists)
        srv = self._add(DirObject(self._mid(), c.server_dn, 'server', 3, 6))
        srv.alias = c.server_name
        srv.set(PR['DISPLAY_NAME'], PT_UNICODE, c.server_name)
        srv.set(PR['ACCOUNT'], PT_UNICODE, c.server_name)
        srv.set(PR['ADDRTYPE'], PT_UNICODE, 'EX')
        srv.set(PR['EMAIL_ADDRESS'], PT_UNICODE, c.server_dn)
        srv.set(PR['EMS_AB_NETWORK_ADDRESS'], PT_MV_UNICODE, self.network_addresses())
        srv.set(PR['EMS_AB_HOME_MDB'], PT_UNICODE, c.mdb_dn)
        srv.set(PR['DISPLAY_NAME_PRINTABLE'], PT_UNICODE, c.fqdn_upper)
        self.server = srv
        mdb = self._add(DirObject(self._mid(), c.mdb_dn, 'mdb', 3, 6))
        mdb.alias = 'Microsoft Private MDB'
        mdb.set(PR['DISPLAY_NAME'], PT_UNICODE, 'Mailbox Database (%s)' % c.server_name)
        mdb.set(PR['EMAIL_ADDRESS'], PT_UNICODE, c.mdb_dn)
        mdb.set(PR['ADDRTYPE'], PT_UNICODE, 'EX')
        mdb.set(PR['EMS_AB_NETWORK_ADDRESS'], PT_MV_UNICODE, self.network_addresses())
        self.mdb = mdb
        if c.per_mailbox_servers:
            # each mailbox's own server and MDB objects (Exchange 2013+, gromox)
            for u in self.users:
                name = c.mailbox_server(u.dn)
                ps = self._add(DirObject(self._mid(), c.user_server_dn(u.dn), 'server', 3, 6))
                ps.alias = name
                ps.set(PR['DISPLAY_NAME'], PT_UNICODE, name)
                ps.set(PR['ADDRTYPE'], PT_UNICODE, 'EX')
                ps.set(PR['EMAIL_ADDRESS'], PT_UNICODE, ps.dn)
                pm = self._add(DirObject(self._mid(), c.user_mdb_dn(u.dn), 'mdb', 3, 6))
                pm.alias = 'Microsoft Private MDB'
                pm.set(PR['DISPLAY_NAME'], PT_UNICODE, 'Mailbox Database (%s)' % name)
                pm.set(PR['ADDRTYPE'], PT_UNICODE, 'EX')
                pm.set(PR['EMAIL_ADDRESS'], PT_UNICODE, pm.dn)
        # Containers: GAL (id 0) and All Users
        gal = sorted(self.users + [dl], key=lambda o: o.display_name().lower())
        all_users_mid = self._mid()
        self.containers = [
            (0, 'Global Address List', 0, gal),
            (all_users_mid, 'All Users', 1, [o for o in gal if o.kind == 'user']),
        ]
        for mid, name, depth, _ in self.containers:
            dn = '/guid=%s' % uuidlib.uuid5(uuidlib.NAMESPACE_URL, name).hex.upper()
            o = DirObject(mid if mid else self._mid(), dn, 'container', 0x100, 4)
            o.set(PR['DISPLAY_NAME'], PT_UNICODE, name)
            o.set(PR['DEPTH'], PT_LONG, depth)
            o.set(PR['CONTAINER_FLAGS'], PT_LONG, 0x1 | (0x2 if depth == 0 else 0) | 0x10)
            o.set(PR['EMS_AB_CONTAINERID'], PT_LONG, mid)
            o.set(PR['EMS_AB_IS_MASTER'], PT_BOOLEAN, 0)
            o.container_id = mid
            self.by_dn[dn.lower()] = o
            if mid:
                self.by_mid[mid] = o

    # -- queries -------------------------------------------------------------
    def table(self, container_id):
        for mid, name, depth, objs in self.containers:
            if mid == container_id:
                return objs
        return None

    def lookup_dn(self, dn):
        return self.by_dn.get(dn.strip().lower())

    def container_objects(self):
        return [self.by_dn[k] for k in self.by_dn if self.by_dn[k].kind == 'container']

    def anr(self, text):
        """Ambiguous name resolution: case-insensitive prefix match on names/addresses."""
        t = text.strip().lower()
        if not t:
            return []
        if t.startswith('smtp:'):
            t = t[5:]
        res = []
        for o in self.users + [self.dl]:
            if t == o.dn.lower():
                return [o]
            cands = [o.display_name(), o.alias,
                     o.props.get(PR['SMTP_ADDRESS'], (0, ''))[1]]
            words = o.display_name().split()
            if any(c.lower().startswith(t) for c in cands if c) or \
                    any(w.lower().startswith(t) for w in words):
                res.append(o)
        exact = [o for o in res if t in (o.alias.lower(), o.display_name().lower(),
                                         o.props.get(PR['SMTP_ADDRESS'], (0, ''))[1].lower())]
        return exact if len(exact) == 1 else res


# ---------------------------------------------------------------------------
# Call definitions that Impacket lacks or that differ from the MS-OXNSPI IDL.
# ---------------------------------------------------------------------------
class NspiGetPropsSpec(NDRCALL):
    opnum = 9
    structure = (('hRpc', handle_t), ('dwFlags', DWORD), ('pStat', STAT),
                 ('pPropTags', PPropertyTagArray_r))


class NspiGetSpecialTableSpec(NDRCALL):
    opnum = 12
    structure = (('hRpc', handle_t), ('dwFlags', DWORD), ('pStat', STAT),
                 ('lpVersion', DWORD))


class NspiGetSpecialTableResponse(NDRCALL):
    structure = (('lpVersion', DWORD), ('ppRows', PPropertyRowSet_r), ('ErrorCode', ULONG))


class NspiSeekEntriesSpec(NDRCALL):
    opnum = 4
    structure = (('hRpc', handle_t), ('Reserved', DWORD), ('pStat', STAT),
                 ('pTarget', PropertyValue_r), ('lpETable', PPropertyTagArray_r),
                 ('pPropTags', PPropertyTagArray_r))


class NspiGetMatches(NDRCALL):
    """MS-OXNSPI 3.1.4.1.10."""
    opnum = 5
    structure = (('hRpc', handle_t), ('Reserved1', DWORD), ('pStat', STAT),
                 ('pReserved', PPropertyTagArray_r), ('Reserved2', DWORD),
                 ('Filter', PRestriction_r), ('lpPropName', PPropertyName_r),
                 ('ulRequested', DWORD), ('pPropTags', PPropertyTagArray_r))


class NspiGetMatchesResponse(NDRCALL):
    structure = (('pStat', STAT), ('ppOutMIds', PPropertyTagArray_r),
                 ('ppRows', PPropertyRowSet_r), ('ErrorCode', ULONG))


class NspiDNToMIdResponse(NDRCALL):
    structure = (('ppOutMIds', PPropertyTagArray_r), ('ErrorCode', ULONG))


def decode(stub, *classes):
    """Decode with the first class that consumes the whole stub."""
    errors = []
    for cls in classes:
        try:
            obj = cls()
            n = obj.fromString(stub)
            if n > len(stub) or len(stub) - n > 7:
                raise ValueError('consumed %d of %d bytes' % (n, len(stub)))
            return obj
        except Exception as e:
            errors.append('%s: %s' % (cls.__name__, e))
    raise StubError('; '.join(errors))


def ptr_is_null(obj, field):
    f = obj.fields[field]
    return 'ReferentID' in f.fields and f.fields['ReferentID'] == 0


def tag_list(obj, field, pointer=True):
    """List of property tags from a (pointer to) PropertyTagArray_r, or None if NULL."""
    if pointer and ptr_is_null(obj, field):
        return None
    arr = obj[field]['aulPropTag']
    out = []
    for x in arr:
        out.append(x['Data'] if hasattr(x, 'fields') else int(x))
    return out


def fill_tag_array(ptr, values):
    ptr['cValues'] = len(values)
    for v in values:
        d = DWORD()
        d['Data'] = v & 0xFFFFFFFF
        ptr['aulPropTag'].append(d)
    inner = ptr.fields['Data'] if 'Data' in ptr.fields else ptr
    inner.fields['aulPropTag'].fields['MaximumCount'] = len(values) + 1


def stat_dict(s):
    return dict((k, s[k]) for k in ('SortType', 'ContainerID', 'CurrentRec', 'Delta', 'NumPos',
                                    'TotalRecs', 'CodePage', 'TemplateLocale', 'SortLocale'))


def copy_stat(dst, d):
    for k, v in d.items():
        dst[k] = v & 0xFFFFFFFF if k != 'Delta' else v


def encode_ansi(s):
    return s.encode('cp1252', 'replace')


class Session(object):
    def __init__(self, flags, stat):
        self.flags = flags
        self.codepage = stat['CodePage']
        self.locale = stat['TemplateLocale']


class Nspi(object):
    def __init__(self, config, directory):
        self.config = config
        self.dir = directory
        self.server_guid = LAB_SERVER_GUID

    def interface(self):
        return Interface('nspi', NSPI_UUID, '56.0', {
            0: self.op_bind, 1: self.op_unbind, 2: self.op_update_stat, 3: self.op_query_rows,
            4: self.op_seek_entries, 5: self.op_get_matches, 7: self.op_dn_to_mid,
            8: self.op_get_prop_list, 9: self.op_get_props, 10: self.op_compare_mids,
            12: self.op_get_special_table, 16: self.op_query_columns,
            19: self.op_resolve_names, 20: self.op_resolve_names_w,
        })

    # -- session handles --------------------------------------------------
    def _session(self, call, handle):
        raw = handle.getData()
        with call.assoc_group.lock:
            s = call.assoc_group.handles.get(raw)
        if not isinstance(s, Session):
            raise RpcFault(NCA_S_FAULT_CONTEXT_MISMATCH)
        return s

    # -- property rendering ----------------------------------------------
    def _entryid(self, obj, flags):
        if flags & fEphID:
            return struct.pack('<BBBB16sLLL', 0x87, 0, 0, 0, self.server_guid, 1,
                               obj.display_type, obj.mid)
        return struct.pack('<BBBB16sLL', 0, 0, 0, 0, GUID_NSPI, 1, obj.display_type) + \
            obj.dn.encode('ascii') + b'\x00'

    def _raw_value(self, obj, pid, flags):
        """(canonical type, value) of a property or None."""
        if pid == PR['ENTRYID']:
            return PT_BINARY, self._entryid(obj, flags)
        if pid == PR['INSTANCE_KEY']:
            return PT_BINARY, struct.pack('<L', obj.mid)
        if pid == PR['RECORD_KEY']:
            return PT_BINARY, self._entryid(obj, 0)
        if pid == PR['SEARCH_KEY']:
            return PT_BINARY, ('EX:' + obj.dn.upper()).encode('ascii') + b'\x00'
        if pid == PR['MAPPING_SIGNATURE']:
            return PT_BINARY, GUID_NSPI
        if pid == PR['EMS_AB_OBJECT_GUID']:
            return PT_BINARY, obj.guid
        if pid == PR['OBJECT_TYPE']:
            return PT_LONG, obj.object_type
        if pid == PR['DISPLAY_TYPE']:
            return PT_LONG, obj.display_type
        if pid == PR['DISPLAY_TYPE_EX'] and obj.kind in ('user', 'dl'):
            return PT_LONG, obj.display_type
        if pid == PR['TEMPLATEID'] and obj.kind in ('user', 'dl'):
            return PT_BINARY, self._entryid(obj, 0)
        if pid == PR['EMS_AB_MEMBER'] and obj.kind == 'dl':
            return PT_OBJECT, 0
        return obj.props.get(pid)

    def prop_tags_of(self, obj, unicode):
        pids = [PR['ENTRYID'], PR['INSTANCE_KEY'], PR['RECORD_KEY'], PR['SEARCH_KEY'],
                PR['MAPPING_SIGNATURE'], PR['OBJECT_TYPE'], PR['DISPLAY_TYPE'],
                PR['EMS_AB_OBJECT_GUID']]
        if obj.kind in ('user', 'dl'):
            pids += [PR['DISPLAY_TYPE_EX'], PR['TEMPLATEID']]
        pids += sorted(obj.props)
        out = []
        for pid in pids:
            t, v = self._raw_value(obj, pid, 0)
            if t == PT_UNICODE and not unicode:
                t = PT_STRING8
            elif t == PT_MV_UNICODE and not unicode:
                t = PT_MV_STRING8
            out.append(tag(pid, t))
        return out

    def _value_for(self, obj, ptag, flags, codepage):
        """(out tag, python value) or (error tag, error code)."""
        pid = ptag >> 16
        want = ptag & 0xFFFF
        rv = self._raw_value(obj, pid, flags) if obj is not None else None
        if rv is None:
            return tag(pid, PT_ERROR), NOT_FOUND
        have, value = rv
        if have == PT_UNICODE:
            if want == PT_UNSPECIFIED:
                want = PT_UNICODE if codepage == CP_WINUNICODE else PT_STRING8
            if want == PT_STRING8 and codepage == CP_WINUNICODE:
                # MS-OXNSPI: with CP_WINUNICODE, PtypString8 requests get PtypString.
                want = PT_UNICODE
            if want not in (PT_STRING8, PT_UNICODE):
                return tag(pid, PT_ERROR), NOT_FOUND
            return tag(pid, want), value
        if have == PT_MV_UNICODE:
            if want == PT_UNSPECIFIED:
                want = PT_MV_UNICODE if codepage == CP_WINUNICODE else PT_MV_STRING8
            if want == PT_MV_STRING8 and codepage == CP_WINUNICODE:
                want = PT_MV_UNICODE
            if want not in (PT_MV_STRING8, PT_MV_UNICODE):
                return tag(pid, PT_ERROR), NOT_FOUND
            return tag(pid, want), value
        if want not in (PT_UNSPECIFIED, have):
            return tag(pid, PT_ERROR), NOT_FOUND
        return tag(pid, have), value

    @staticmethod
    def make_prop(ptag, value):
        pv = PropertyValue_r()
        pv['ulPropTag'] = ptag
        pv['ulReserved'] = 0
        t = ptag & 0xFFFF
        pv['Value']['tag'] = t
        if t == PT_STRING8:
            pv['Value']['lpszA'] = encode_ansi(value) + b'\x00'
        elif t == PT_UNICODE:
            pv['Value']['lpszW'] = value + '\x00'
        elif t == PT_LONG:
            pv['Value']['l'] = value
        elif t == PT_BOOLEAN:
            pv['Value']['b'] = 1 if value else 0
        elif t == PT_ERROR:
            pv['Value']['err'] = value
        elif t == PT_BINARY:
            pv['Value']['bin']['cValues'] = len(value)
            pv['Value']['bin']['lpb'] = list(value) if value else NULL
        elif t == PT_MV_STRING8:
            pv['Value']['MVszA']['cValues'] = len(value)
            for s in value:
                x = LPSTR()
                x['Data'] = encode_ansi(s) + b'\x00'
                pv['Value']['MVszA']['lppszA'].append(x)
        elif t == PT_MV_UNICODE:
            pv['Value']['MVszW']['cValues'] = len(value)
            for s in value:
                x = LPWSTR()
                x['Data'] = s + '\x00'
                pv['Value']['MVszW']['lppszW'].append(x)
        elif t in (PT_OBJECT, 0x0001, PT_UNSPECIFIED):
            pv['Value']['lReserved'] = 0
        else:
            raise ValueError('type 0x%x not supported' % t)
        return pv

    def make_row(self, obj, tags, flags, codepage):
        row = PropertyRow_r()
        row['Reserved'] = 0
        errors = False
        for t in tags:
            otag, val = self._value_for(obj, t, flags, codepage)
            if otag & 0xFFFF == PT_ERROR:
                errors = True
            row['lpProps'].append(self.make_prop(otag, val))
        row['cValues'] = len(tags)
        return row, errors

    def fill_rowset(self, rowset_ptr, objs, tags, flags, codepage):
        rowset_ptr['cRows'] = len(objs)
        for o in objs:
            row, _ = self.make_row(o, tags, flags, codepage)
            rowset_ptr['aRow'].append(row)

    def default_columns(self, codepage):
        s = PT_UNICODE if codepage == CP_WINUNICODE else PT_STRING8
        return [tag(PR['EMS_AB_CONTAINERID'], PT_LONG), tag(PR['OBJECT_TYPE'], PT_LONG),
                tag(PR['DISPLAY_TYPE'], PT_LONG), tag(PR['DISPLAY_NAME'], s),
                tag(PR['PRIMARY_TELEPHONE'], s), tag(PR['DEPARTMENT_NAME'], s),
                tag(PR['OFFICE_LOCATION'], s)]

    # -- table positioning (MS-OXNSPI 3.1.4.1.x, STAT semantics) ----------
    def _position(self, table, stat):
        cur = stat['CurrentRec']
        if cur == MID_BEGINNING_OF_TABLE:
            base = 0
        elif cur == MID_END_OF_TABLE:
            base = len(table)
        else:
            idx = [i for i, o in enumerate(table) if o.mid == cur]
            if not idx:
                return None
            base = idx[0]
        delta = stat['Delta']
        if delta >= 0x80000000:
            delta -= 0x100000000
        return max(0, min(len(table), base + delta))

    @staticmethod
    def _set_position(stat, table, pos):
        stat['CurrentRec'] = table[pos].mid if pos < len(table) else MID_END_OF_TABLE
        stat['Delta'] = 0
        stat['NumPos'] = pos
        stat['TotalRecs'] = len(table)

    # -- transport-neutral operations: the RPC handlers below and MAPI over HTTP
    # (lab_mapihttp.py) both answer from these.  stat: a dict as stat_dict() gives.
    def rows_at(self, stat, etable, count):
        """QueryRows: -> (code, objects or None, new stat)."""
        out = dict(stat)
        if etable is not None:
            objs = [self.dir.by_mid.get(m) for m in etable][:count or len(etable)]
            out.update(CurrentRec=MID_END_OF_TABLE if len(objs) >= len(etable)
                       else etable[len(objs)], NumPos=len(objs), TotalRecs=len(etable),
                       Delta=0)
            return SUCCESS, objs, out
        table = self.dir.table(stat['ContainerID'])
        if table is None:
            return INVALID_BOOKMARK, None, out
        pos = self._position(table, stat)
        if pos is None:
            return NOT_FOUND, None, out
        objs = table[pos:pos + count]
        self._set_position(out, table, pos + len(objs))
        return SUCCESS, objs, out

    def seek(self, stat, target_tag, target, etable, want_rows):
        """SeekEntries on PR_DISPLAY_NAME: -> (code, rows or None, new stat)."""
        out = dict(stat)
        if stat['SortType'] != 0 or (target_tag >> 16) != PR['DISPLAY_NAME'] or \
                (target_tag & 0xFFFF) not in (PT_STRING8, PT_UNICODE) or target is None:
            return GENERAL_FAILURE, None, out
        target = target.rstrip('\x00').lower()
        if etable is not None:
            table = [self.dir.by_mid[m] for m in etable if m in self.dir.by_mid]
            table.sort(key=lambda o: o.display_name().lower())
        else:
            table = self.dir.table(stat['ContainerID'])
        if table is None:
            return INVALID_BOOKMARK, None, out
        idx = [i for i, o in enumerate(table) if o.display_name().lower() >= target]
        if not idx:
            return NOT_FOUND, None, out
        self._set_position(out, table, idx[0])
        return SUCCESS, table[idx[0]:] if want_rows else None, out

    def move(self, stat):
        """UpdateStat: -> (code, new stat, rows moved)."""
        out = dict(stat)
        table = self.dir.table(stat['ContainerID'])
        if table is None:
            return INVALID_BOOKMARK, out, 0
        before = self._position(table, dict(stat, Delta=0))
        pos = self._position(table, stat)
        if pos is None:
            return NOT_FOUND, out, 0
        self._set_position(out, table, pos)
        return SUCCESS, out, pos - (before if before is not None else 0)

    def matches(self, stat, restriction):
        """GetMatches: restriction (in the NDR shape _eval reads) or None for the
        members of the distribution list at CurrentRec -> (code, objects or None)."""
        if restriction is None:
            obj = self.dir.by_mid.get(stat['CurrentRec'])
            if obj is None or obj.kind != 'dl':
                return NOT_FOUND, None
            return SUCCESS, [self.dir.by_mid[m] for m in obj.members]
        table = self.dir.table(stat['ContainerID'])
        if table is None:
            return INVALID_BOOKMARK, None
        try:
            return SUCCESS, [o for o in table if self._eval(restriction, o, stat['CodePage'])]
        except (KeyError, TypeError, AttributeError) as e:
            raise StubError('bad restriction: %s' % e)

    def compare(self, container_id, m1, m2):
        """CompareMIds: -> (code, position of m1 minus position of m2)."""
        table = self.dir.table(container_id)
        if table is None:
            return INVALID_BOOKMARK, 0
        pos = dict((o.mid, i) for i, o in enumerate(table))
        if m1 not in pos or m2 not in pos:
            return GENERAL_FAILURE, 0
        return SUCCESS, pos[m1] - pos[m2]

    def resolve(self, names):
        """ResolveNames: -> (MIds, with MID_AMBIGUOUS / MID_UNRESOLVED, and the
        resolved objects)."""
        mids = []
        found = []
        for n in names:
            m = self.dir.anr(n)
            if len(m) == 1:
                mids.append(m[0].mid)
                found.append(m[0])
            else:
                mids.append(MID_AMBIGUOUS if m else MID_UNRESOLVED)
        return mids, found

    def special_table_rows(self, unicode):
        """GetSpecialTable's hierarchy table: -> (columns, containers, codepage)."""
        s = PT_UNICODE if unicode else PT_STRING8
        tags = [tag(PR['ENTRYID'], PT_BINARY), tag(PR['CONTAINER_FLAGS'], PT_LONG),
                tag(PR['DEPTH'], PT_LONG), tag(PR['EMS_AB_CONTAINERID'], PT_LONG),
                tag(PR['DISPLAY_NAME'], s), tag(PR['EMS_AB_IS_MASTER'], PT_BOOLEAN)]
        containers = [self.dir.lookup_dn(o.dn) for o in self.dir.container_objects()]
        containers.sort(key=lambda o: (o.props[PR['DEPTH']][1], o.container_id))
        return tags, containers, CP_WINUNICODE if unicode else CP_TELETEX

    def all_columns(self, unicode):
        """QueryColumns: every property tag the directory's objects have."""
        tags = set()
        for o in self.dir.objects:
            tags.update(self.prop_tags_of(o, unicode))
        return sorted(tags)

    # -- operations -------------------------------------------------------
    def op_bind(self, call, stub):
        req = decode(stub, nspi.NspiBind)
        flags = req['dwFlags']
        stat = req['pStat']
        resp = nspi.NspiBindResponse()
        handle = new_context_handle()
        with call.assoc_group.lock:
            call.assoc_group.handles[handle] = Session(flags, stat)
        resp['contextHandle']['context_handle_attributes'] = 0
        resp['contextHandle']['context_handle_uuid'] = handle[4:]
        if ptr_is_null(req, 'pServerGuid'):
            resp['pServerGuid'] = NULL
        else:
            resp['pServerGuid'] = self.server_guid
        resp['ErrorCode'] = SUCCESS
        log('nspi: NspiBind flags=0x%x codepage=%d -> handle %s' % (
            flags, stat['CodePage'], handle[4:].hex()))
        return resp.getData()

    def op_unbind(self, call, stub):
        req = decode(stub, nspi.NspiUnbind)
        raw = req['contextHandle'].getData()
        with call.assoc_group.lock:
            existed = call.assoc_group.handles.pop(raw, None) is not None
        resp = nspi.NspiUnbindResponse()
        resp['ErrorCode'] = 1     # UnbindSuccess (MS-OXNSPI 3.1.4.1.2)
        log('nspi: NspiUnbind (%s)' % ('ok' if existed else 'unknown handle'))
        return resp.getData()

    def op_update_stat(self, call, stub):
        req = decode(stub, nspi.NspiUpdateStat)
        self._session(call, req['hRpc'])
        stat = stat_dict(req['pStat'])
        resp = nspi.NspiUpdateStatResponse()
        code, out, moved = self.move(stat)
        copy_stat(resp['pStat'], out)
        if ptr_is_null(req, 'plDelta'):
            resp['plDelta'] = NULL
        else:
            resp['plDelta'] = moved if code == SUCCESS else 0
        resp['ErrorCode'] = code
        log('nspi: NspiUpdateStat container=%d cur=%d delta=%d -> 0x%x' % (
            stat['ContainerID'], stat['CurrentRec'], stat['Delta'], code))
        return resp.getData()

    def op_query_rows(self, call, stub):
        req = decode(stub, nspi.NspiQueryRows)
        self._session(call, req['hRpc'])
        flags = req['dwFlags']
        stat = stat_dict(req['pStat'])
        count = req['Count']
        tags = tag_list(req, 'pPropTags')
        etable = None
        if not ptr_is_null(req, 'lpETable'):
            etable = [x['Data'] if hasattr(x, 'fields') else int(x) for x in req['lpETable']]
        resp = nspi.NspiQueryRowsResponse()
        if tags is None:
            tags = self.default_columns(stat['CodePage'])
        code, rows_objs, out = self.rows_at(stat, etable, count)
        copy_stat(resp['pStat'], out)
        if rows_objs is None:
            resp['ppRows'] = NULL
        else:
            self.fill_rowset(resp['ppRows'], rows_objs, tags, flags, stat['CodePage'])
        resp['ErrorCode'] = code
        log('nspi: NspiQueryRows container=%d cur=%d count=%d etable=%s -> %s rows, 0x%x' % (
            stat['ContainerID'], stat['CurrentRec'], count,
            None if etable is None else len(etable),
            0 if rows_objs is None else len(rows_objs), code))
        return resp.getData()

    def op_seek_entries(self, call, stub):
        req = decode(stub, NspiSeekEntriesSpec, nspi.NspiSeekEntries)
        self._session(call, req['hRpc'])
        stat = stat_dict(req['pStat'])
        target_tag = req['pTarget']['ulPropTag']
        resp = nspi.NspiSeekEntriesResponse()
        copy_stat(resp['pStat'], stat)
        spec = isinstance(req, NspiSeekEntriesSpec)
        etable = tag_list(req, 'lpETable', pointer=spec) if spec or \
            req['lpETable']['cValues'] else None
        tags = tag_list(req, 'pPropTags', pointer=spec) if spec or \
            req['pPropTags']['cValues'] else None
        val = req['pTarget']['Value']
        target = None
        if target_tag & 0xFFFF in (PT_STRING8, PT_UNICODE):
            target = val['lpszW'] if target_tag & 0xFFFF == PT_UNICODE else val['lpszA']
            if isinstance(target, bytes):
                target = target.decode('cp1252', 'replace')
        code, rows, out = self.seek(stat, target_tag, target, etable, tags is not None)
        copy_stat(resp['pStat'], out)
        if rows is None:
            resp['ppRows'] = NULL
        else:
            self.fill_rowset(resp['ppRows'], rows, tags, 0, stat['CodePage'])
        resp['ErrorCode'] = code
        log('nspi: NspiSeekEntries target=0x%08x -> 0x%x cur=%d' % (
            target_tag, code, resp['pStat']['CurrentRec']))
        return resp.getData()

    # restrictions
    def _prop_values(self, obj, ptag, codepage):
        otag, v = self._value_for(obj, ptag, 0, CP_WINUNICODE)
        if otag & 0xFFFF == PT_ERROR:
            return None
        return v

    @staticmethod
    def _restr_value(pptr):
        """Python value of a PPropertyValue_r in a restriction."""
        pv = pptr
        t = pv['ulPropTag'] & 0xFFFF
        u = pv['Value']
        if t == PT_STRING8:
            v = u['lpszA']
            return v.decode('cp1252', 'replace').rstrip('\x00') if isinstance(v, bytes) \
                else v.rstrip('\x00')
        if t == PT_UNICODE:
            return u['lpszW'].rstrip('\x00')
        if t == PT_LONG:
            return u['l']
        if t == PT_BOOLEAN:
            return u['b']
        if t == PT_BINARY:
            return b''.join(u['bin']['lpb']) if u['bin']['cValues'] else b''
        raise StubError('restriction value type 0x%x unsupported' % t)

    def _eval(self, r, obj, cp):
        rt = r['rt']
        res = r['res']
        if rt in (0, 1):
            key = 'resAnd' if rt == 0 else 'resOr'
            subs = [] if res[key]['cRes'] == 0 else list(res[key]['lpRes'])
            vals = [self._eval(s, obj, cp) for s in subs]
            return all(vals) if rt == 0 else any(vals)
        if rt == 2:
            return not self._eval(res['resNot']['lpRes'], obj, cp)
        if rt == 3:
            c = res['resContent']
            have = self._prop_values(obj, c['ulPropTag'], cp)
            if have is None:
                return False
            want = self._restr_value(c['lpProp'])
            fuzzy = c['ulFuzzyLevel']
            items = have if isinstance(have, list) else [have]
            for h in items:
                a, b = h, want
                if isinstance(a, str) and isinstance(b, str) and fuzzy & 0x00050000:
                    a, b = a.lower(), b.lower()
                if fuzzy & 0xFFFF == 0 and a == b:
                    return True
                if fuzzy & 0xFFFF == 1 and b in a:
                    return True
                if fuzzy & 0xFFFF == 2 and a[:len(b)] == b:
                    return True
            return False
        if rt == 4:
            p = res['resProperty']
            have = self._prop_values(obj, p['ulPropTag'], cp)
            if have is None:
                return False
            want = self._restr_value(p['lpProp'])
            if isinstance(have, str) and isinstance(want, str):
                have, want = have.lower(), want.lower()
            op = p['relop']
            try:
                if op == 0:
                    return have < want
                if op == 1:
                    return have <= want
                if op == 2:
                    return have > want
                if op == 3:
                    return have >= want
                if op == 4:
                    return have == want
                if op == 5:
                    return have != want
                if op == 6:
                    return re.search(want, have) is not None
            except TypeError:
                return False
            return False
        if rt == 6:
            b = res['resBitMask']
            have = self._prop_values(obj, b['ulPropTag'], cp)
            if not isinstance(have, int):
                return False
            nz = (have & b['ulMask']) != 0
            return nz if b['relBMR'] == 1 else not nz
        if rt == 7:
            s = res['resSize']
            have = self._prop_values(obj, s['ulPropTag'], cp)
            if have is None:
                return False
            size = len(have.encode('utf-16le')) + 2 if isinstance(have, str) else \
                len(have) if isinstance(have, bytes) else 4
            return [size < s['cb'], size <= s['cb'], size > s['cb'], size >= s['cb'],
                    size == s['cb'], size != s['cb'], False][min(s['relop'], 6)]
        if rt == 8:
            return self._prop_values(obj, res['resExist']['ulPropTag'], cp) is not None
        if rt == 5:
            c = res['resCompareProps']
            a = self._prop_values(obj, c['ulPropTag1'], cp)
            b = self._prop_values(obj, c['ulPropTag2'], cp)
            return a is not None and a == b if c['relop'] == 4 else False
        raise RpcFault(0x000006f7)

    def op_get_matches(self, call, stub):
        req = decode(stub, NspiGetMatches)
        self._session(call, req['hRpc'])
        stat = stat_dict(req['pStat'])
        requested = req['ulRequested']
        tags = tag_list(req, 'pPropTags')
        resp = NspiGetMatchesResponse()
        copy_stat(resp['pStat'], stat)
        code, matches = self.matches(
            stat, None if ptr_is_null(req, 'Filter') else req['Filter'])
        if matches is not None and len(matches) > requested:
            code = TABLE_TOO_BIG
            matches = None
        if matches is None:
            resp['ppOutMIds'] = NULL
            resp['ppRows'] = NULL
        else:
            fill_tag_array(resp['ppOutMIds'], [o.mid for o in matches])
            resp['pStat']['CurrentRec'] = MID_BEGINNING_OF_TABLE
            resp['pStat']['NumPos'] = 0
            resp['pStat']['TotalRecs'] = len(matches)
            if tags is None:
                resp['ppRows'] = NULL
            else:
                self.fill_rowset(resp['ppRows'], matches, tags, 0, stat['CodePage'])
        resp['ErrorCode'] = code
        log('nspi: NspiGetMatches container=%d requested=%d -> %s matches, 0x%x' % (
            stat['ContainerID'], requested, None if matches is None else len(matches), code))
        return resp.getData()

    def op_dn_to_mid(self, call, stub):
        req = decode(stub, nspi.NspiDNToMId)
        self._session(call, req['hRpc'])
        names = []
        for s in req['pNames']['Strings']:
            v = s['Data']
            if isinstance(v, bytes):
                v = v.decode('cp1252', 'replace')
            names.append(v.rstrip('\x00'))
        mids = []
        for n in names:
            o = self.dir.lookup_dn(n)
            mids.append(o.mid if o is not None else 0)
        resp = NspiDNToMIdResponse()
        fill_tag_array(resp['ppOutMIds'], mids)
        resp['ErrorCode'] = SUCCESS
        log('nspi: NspiDNToMId %s -> %s' % (names, ['0x%x' % m for m in mids]))
        return resp.getData()

    def op_get_prop_list(self, call, stub):
        req = decode(stub, nspi.NspiGetPropList)
        self._session(call, req['hRpc'])
        mid = req['dwMId']
        obj = self.dir.by_mid.get(mid)
        resp = nspi.NspiGetPropListResponse()
        if obj is None:
            resp['ppOutMIds'] = NULL
            resp['ErrorCode'] = NOT_FOUND
        else:
            fill_tag_array(resp['ppOutMIds'],
                           self.prop_tags_of(obj, req['CodePage'] == CP_WINUNICODE))
            resp['ErrorCode'] = SUCCESS
        log('nspi: NspiGetPropList mid=0x%x -> 0x%x' % (mid, resp['ErrorCode']))
        return resp.getData()

    def op_get_props(self, call, stub):
        req = decode(stub, NspiGetPropsSpec, nspi.NspiGetProps)
        self._session(call, req['hRpc'])
        flags = req['dwFlags']
        stat = req['pStat']
        tags = tag_list(req, 'pPropTags')
        mid = stat['CurrentRec']
        obj = self.dir.by_mid.get(mid)
        cp = stat['CodePage']
        resp = nspi.NspiGetPropsResponse()
        if tags is None:
            tags = self.prop_tags_of(obj, cp == CP_WINUNICODE) if obj is not None else []
        if obj is None and tags == []:
            resp['ppRows'] = NULL
            code = NOT_FOUND
        else:
            row, errors = self.make_row(obj, tags, flags, cp)
            resp['ppRows']['Reserved'] = 0
            resp['ppRows']['cValues'] = row['cValues']
            resp['ppRows']['lpProps'] = row['lpProps']
            code = ERRORS_RETURNED if errors else SUCCESS
        resp['ErrorCode'] = code
        log('nspi: NspiGetProps mid=0x%x tags=%s cp=%d -> 0x%x' % (
            mid, ['%08x' % t for t in tags], cp, code))
        return resp.getData()

    def op_compare_mids(self, call, stub):
        req = decode(stub, nspi.NspiCompareMIds)
        self._session(call, req['hRpc'])
        stat = req['pStat']
        resp = nspi.NspiCompareMIdsResponse()
        m1, m2 = req['MId1'], req['MId2']
        code, result = self.compare(stat['ContainerID'], m1, m2)
        resp['plResult'] = result
        resp['ErrorCode'] = code
        log('nspi: NspiCompareMIds 0x%x 0x%x -> %d (0x%x)' % (m1, m2, result, code))
        return resp.getData()

    def op_get_special_table(self, call, stub):
        req = decode(stub, NspiGetSpecialTableSpec, nspi.NspiGetSpecialTable)
        self._session(call, req['hRpc'])
        flags = req['dwFlags']
        resp = NspiGetSpecialTableResponse()
        resp['lpVersion'] = 1
        s = PT_UNICODE if flags & NspiUnicodeStrings else PT_STRING8
        if flags & NspiAddressCreationTemplates:
            # Address creation table: one row per template (we offer none).
            resp['ppRows']['cRows'] = 0
        else:
            tags, containers, cp = self.special_table_rows(s == PT_UNICODE)
            self.fill_rowset(resp['ppRows'], containers, tags, 0, cp)
        resp['ErrorCode'] = SUCCESS
        log('nspi: NspiGetSpecialTable flags=0x%x' % flags)
        return resp.getData()

    def op_query_columns(self, call, stub):
        req = decode(stub, nspi.NspiQueryColumns)
        self._session(call, req['hRpc'])
        unicode = bool(req['dwFlags'] & NspiUnicodeProptypes)
        tags = self.all_columns(unicode)
        resp = nspi.NspiQueryColumnsResponse()
        fill_tag_array(resp['ppColumns'], tags)
        resp['ErrorCode'] = SUCCESS
        log('nspi: NspiQueryColumns flags=0x%x -> %d columns' % (req['dwFlags'], len(tags)))
        return resp.getData()

    def _resolve(self, call, req, names):
        self._session(call, req['hRpc'])
        stat = req['pStat']
        tags = tag_list(req, 'pPropTags')
        cp = stat['CodePage']
        if tags is None:
            tags = self.default_columns(cp)
        mids, found = self.resolve(names)
        resp = nspi.NspiResolveNamesResponse()
        fill_tag_array(resp['ppMIds'], mids)
        self.fill_rowset(resp['ppRows'], found, tags, 0, cp)
        resp['ErrorCode'] = SUCCESS
        log('nspi: NspiResolveNames%s %s -> %s' % (
            'W' if isinstance(req, nspi.NspiResolveNamesW) else '', names,
            ['0x%x' % m for m in mids]))
        return resp.getData()

    def op_resolve_names(self, call, stub):
        req = decode(stub, nspi.NspiResolveNames)
        names = []
        for s in req['paStr']['Strings']:
            v = s['Data']
            if isinstance(v, bytes):
                v = v.decode('cp1252', 'replace')
            names.append(v.rstrip('\x00'))
        return self._resolve(call, req, names)

    def op_resolve_names_w(self, call, stub):
        req = decode(stub, nspi.NspiResolveNamesW)
        names = [s['Data'].rstrip('\x00') for s in req['paStr']['Strings']]
        return self._resolve(call, req, names)
