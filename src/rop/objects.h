/* Server object tracking (MS-OXCROPS 1.3.1): for one EMSMDB session (one
 * context handle), what each server object handle is.  Filled by
 * src/modules/ropcall.c from the ROPs that create (OutputHandleIndex), change
 * (RopSetColumns, RopSaveChangesMessage, ...) and release (RopRelease) them;
 * read by modules through mp_call_rop_object() and by the ROP decoder
 * (table columns, logon types).  See doc/internals/rop.md. */
#ifndef MP_ROP_OBJECTS_H
#define MP_ROP_OBJECTS_H
#include <stddef.h>
#include <stdint.h>

#include "mapiproxy/module.h"

#define MP_OBJ_NONE 0xFFFFFFFFu
/* A session that opens more objects than this stops being tracked further
 * (Exchange's own limit per session is in the hundreds or low thousands). */
#define MP_OBJTAB_MAX 65536u

struct mp_objtab;

/* A table is reference counted: the session holds one reference per EMSMDB
 * context, and every ROP call on that context holds one while it runs, so
 * that an EcDoDisconnect (from any connection of the session) cannot free
 * the table under a call that is upstream or held PENDING by a module.
 * mp_objtab_new returns a table with one reference; mp_objtab_unref drops
 * one and frees the table with the last.  NULL is accepted. */
struct mp_objtab *mp_objtab_new(void);
struct mp_objtab *mp_objtab_ref(struct mp_objtab *t);
void mp_objtab_unref(struct mp_objtab *t);
/* The object behind handle, or NULL.  The pointer is the table's: it goes
 * with the next put, del or set_columns on that handle.  Callers that keep
 * an object for longer (a call's ROPs) copy it. */
const struct mp_object *mp_objtab_get(const struct mp_objtab *t, uint32_t handle);
/* Records o (copied; o->handle is the key; columns are not copied: use
 * mp_objtab_set_columns).  Replaces an older object on the same handle.
 * 0, or -1 (out of memory, or over MP_OBJTAB_MAX). */
int mp_objtab_put(struct mp_objtab *t, const struct mp_object *o);
void mp_objtab_del(struct mp_objtab *t, uint32_t handle);
/* Copies the columns onto the table object at handle.  0 or -1. */
int mp_objtab_set_columns(struct mp_objtab *t, uint32_t handle, const uint32_t *tags, size_t n);
/* The message id of a saved message (RopSaveChangesMessage). */
void mp_objtab_set_message_id(struct mp_objtab *t, uint32_t handle, uint64_t mid);
size_t mp_objtab_count(const struct mp_objtab *t);
/* Logons: 1 private mailbox, 0 public folders, -1 unknown. */
void mp_objtab_set_logon(struct mp_objtab *t, uint8_t logon_id, int private_mailbox);
int mp_objtab_logon(const struct mp_objtab *t, uint8_t logon_id);
/* Lifetime events (src/chain/objevents.c): fn(ctx, o, ev, ext) when an
 * object enters the table (MP_OBJECT_CREATED), leaves it (RELEASED: del, or
 * a put on its handle) or the table ends (CONTEXT_GONE).  *ext is a pointer
 * the observer keeps per object; on RELEASED and CONTEXT_GONE it frees
 * what it holds.  context_id goes into every object put from then on. */
typedef void (*mp_objtab_obs_fn)(void *ctx, const struct mp_object *o, int ev, void **ext);
void mp_objtab_observe(struct mp_objtab *t, uint32_t context_id, mp_objtab_obs_fn fn, void *ctx);
uint32_t mp_objtab_context_id(const struct mp_objtab *t);
/* The observer's pointer of the object at handle, NULL if none. */
void **mp_objtab_ext(struct mp_objtab *t, uint32_t handle);
/* The type of object a ROP with an OutputHandleIndex creates. */
enum mp_object_type mp_object_type_for_rop(uint8_t rop_id);
#endif
