#include "auth/groups.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/credstore.h"

bool mp_list_has(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list; n && *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        size_t w = strcspn(p, " ,\t");
        if (w == n && !strncasecmp(p, word, n))
            return true;
        p += w;
    }
    return false;
}

char *mp_trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = 0;
    return s;
}

int mp_groups_load(struct mp_groups *g, const char *path, char *why, size_t why_len)
{
    memset(g, 0, sizeof(*g));
    FILE *fp = mp_open_private_file(path, "groups file", why, why_len);
    if (!fp)
        return -1;
    char line[4096];
    int lineno = 0;
    while (fgets(line, sizeof(line), fp)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(fp)) {
            snprintf(why, why_len,
                     "%s:%d: line longer than %zu bytes; split the group over "
                     "several lines",
                     path, lineno, sizeof(line) - 2);
            goto fail;
        }
        char *p = mp_trim(line);
        if (!*p || *p == '#')
            continue;
        char *colon = strchr(p, ':');
        if (colon)
            *colon = 0;
        char *name = colon ? mp_trim(p) : p;
        if (!colon || !*name || strpbrk(name, " \t,")) {
            snprintf(why, why_len,
                     "%s:%d: not \"group: member, member\" (a group name without blanks, a "
                     "colon, then the members); fix the line",
                     path, lineno);
            goto fail;
        }
        struct mp_group_line *n = realloc(g->l, (g->n + 1) * sizeof(*n));
        if (!n)
            goto oom;
        g->l = n;
        n[g->n].group = strdup(name);
        n[g->n].members = strdup(mp_trim(colon + 1));
        g->n++;
        if (!n[g->n - 1].group || !n[g->n - 1].members)
            goto oom;
    }
    fclose(fp);
    return 0;
oom:
    snprintf(why, why_len, "out of memory reading %s", path);
fail:
    fclose(fp);
    mp_groups_free(g);
    return -1;
}

void mp_groups_free(struct mp_groups *g)
{
    for (size_t i = 0; i < g->n; i++) {
        free(g->l[i].group);
        free(g->l[i].members);
    }
    free(g->l);
    g->l = NULL;
    g->n = 0;
}

bool mp_groups_has(const struct mp_groups *g, const char *group, const char *const *names, size_t n)
{
    for (size_t i = 0; i < g->n; i++) {
        if (strcasecmp(g->l[i].group, group))
            continue;
        for (size_t k = 0; k < n; k++)
            if (names[k] && mp_list_has(g->l[i].members, names[k]))
                return true;
    }
    return false;
}
