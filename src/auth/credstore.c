#include "auth/credstore.h"

#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

FILE *mp_open_private_file(const char *path, const char *what, char *why, size_t why_len)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        snprintf(why, why_len, "cannot open %s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(fp), &st) < 0) {
        snprintf(why, why_len, "%s: %s", path, strerror(errno));
        fclose(fp);
        return NULL;
    }
    if (st.st_mode & 077) {
        snprintf(why, why_len,
                 "%s is readable by group or others (mode %03o); it holds secrets: chmod 600 it",
                 path, (unsigned)(st.st_mode & 0777));
        fclose(fp);
        return NULL;
    }
    return fp;
}

static int hexval(int c)
{
    return isdigit(c)               ? c - '0'
           : (c >= 'a' && c <= 'f') ? c - 'a' + 10
           : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                    : -1;
}

int mp_credstore_load(struct mp_credstore *cs, const char *path, char *why, size_t why_len)
{
    memset(cs, 0, sizeof(*cs));
    FILE *fp = mp_open_private_file(path, "credentials file", why, why_len);
    if (!fp)
        return -1;
    char line[512];
    int lineno = 0;
    while (fgets(line, sizeof(line), fp)) {
        lineno++;
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        if (!*p || *p == '#')
            continue;
        p[strcspn(p, "\r\n")] = 0;
        char *f[3] = {p, NULL, NULL};
        int nf = 1;
        for (char *q = p; *q && nf < 3; q++)
            if (*q == ':') {
                *q = 0;
                f[nf++] = q + 1;
            }
        const char *user = f[0], *domain = nf == 3 ? f[1] : "", *hash = f[nf - 1];
        uint8_t h[16];
        bool ok =
            nf >= 2 && *user && strlen(hash) == 32 && strlen(user) < 128 && strlen(domain) < 128;
        for (int i = 0; ok && i < 16; i++) {
            int hi = hexval(hash[2 * i]), lo = hexval(hash[2 * i + 1]);
            ok = hi >= 0 && lo >= 0;
            h[i] = (uint8_t)(hi << 4 | lo);
        }
        if (!ok) {
            snprintf(why, why_len,
                     "%s:%d: not \"user:domain:NTHASH\" with a 32-digit hex NT hash; fix the line",
                     path, lineno);
            fclose(fp);
            mp_credstore_free(cs);
            return -1;
        }
        struct mp_cred *n = realloc(cs->c, (cs->n + 1) * sizeof(*n));
        if (!n) {
            snprintf(why, why_len, "out of memory reading %s", path);
            fclose(fp);
            mp_credstore_free(cs);
            return -1;
        }
        cs->c = n;
        memcpy(n[cs->n].user, user, strlen(user) + 1); /* lengths checked above */
        memcpy(n[cs->n].domain, domain, strlen(domain) + 1);
        memcpy(n[cs->n].nt_hash, h, 16);
        cs->n++;
    }
    fclose(fp);
    return 0;
}

void mp_credstore_free(struct mp_credstore *cs)
{
    if (cs->c) {
        memset(cs->c, 0, cs->n * sizeof(*cs->c));
        free(cs->c);
    }
    cs->c = NULL;
    cs->n = 0;
}

int mp_credstore_lookup(void *arg, const char *user, const char *domain, uint8_t nt_hash[16])
{
    const struct mp_credstore *cs = arg;
    for (size_t i = 0; i < cs->n; i++)
        if (!strcasecmp(cs->c[i].user, user) &&
            (!cs->c[i].domain[0] || !strcasecmp(cs->c[i].domain, domain ? domain : ""))) {
            memcpy(nt_hash, cs->c[i].nt_hash, 16);
            return 0;
        }
    return -1;
}

int mp_read_secret_file(const char *path, char *out, size_t cap, char *why, size_t why_len)
{
    FILE *fp = mp_open_private_file(path, "password file", why, why_len);
    if (!fp)
        return -1;
    if (!fgets(out, (int)cap, fp)) {
        snprintf(why, why_len, "password file %s is empty; put the password on its first line",
                 path);
        fclose(fp);
        return -1;
    }
    fclose(fp);
    out[strcspn(out, "\r\n")] = 0;
    return 0;
}
