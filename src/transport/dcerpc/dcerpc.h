/* The DCE/RPC transport (ncacn_ip_tcp): listeners, client associations,
 * upstream associations.  Its inside is transport/dcerpc/internal.h. */
#ifndef MP_TRANSPORT_DCERPC_H
#define MP_TRANSPORT_DCERPC_H
#include <stdint.h>

#include "core/config.h"
#include "event/loop.h"

struct mp_relay;

/* Binds the listeners (epmapper and RPC ports on every listen address) and
 * resolves the upstream host.  Returns NULL after logging what failed. */
struct mp_relay *mp_relay_new(struct mp_loop *loop, const struct mp_config *cfg);
void mp_relay_free(struct mp_relay *r);
uint16_t mp_relay_rpc_port(const struct mp_relay *r);
/* The module chain the relay loaded (shared with the HTTP front). */
struct mp_modules *mp_relay_modules(struct mp_relay *r);
uint16_t mp_relay_epm_port(const struct mp_relay *r);
/* Stops accepting and closes every association (for shutdown). */
void mp_relay_shutdown(struct mp_relay *r);
/* Reload: stop accepting (the associations go on); how many are left. */
void mp_relay_stop_listening(struct mp_relay *r);
size_t mp_relay_live(const struct mp_relay *r);
#endif
