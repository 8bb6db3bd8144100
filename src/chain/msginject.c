/* Modify verdicts of online uploads: ROPs injected into the request
 * before the completing RopSaveChangesMessage / RopSubmitMessage.
 * doc/internals/module-api.md, "Message events". */
#include "chain/msgevents.h"

bool mp_msgev_edits_supported(void)
{
    return false;
}

int mp_msgev_apply_edits(struct mp_call *call, struct mp_message_event *ev,
                         const struct mp_msgev_verdict *v)
{
    (void)call;
    (void)ev;
    (void)v;
    return 0;
}
