/* The ROP stage: a stage provider (chain.h) that decodes EcDoRpcExt2's /
 * EcDoRpc's ROP buffers for the rop_request / rop_response hooks, applies
 * the modules' drops, answers and edits, re-encodes what goes upstream and
 * what the client gets, and keeps the session's server object tables.
 * builtins.c registers it; the runner reaches it only through the provider
 * table.  See doc/internals/rop.md ("ROPs in the module chain"). */
#ifndef MP_CHAIN_ROPSTAGE_H
#define MP_CHAIN_ROPSTAGE_H
#include "chain/chain.h"

extern const struct mp_stage_provider mp_rop_stage;
#endif
