/* Named properties of the modules mapped by the proxy in each session
 * (msgnames.c; mp_module_map_name in module.h). */
#ifndef MP_CHAIN_MSGNAMES_H
#define MP_CHAIN_MSGNAMES_H
struct mp_call;

/* In the ROP stage's response step, before the online prefetch: 1 when a
 * side request was started (the step runs again after it), else 0. */
int mp_msgnames_map(struct mp_call *m);
void mp_msgnames_call_free(void *state);
#endif
