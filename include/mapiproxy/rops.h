/* mapiproxy module API: the decoded ROP structures that mp_call_rop()
 * returns (struct mp_rop_req_NAME, struct mp_rop_rsp_NAME, MP_ROP_NAME ids),
 * generated from idl/rops/rops.idl.  Strings and blobs point into the
 * call's buffers; to change one, point it at memory from mp_call_alloc()
 * and set its count field, then call mp_call_rop_changed().
 *
 * In the source tree, build a module that includes this header with both
 * -I<mapiproxy>/include and -I<mapiproxy>/src (the generated header lives
 * with the codec).  `make install` copies the codec headers it needs under
 * PREFIX/include/mapiproxy/ with relative includes, so an installed
 * mapiproxy needs only -IPREFIX/include. */
#ifndef MAPIPROXY_ROPS_H
#define MAPIPROXY_ROPS_H
#include "rop/gen/rop_gen.h"
#endif
