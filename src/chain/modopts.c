/* Module options against the module's schema (struct mp_module.options)
 * and its check_option hook: every NAME:key line of the configuration is a
 * known key with a value of the right type, else an error at the line that
 * set it, with a did-you-mean like the proxy's own options (core/config.c).
 * Run by --check (core/check.c) and by the loader before init. */
#include <stdio.h>
#include <string.h>

#include "chain/services.h"
#include "core/config.h"

#define MAX_KEYS 128

static const struct mp_module_option_spec *spec_of(const struct mp_module *m, const char *key)
{
    for (const struct mp_module_option_spec *o = m->options; o->key; o++)
        if (!strcasecmp(o->key, key))
            return o;
    return NULL;
}

/* Why value is not of the spec's type ("" when it is). */
static void type_check(const struct mp_module_option_spec *o, const char *value, char *why,
                       size_t wl)
{
    why[0] = 0;
    switch (o->type) {
    case MP_OPT_BOOL: {
        bool b;
        if (!mp_config_parse_bool(value, &b))
            snprintf(why, wl, "is not yes or no");
        break;
    }
    case MP_OPT_INT: {
        long x;
        if (!mp_config_parse_int(value, &x))
            snprintf(why, wl, "is not a number");
        else if ((o->min || o->max) && (x < o->min || x > o->max))
            snprintf(why, wl, "is out of range; give %ld to %ld", o->min, o->max);
        break;
    }
    case MP_OPT_ENUM: {
        size_t n = 0, k = 0;
        char list[300] = "";
        for (const char *const *c = o->choices; c && *c; c++, n++) {
            if (!strcasecmp(*c, value))
                return;
            int w = snprintf(list + k, sizeof list - k, "%s%s", n ? ", " : "", *c);
            if (w > 0 && (size_t)w < sizeof list - k)
                k += (size_t)w;
        }
        const char *near = o->choices ? mp_config_closest(value, o->choices, n) : NULL;
        if (near)
            snprintf(why, wl, "is not one of %s; did you mean %s?", list, near);
        else
            snprintf(why, wl, "is not one of %s", list);
        break;
    }
    default:
        break;
    }
}

int mp_modopts_check(const struct mp_config *cfg, const char *name, const struct mp_module *m,
                     mp_modopt_report report, void *ctx)
{
    if (!m->options && !m->check_option)
        return 0;
    const char *keys[MAX_KEYS];
    size_t nk = 0;
    for (const struct mp_module_option_spec *o = m->options; o && o->key && nk < MAX_KEYS; o++)
        keys[nk++] = o->key;
    size_t plen = strlen(name);
    int errs = 0;
    for (size_t i = 0; i < cfg->n_entries; i++) {
        const struct mp_config_entry *e = &cfg->entries[i];
        if (strncasecmp(e->key, name, plen) || e->key[plen] != ':')
            continue;
        const char *key = e->key + plen + 1;
        char msg[700], why[400];
        why[0] = 0;
        const struct mp_module_option_spec *o = m->options ? spec_of(m, key) : NULL;
        if (m->options && !o) {
            const char *near = mp_config_closest(key, keys, nk);
            if (near)
                snprintf(msg, sizeof msg, "unknown option \"%.80s:%.80s\"; did you mean \"%s:%s\"?",
                         name, key, name, near);
            else
                snprintf(msg, sizeof msg,
                         "unknown option \"%.80s:%.80s\"; module %s reads no such option (see "
                         "its documentation)",
                         name, key, name);
            report(ctx, e->file, e->line, msg);
            errs++;
            continue;
        }
        if (o)
            type_check(o, e->value, why, sizeof why);
        if (!why[0] && m->check_option && m->check_option(key, e->value, why, sizeof why) &&
            !why[0])
            snprintf(why, sizeof why, "is refused by module %s", name);
        if (why[0]) {
            /* the value is the operator's own text, but keep it short */
            snprintf(msg, sizeof msg, "%.80s:%.80s = \"%.60s\" %s", name, key, e->value, why);
            report(ctx, e->file, e->line, msg);
            errs++;
        }
    }
    return errs;
}
