#include "rop/aux.h"

#include <string.h>

#include "rop/ropjson.h"
#include "rop/wire.h"

int mp_aux_parse(const uint8_t *content, size_t len, struct mp_aux_block *blocks, size_t max,
                 size_t *n)
{
    size_t off = 0;
    *n = 0;
    while (off < len) {
        if (len - off < MP_AUX_HDRLEN)
            return -1;
        uint16_t size = (uint16_t)(content[off] | (content[off + 1] << 8));
        if (size < MP_AUX_HDRLEN || size > len - off)
            return -1;
        if (*n == max)
            return -1;
        struct mp_aux_block *b = &blocks[(*n)++];
        b->size = size;
        b->version = content[off + 2];
        b->type = content[off + 3];
        b->body = content + off + MP_AUX_HDRLEN;
        b->body_len = size - MP_AUX_HDRLEN;
        b->off = off;
        off += size;
    }
    return 0;
}

/* Field layouts: a string of codes, one per field: 'b' u8, 'w' u16,
 * 'd' u32, 'q' u64, 'g' GUID, '3' 3 reserved bytes, 'o' u16 offset of a
 * UTF-16 string from the AUX_HEADER, 'a' u16 offset of an 8-bit string,
 * 'p' 132 reserved bytes. Names are separated by commas. */
struct aux_layout {
    uint8_t type, version; /* version 0 = any */
    const char *name, *codes, *fields;
};

#define DEFGC                                                                                      \
    "wwddb3", "ServerID,SessionID,TimeSinceRequest,TimeToCompleteRequest,RequestOperation,"        \
              "Reserved"
#define MDB1                                                                                       \
    "wwwwdd", "ClientID,ServerID,SessionID,RequestID,TimeSinceRequest,TimeToCompleteRequest"
#define MDB2                                                                                       \
    "wwwwwwdd", "ProcessID,ClientID,ServerID,SessionID,RequestID,Reserved,TimeSinceRequest,"       \
                "TimeToCompleteRequest"
#define GC1                                                                                        \
    "wwwwddb3", "ClientID,ServerID,SessionID,Reserved1,TimeSinceRequest,TimeToCompleteRequest,"    \
                "RequestOperation,Reserved2"
#define GC2                                                                                        \
    "wwwwwddb3", "ProcessID,ClientID,ServerID,SessionID,Reserved1,TimeSinceRequest,"               \
                 "TimeToCompleteRequest,RequestOperation,Reserved2"
#define FAIL1                                                                                      \
    "wwwwdddb3", "ClientID,ServerID,SessionID,RequestID,TimeSinceRequest,TimeToFailRequest,"       \
                 "ResultCode,RequestOperation,Reserved"
#define FAIL2                                                                                      \
    "wwwwwwdddb3", "ProcessID,ClientID,ServerID,SessionID,RequestID,Reserved1,TimeSinceRequest,"   \
                   "TimeToFailRequest,ResultCode,RequestOperation,Reserved2"
#define DEFMDB "ddww", "TimeSinceRequest,TimeToCompleteRequest,RequestID,Reserved"

