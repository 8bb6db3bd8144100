"""NDR definitions of the EMSMDB (MS-OXCRPC) calls, built from Impacket's NDR classes.

exchange_emsmdb a4f1db00-ca47-1067-b31f-00dd010662da v0.81 and
AsyncEMSMDB 5261574a-4572-206e-b268-6b199213b4e4 v0.01.  Fixed arrays such as
rgwClientVersion[3] are written as three consecutive unsigned shorts, which is
their NDR representation.  EcDoConnect/EcDoRpc follow the Exchange 2003-era
IDL (EcDoRpc carries its XOR-0xA5 ROP buffer as a conformant varying byte
array, in and out, followed by the in/out u16 length and the u16 maximum).
"""

from impacket.dcerpc.v5.ndr import (NDRCALL, NDRSTRUCT, NDRUniConformantArray,
                                    NDRUniConformantVaryingArray)
from impacket.dcerpc.v5.dtypes import ULONG, USHORT, UUID, STR, LPSTR
from impacket.uuid import uuidtup_to_bin

EMSMDB_UUID = 'a4f1db00-ca47-1067-b31f-00dd010662da'
ASYNC_EMSMDB_UUID = '5261574a-4572-206e-b268-6b199213b4e4'
MSRPC_UUID_EMSMDB = uuidtup_to_bin((EMSMDB_UUID, '0.81'))
MSRPC_UUID_ASYNCEMSMDB = uuidtup_to_bin((ASYNC_EMSMDB_UUID, '0.1'))


class CXH(NDRSTRUCT):
    """A context handle (CXH / ACXH): attributes + uuid, 20 bytes."""
    structure = (('context_handle_attributes', ULONG), ('context_handle_uuid', UUID))

    def raw(self):
        return self.getData()

    def set_raw(self, raw):
        self['context_handle_attributes'] = int.from_bytes(raw[:4], 'little')
        self['context_handle_uuid'] = raw[4:20]


class _BulkBytes(object):
    """Byte arrays packed and unpacked in one slice: Impacket's generic array
    code works byte by byte, which made a 10 MB message take minutes.  The
    wire bytes are the same (bytes need no alignment)."""

    def pack(self, fieldName, fieldTypeOrClass, soFar=0):
        two = fieldTypeOrClass.split('*')
        if len(two) != 2:
            return super().pack(fieldName, fieldTypeOrClass, soFar)
        items = self.fields[fieldName]
        if isinstance(items, (bytes, bytearray)):
            answer = bytes(items)
        else:
            answer = b''.join(x if isinstance(x, bytes) else bytes([x]) for x in items)
        self.setArraySize(len(answer))
        return answer

    def unpack(self, fieldName, fieldTypeOrClass, data, offset=0):
        two = fieldTypeOrClass.split('*')
        if len(two) != 2:
            return super().unpack(fieldName, fieldTypeOrClass, data, offset)
        if isinstance(self, NDRUniConformantArray):
            n = self.getArraySize()
        else:
            n = self[two[1]]
        chunk = data[offset:offset + max(0, min(n, len(data) - offset))]
        self.fields[fieldName] = [chunk[i:i + 1] for i in range(len(chunk))]
        return len(chunk)


class BYTE_ARRAY(_BulkBytes, NDRUniConformantArray):
    item = 'c'


class BYTE_VARRAY(_BulkBytes, NDRUniConformantVaryingArray):
    item = 'c'


def array_bytes(a):
    return b''.join(a) if a else b''


# Opnum 0
class EcDoConnect(NDRCALL):
    opnum = 0
    structure = (
        ('szUserDN', STR), ('ulFlags', ULONG), ('ulConMod', ULONG), ('cbLimit', ULONG),
        ('ulCpid', ULONG), ('ulLcidString', ULONG), ('ulLcidSort', ULONG),
        ('ulIcxrLink', ULONG), ('usFCanConvertCodePages', USHORT),
        # [in, out] rgwClientVersion[3] and pullTimeStamp, as in OpenChange's
        # exchange.idl and Exchange's own client (EcDoConnect_Wrapped)
        ('rgwClientVersion0', USHORT), ('rgwClientVersion1', USHORT),
        ('rgwClientVersion2', USHORT), ('pullTimeStamp', ULONG),
    )


class EcDoConnectResponse(NDRCALL):
    structure = (
        ('pcxh', CXH), ('pcmsPollsMax', ULONG), ('pcRetry', ULONG), ('pcmsRetryDelay', ULONG),
        ('picxr', USHORT), ('szDNPrefix', LPSTR), ('szDisplayName', LPSTR),
        ('rgwServerVersion0', USHORT), ('rgwServerVersion1', USHORT),
        ('rgwServerVersion2', USHORT),
        ('rgwClientVersion0', USHORT), ('rgwClientVersion1', USHORT),
        ('rgwClientVersion2', USHORT), ('pullTimeStamp', ULONG), ('ErrorCode', ULONG),
    )


