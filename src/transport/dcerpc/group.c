/* Association groups: the modules' session on DCE/RPC.  The proxy hands
 * clients its own group ids and maps each to the upstream's. */
#include "transport/dcerpc/internal.h"

#include <errno.h>
#include <sys/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "core/workers.h"
#include "ops/metrics.h"

static void group_unlink(struct mp_session *g)
{
    struct mp_relay *r = g->owner;
    struct mp_session **pp = &r->groups[g->id % N_GROUP_BUCKETS];
    while (*pp && *pp != g)
        pp = &(*pp)->next;
    if (*pp)
        *pp = g->next;
}

void dce_group_unref(struct mp_relay *r, struct mp_session *g)
{
    (void)r;
    mp_session_unref(g);
}

static struct mp_session *group_find(struct mp_relay *r, uint32_t id)
{
    for (struct mp_session *g = r->groups[id % N_GROUP_BUCKETS]; g; g = g->next)
        if (g->id == id)
            return g;
    return NULL;
}

/* An association group id no group has: from the CSPRNG, so ids say
 * nothing about each other (issue 11: sequential ids could be guessed). */
uint32_t dce_group_fresh_id(struct mp_relay *r)
{
    uint32_t id = 0;
    while (!id || group_find(r, id)) {
        if (getrandom(&id, sizeof(id), 0) != sizeof(id) &&
            mp_ntlm_random((uint8_t *)&id, sizeof(id))) {
            mp_error("no random bytes for an association group id");
            abort(); /* never fall back to guessable ids */
        }
        id = mp_worker_group_id(id); /* the low bits name this worker (workers.md) */
    }
    return id;
}

/* A new association group owned by ident, the session modules keep their
 * data in.  Its id is want when that is free, else a fresh one. */
static struct mp_session *group_new(struct mp_relay *r, const char *ident, uint32_t want)
{
    struct mp_session *g = mp_session_new(&r->mods);
    if (!g)
        return NULL;
    g->id = want && !group_find(r, want) ? want : dce_group_fresh_id(r);
    snprintf(g->ident, sizeof(g->ident), "%s", ident);
    g->owner = r;
    g->on_free = group_unlink;
    g->next = r->groups[g->id % N_GROUP_BUCKETS];
    r->groups[g->id % N_GROUP_BUCKETS] = g;
    return g;
}

/* Puts the association in a group: the one named (id) when it exists and
 * belongs to ident, else a new one, exactly as for a bind naming none.  In
 * terminated mode the client was told an id before it authenticated
 * (shown_group): the new group takes that id (new_id) when it is free.
 * Returns 0, or -1 after closing (out of memory). */
int dce_join_group(struct assoc *a, uint32_t id, const char *ident, uint32_t new_id)
{
    struct mp_session *g = id ? group_find(a->r, id) : NULL;
    if (g && strcasecmp(g->ident, ident)) {
        mp_warn("conn %s: bind names association group 0x%08x of another %s; given a new group",
                a->peer, id, strncmp(ident, "user:", 5) ? "address" : "user");
        g = NULL;
    } else if (id && !g) {
        mp_info("conn %s: bind names association group 0x%08x, which does not exist; given a new "
                "group",
                a->peer, id);
    }
    if (g) {
        mp_session_ref(g);
        a->group = g;
    } else if (!(a->group = group_new(a->r, ident, new_id))) {
        dce_assoc_close(a, "out of memory");
        return -1;
    }
    if (!a->shown_group)
        a->shown_group = a->group->id;
    return 0;
}

/* Transparent mode: the peer's address is all the proxy knows at the bind. */
void dce_addr_ident(const struct assoc *a, char *out, size_t n)
{
    const char *colon = strrchr(a->peer, ':');
    snprintf(out, n, "addr:%.*s", (int)(colon ? colon - a->peer : (long)strlen(a->peer)), a->peer);
}