static const struct aux_layout layouts[] = {
    {0x01, 0, "AUX_PERF_REQUESTID", "ww", "SessionID,RequestID"},
    {0x02, 1, "AUX_PERF_CLIENTINFO", "dwoowwwwowwww",
     "AdapterSpeed,ClientID,MachineNameOffset,UserNameOffset,ClientIPSize,ClientIPOffset,"
     "ClientIPMaskSize,ClientIPMaskOffset,AdapterNameOffset,MacAddressSize,MacAddressOffset,"
     "ClientMode,Reserved"},
    {0x03, 1, "AUX_PERF_SERVERINFO", "wwao", "ServerID,ServerType,ServerDNOffset,ServerNameOffset"},
    {0x04, 1, "AUX_PERF_SESSIONINFO", "wwg", "SessionID,Reserved,SessionGuid"},
    {0x04, 2, "AUX_PERF_SESSIONINFO_V2", "wwgd", "SessionID,Reserved,SessionGuid,ConnectionID"},
    {0x05, 0, "AUX_PERF_DEFMDB_SUCCESS", DEFMDB},
    {0x06, 0, "AUX_PERF_DEFGC_SUCCESS", DEFGC},
    {0x07, 1, "AUX_PERF_MDB_SUCCESS", MDB1},
    {0x07, 2, "AUX_PERF_MDB_SUCCESS_V2", MDB2},
    {0x08, 1, "AUX_PERF_GC_SUCCESS", GC1},
    {0x08, 2, "AUX_PERF_GC_SUCCESS_V2", GC2},
    {0x09, 1, "AUX_PERF_FAILURE", FAIL1},
    {0x09, 2, "AUX_PERF_FAILURE_V2", FAIL2},
    {0x0A, 0, "AUX_CLIENT_CONTROL", "dd", "EnableFlags,ExpiryTime"},
    {0x0B, 1, "AUX_PERF_PROCESSINFO", "wwgow",
     "ProcessID,Reserved1,ProcessGuid,ProcessNameOffset,Reserved2"},
    {0x0C, 0, "AUX_PERF_BG_DEFMDB_SUCCESS", DEFMDB},
    {0x0D, 0, "AUX_PERF_BG_DEFGC_SUCCESS", DEFGC},
    {0x0E, 1, "AUX_PERF_BG_MDB_SUCCESS", MDB1},
    {0x0E, 2, "AUX_PERF_BG_MDB_SUCCESS_V2", MDB2},
    {0x0F, 1, "AUX_PERF_BG_GC_SUCCESS", GC1},
    {0x0F, 2, "AUX_PERF_BG_GC_SUCCESS_V2", GC2},
    {0x10, 1, "AUX_PERF_BG_FAILURE", FAIL1},
    {0x10, 2, "AUX_PERF_BG_FAILURE_V2", FAIL2},
    {0x11, 0, "AUX_PERF_FG_DEFMDB_SUCCESS", DEFMDB},
    {0x12, 0, "AUX_PERF_FG_DEFGC_SUCCESS", DEFGC},
    {0x13, 1, "AUX_PERF_FG_MDB_SUCCESS", MDB1},
    {0x13, 2, "AUX_PERF_FG_MDB_SUCCESS_V2", MDB2},
    {0x14, 1, "AUX_PERF_FG_GC_SUCCESS", GC1},
    {0x14, 2, "AUX_PERF_FG_GC_SUCCESS_V2", GC2},
    {0x15, 1, "AUX_PERF_FG_FAILURE", FAIL1},
    {0x15, 2, "AUX_PERF_FG_FAILURE_V2", FAIL2},
    {0x16, 0, "AUX_OSVERSIONINFO", "ddddpwwd",
     "OSVersionInfoSize,MajorVersion,MinorVersion,BuildNumber,Reserved1,ServicePackMajor,"
     "ServicePackMinor,Reserved2"},
    {0x17, 0, "AUX_EXORGINFO", "d", "OrgFlags"},
    {0x18, 0, "AUX_PERF_ACCOUNTINFO", "wwg", "ClientID,Reserved,Account"},
    {0x19, 0, "AUX_ENDPOINT_CAPABILITIES", "d", "EndpointCapabilityFlags"},
    {0x1A, 0, "AUX_CLIENT_CONNECTION_INFO", "gwwdd",
     "ConnectionGUID,OffsetConnectionContextInfo,Reserved,ConnectionAttempts,ConnectionFlags"},
    {0x1B, 0, "AUX_SERVER_SESSION_INFO", "w", "OffsetServerSessionContextInfo"},
    {0x1C, 0, "AUX_PROTOCOL_DEVICE_IDENTIFICATION", "ooooo",
     "DeviceManufacturerOffset,DeviceModelOffset,DeviceSerialNumberOffset,DeviceVersionOffset,"
     "DeviceFirmwareVersionOffset"},
};

static const struct aux_layout *find_layout(uint8_t version, uint8_t type)
{
    const struct aux_layout *any = NULL;
    for (size_t i = 0; i < sizeof layouts / sizeof layouts[0]; i++) {
        if (layouts[i].type != type)
            continue;
        if (layouts[i].version == version)
            return &layouts[i];
        if (layouts[i].version == 0)
            any = &layouts[i];
    }
    return any;
}

const char *mp_aux_type_name(uint8_t version, uint8_t type)
{
    const struct aux_layout *l = find_layout(version, type);
    return l ? l->name : NULL;
}

