#include "dcerpc/ifaces.h"

#include <string.h>

static const char *const emsmdb_ops[] = {"EcDoConnect",
                                         "EcDoDisconnect",
                                         "EcDoRpc",
                                         "EcGetMoreRpc",
                                         "EcRRegisterPushNotification",
                                         "EcRUnregisterPushNotification",
                                         "EcDummyRpc",
                                         "EcRGetDCName",
                                         "EcRNetGetDCName",
                                         "EcDoRpcExt",
                                         "EcDoConnectEx",
                                         "EcDoRpcExt2",
                                         "EcUnknown12",
                                         "EcUnknown13",
                                         "EcDoAsyncConnectEx"};
static const char *const async_ops[] = {"EcDoAsyncWaitEx"};
static const char *const nspi_ops[] = {"NspiBind",
                                       "NspiUnbind",
                                       "NspiUpdateStat",
                                       "NspiQueryRows",
                                       "NspiSeekEntries",
                                       "NspiGetMatches",
                                       "NspiResortRestriction",
                                       "NspiDNToMId",
                                       "NspiGetPropList",
                                       "NspiGetProps",
                                       "NspiCompareMIds",
                                       "NspiModProps",
                                       "NspiGetSpecialTable",
                                       "NspiGetTemplateInfo",
                                       "NspiModLinkAtt",
                                       "NspiDeleteEntries",
                                       "NspiQueryColumns",
                                       "NspiGetNamesFromIDs",
                                       "NspiGetIDsFromNames",
                                       "NspiResolveNames",
                                       "NspiResolveNamesW"};
static const char *const rfr_ops[] = {"RfrGetNewDSA", "RfrGetFQDNFromServerDN"};
static const char *const epm_ops[] = {
    "ept_insert",     "ept_delete",     "ept_lookup", "ept_map", "ept_lookup_handle_free",
    "ept_inq_object", "ept_mgmt_delete"};

#define OPS(a) a, (uint16_t)(sizeof(a) / sizeof(a[0]))
static const struct mp_iface_info known[] = {
    {"exchange_emsmdb",
     {{0x00, 0xdb, 0xf1, 0xa4, 0x47, 0xca, 0x67, 0x10, 0xb3, 0x1f, 0x00, 0xdd, 0x01, 0x06, 0x62,
       0xda},
      0,
      81},
     OPS(emsmdb_ops)},
    {"exchange_async_emsmdb",
     {{0x4a, 0x57, 0x61, 0x52, 0x72, 0x45, 0x6e, 0x20, 0xb2, 0x68, 0x6b, 0x19, 0x92, 0x13, 0xb4,
       0xe4},
      0,
      1},
     OPS(async_ops)},
    {"exchange_nsp",
     {{0x18, 0x5a, 0xcc, 0xf5, 0x64, 0x42, 0x1a, 0x10, 0x8c, 0x59, 0x08, 0x00, 0x2b, 0x2f, 0x84,
       0x26},
      56,
      0},
     OPS(nspi_ops)},
    {"exchange_ds_rfr",
     {{0xe0, 0xf5, 0x44, 0x15, 0x3c, 0x61, 0xd1, 0x11, 0x93, 0xdf, 0x00, 0xc0, 0x4f, 0xd7, 0xbd,
       0x09},
      1,
      0},
     OPS(rfr_ops)},
    {"epmapper",
     {{0x08, 0x83, 0xaf, 0xe1, 0x1f, 0x5d, 0xc9, 0x11, 0x91, 0xa4, 0x08, 0x00, 0x2b, 0x14, 0xa0,
       0xfa},
      3,
      0},
     OPS(epm_ops)},
};

const struct mp_iface_info *mp_iface_by_uuid(const uint8_t uuid[16])
{
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (!memcmp(known[i].syntax.uuid, uuid, 16))
            return &known[i];
    return NULL;
}

const char *mp_iface_op_name(const struct mp_iface_info *info, uint16_t opnum)
{
    return info && opnum < info->n_ops ? info->ops[opnum] : NULL;
}