# Opnum 1
class EcDoDisconnect(NDRCALL):
    opnum = 1
    structure = (('pcxh', CXH),)


class EcDoDisconnectResponse(NDRCALL):
    structure = (('pcxh', CXH), ('ErrorCode', ULONG))


# Opnum 2
class EcDoRpc(NDRCALL):
    opnum = 2
    structure = (('pcxh', CXH), ('rgb', BYTE_VARRAY), ('pcb', USHORT), ('cbMax', USHORT))


class EcDoRpcResponse(NDRCALL):
    structure = (('pcxh', CXH), ('rgb', BYTE_VARRAY), ('pcb', USHORT), ('ErrorCode', ULONG))


# Opnum 6
class EcDummyRpc(NDRCALL):
    opnum = 6
    structure = ()


class EcDummyRpcResponse(NDRCALL):
    structure = (('ErrorCode', ULONG),)


# Opnum 10
class EcDoConnectEx(NDRCALL):
    opnum = 10
    structure = (
        ('szUserDN', STR), ('ulFlags', ULONG), ('ulConMod', ULONG), ('cbLimit', ULONG),
        ('ulCpid', ULONG), ('ulLcidString', ULONG), ('ulLcidSort', ULONG),
        ('ulIcxrLink', ULONG), ('usFCanConvertCodePages', USHORT),
        ('rgwClientVersion0', USHORT), ('rgwClientVersion1', USHORT),
        ('rgwClientVersion2', USHORT), ('pulTimeStamp', ULONG),
        ('rgbAuxIn', BYTE_ARRAY), ('cbAuxIn', ULONG), ('pcbAuxOut', ULONG),
    )


class EcDoConnectExResponse(NDRCALL):
    structure = (
        ('pcxh', CXH), ('pcmsPollsMax', ULONG), ('pcRetry', ULONG), ('pcmsRetryDelay', ULONG),
        ('picxr', USHORT), ('szDNPrefix', LPSTR), ('szDisplayName', LPSTR),
        ('rgwServerVersion0', USHORT), ('rgwServerVersion1', USHORT),
        ('rgwServerVersion2', USHORT), ('rgwBestVersion0', USHORT),
        ('rgwBestVersion1', USHORT), ('rgwBestVersion2', USHORT),
        ('pulTimeStamp', ULONG), ('rgbAuxOut', BYTE_VARRAY), ('pcbAuxOut', ULONG),
        ('ErrorCode', ULONG),
    )


# Opnum 11
class EcDoRpcExt2(NDRCALL):
    opnum = 11
    structure = (
        ('pcxh', CXH), ('pulFlags', ULONG), ('rgbIn', BYTE_ARRAY), ('cbIn', ULONG),
        ('pcbOut', ULONG), ('rgbAuxIn', BYTE_ARRAY), ('cbAuxIn', ULONG), ('pcbAuxOut', ULONG),
    )


class EcDoRpcExt2Response(NDRCALL):
    structure = (
        ('pcxh', CXH), ('pulFlags', ULONG), ('rgbOut', BYTE_VARRAY), ('pcbOut', ULONG),
        ('rgbAuxOut', BYTE_VARRAY), ('pcbAuxOut', ULONG), ('pulTransTime', ULONG),
        ('ErrorCode', ULONG),
    )


# Opnum 14
class EcDoAsyncConnectEx(NDRCALL):
    opnum = 14
    structure = (('cxh', CXH),)


class EcDoAsyncConnectExResponse(NDRCALL):
    structure = (('pacxh', CXH), ('ErrorCode', ULONG))


# AsyncEMSMDB opnum 0
class EcDoAsyncWaitEx(NDRCALL):
    opnum = 0
    structure = (('acxh', CXH), ('ulFlagsIn', ULONG))


class EcDoAsyncWaitExResponse(NDRCALL):
    structure = (('pulFlagsOut', ULONG), ('ErrorCode', ULONG))


# RPC_HEADER_EXT flags (MS-OXCRPC 2.2.2.1)
RHE_COMPRESSED = 0x0001
RHE_XORMAGIC = 0x0002
RHE_LAST = 0x0004

# pulFlags of EcDoRpcExt2
EXT2_NO_COMPRESSION = 0x1
EXT2_NO_XOR_MAGIC = 0x2
EXT2_CHAIN = 0x4


_XOR_A5 = bytes(b ^ 0xA5 for b in range(256))


def xor_a5(data):
    return bytes(data).translate(_XOR_A5)