/* Prints a string at a header-relative offset, bounded by the block. */
static void print_off_str(struct mp_json *j, const struct mp_aux_block *b, uint16_t off, bool wide)
{
    if (off < MP_AUX_HDRLEN || off >= b->size) {
        mp_rj_null(j);
        return;
    }
    const uint8_t *s = b->body + (off - MP_AUX_HDRLEN);
    size_t left = b->size - off, n = 0;
    if (wide) {
        while (n + 1 < left && (s[n] || s[n + 1]))
            n += 2;
        mp_rj_str16(j, s, n);
    } else {
        while (n < left && s[n])
            n++;
        mp_rj_str8(j, s, n);
    }
}

static void print_block(struct mp_json *j, const struct mp_aux_block *b)
{
    const struct aux_layout *l = find_layout(b->version, b->type);
    mp_rj_obj(j);
    mp_rj_key(j, "Type");
    if (l)
        mp_rj_cstr(j, l->name);
    else
        mp_rj_hex(j, b->type, 2);
    mp_rj_key(j, "Version");
    mp_rj_u64(j, b->version);
    mp_rj_key(j, "Size");
    mp_rj_u64(j, b->size);
    struct mp_rcur c;
    mp_rcur_init(&c, b->body, b->body_len);
    if (l) {
        const char *f = l->fields;
        char name[64];
        for (const char *k = l->codes; *k && !c.err; k++) {
            size_t n = strcspn(f, ",");
            if (n >= sizeof name)
                n = sizeof name - 1;
            memcpy(name, f, n);
            name[n] = 0;
            f += f[n] ? n + 1 : n;
            /* check room first so that a short block prints what it has */
            size_t need = *k == 'b'                             ? 1
                          : *k == 'w' || *k == 'o' || *k == 'a' ? 2
                          : *k == 'd'                           ? 4
                          : *k == 'q'                           ? 8
                          : *k == 'g'                           ? 16
                          : *k == '3'                           ? 3
                                                                : 132;
            if (mp_rcur_left(&c) < need) {
                c.err = true;
                break;
            }
            mp_rj_key(j, name);
            switch (*k) {
            case 'b':
                mp_rj_u64(j, mp_rcur_u8(&c));
                break;
            case 'w':
                mp_rj_u64(j, mp_rcur_u16(&c));
                break;
            case 'd':
                mp_rj_u64(j, mp_rcur_u32(&c));
                break;
            case 'q':
                mp_rj_u64(j, mp_rcur_u64(&c));
                break;
            case 'g':
                mp_rj_guid(j, mp_rcur_bytes(&c, 16));
                break;
            case '3':
            case 'p':
                mp_rj_bin(j, mp_rcur_bytes(&c, need), need, 0);
                break;
            case 'o':
            case 'a': {
                uint16_t o = mp_rcur_u16(&c);
                mp_rj_u64(j, o);
                char sname[80];
                size_t nl = strlen(name);
                if (nl > 6 && strcmp(name + nl - 6, "Offset") == 0)
                    nl -= 6;
                memcpy(sname, name, nl);
                sname[nl] = 0;
                mp_rj_key(j, sname);
                print_off_str(j, b, o, *k == 'o');
                break;
            }
            }
        }
    }
    if (!l || c.err || c.off < c.len) {
        mp_rj_key(j, l && !c.err ? "Data" : "Raw");
        size_t from = l && !c.err ? c.off : 0;
        mp_rj_bin(j, b->body + from, b->body_len - from, 0);
    }
    mp_rj_obj_end(j);
}

void mp_aux_print(struct mp_json *j, const uint8_t *content, size_t len)
{
    struct mp_aux_block blocks[64];
    size_t n = 0;
    int st = mp_aux_parse(content, len, blocks, 64, &n);
    mp_rj_arr(j);
    for (size_t i = 0; i < n; i++)
        print_block(j, &blocks[i]);
    if (st) {
        size_t off = n ? blocks[n - 1].off + blocks[n - 1].size : 0;
        mp_rj_obj(j);
        mp_rj_key(j, "Undecodable");
        mp_rj_bin(j, content + off, len - off, 0);
        mp_rj_obj_end(j);
    }
    mp_rj_arr_end(j);
}
