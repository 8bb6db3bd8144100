/* The client-leg user database: a file of NT hashes, never plain passwords.
 *
 *   # user:domain:NTHASH   (domain may be empty: any domain matches)
 *   alice:LAB:8846f7eaee8fb117ad06bdd830b7586c
 *
 * The file must not be readable by group or others (chmod 600). */
#ifndef MP_CREDSTORE_H
#define MP_CREDSTORE_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct mp_cred {
    char user[128], domain[128];
    uint8_t nt_hash[16];
};

struct mp_credstore {
    struct mp_cred *c;
    size_t n;
};

/* 0, or -1 with why (a message naming the file, the line and the fix). */
int mp_credstore_load(struct mp_credstore *cs, const char *path, char *why, size_t why_len);
void mp_credstore_free(struct mp_credstore *cs);
/* mp_ntlm_lookup_fn: user and domain compared case-insensitively. */
int mp_credstore_lookup(void *cs, const char *user, const char *domain, uint8_t nt_hash[16]);
/* Opens a file that holds secrets or access rules (what: "credentials file",
 * ...) for reading, under the permission rule of these files: not readable by
 * group or others.  The stream, or NULL with why. */
FILE *mp_open_private_file(const char *path, const char *what, char *why, size_t why_len);
/* Reads the first line of a password file (same permission rule). */
int mp_read_secret_file(const char *path, char *out, size_t cap, char *why, size_t why_len);
#endif
