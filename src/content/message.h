/* The message model (doc/internals/content.md): one MAPI message as it
 * crossed the proxy, whatever carried it (online-mode ROPs now, FastTransfer
 * streams through the same setters).
 *
 *   message = tagged properties (named ones: ids 0x8000..0xFFFE, with their
 *             PropertyName when the session showed it), recipients (each a
 *             property list), attachments (property list; data in
 *             PidTagAttachDataBinary; an embedded message, to any depth;
 *             by-reference attachments keep their path properties).
 *
 * String and binary values are blobs: in memory up to limits->spill_at
 * bytes, then in a private temporary file (O_TMPFILE, or mkstemp + unlink,
 * mode 0600) in limits->tmpdir.  A message keeps count of its content bytes;
 * past limits->max_message the caller drops it (mp_msg_over_limit). */
#ifndef MP_CONTENT_MESSAGE_H
#define MP_CONTENT_MESSAGE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

struct mp_content_limits {
    size_t spill_at;      /* a value past this many bytes goes to a file (0: never) */
    uint64_t max_message; /* content bytes of one message, embedded ones included */
    const char *tmpdir;   /* where spilled values go (NULL: $TMPDIR or /tmp) */
    size_t fx_hold;       /* FastTransfer downloads: bytes held per message (0: no holding) */
};

/* A byte string, in memory or spilled to an unlinked file. */
struct mp_blob {
    struct mp_buf mem;
    int fd; /* -1 while in memory */
    uint64_t len;
};
void mp_blob_init(struct mp_blob *b);
void mp_blob_free(struct mp_blob *b);
/* 0, or -1 (out of memory / the temporary file failed: errno set). */
int mp_blob_append(struct mp_blob *b, const void *p, size_t n, const struct mp_content_limits *l);
/* Reads up to n bytes at off; returns the count (0 at the end), -1 on error. */
long mp_blob_read(const struct mp_blob *b, uint64_t off, void *dst, size_t n);
/* The whole value in memory (a copy when spilled), for values known small;
 * NUL-terminated in out.  0 or -1. */
int mp_blob_copy(const struct mp_blob *b, struct mp_buf *out);
void mp_blob_move(struct mp_blob *dst, struct mp_blob *src); /* dst freed first */
/* The private file: its descriptor for (fd, 0, len), -1 when in memory. */
static inline int mp_blob_fd(const struct mp_blob *b)
{
    return b->fd;
}

/* A private temporary file in dir (NULL: $TMPDIR or /tmp): O_TMPFILE, or
 * mkstemp + unlink; mode 0600.  Its descriptor, or -1 (errno set). */
int mp_private_tmpfile(const char *dir);

/* A named property's name (MS-OXCDATA 2.6.1). */
struct mp_propname {
    uint8_t guid[16]; /* as on the wire (little-endian GUID) */
    bool is_name;
    uint32_t lid;
    char *name; /* UTF-8, is_name only */
};

/* An ASCII view of a UTF-16LE property name (n bytes; stops at a 00 00;
 * other than ASCII becomes '?'), malloc'ed; NULL on no memory. */
char *mp_propname_ascii(const uint8_t *utf16, size_t n);

struct mp_prop {
    uint32_t tag;             /* PropertyTag: id << 16 | type */
    uint64_t u;               /* fixed-size values: their little-endian bits */
    struct mp_blob v;         /* PT_UNICODE (UTF-16LE), PT_STRING8, PT_BINARY, ... */
    struct mp_propname *name; /* named properties, when known */
};
struct mp_props {
    struct mp_prop *v;
    size_t n, cap;
};

struct mp_recipient {
    uint32_t row_id;
    uint8_t type; /* 1 To, 2 Cc, 3 Bcc (MS-OXCMSG PidTagRecipientType) */
    struct mp_props props;
};

struct mp_message;
struct mp_attachment {
    uint32_t num;
    struct mp_props props;
    struct mp_message *embedded; /* attach method 5 */
};

struct mp_message {
    uint64_t folder_id, message_id;
    struct mp_props props;
    struct mp_recipient *rcpt;
    size_t nrcpt;
    struct mp_attachment *att;
    size_t natt;
    struct mp_message *parent; /* embedded: the message holding it */
    uint64_t content_bytes;    /* this message and its embedded ones */
    bool over_limit;           /* passed max_message: content dropped */
    unsigned holds;            /* mp_msg_hold: mp_msg_free calls to ignore */
};

struct mp_message *mp_msg_new(void);
void mp_msg_free(struct mp_message *m);
/* One more owner of a top message: the next mp_msg_free only drops the
 * hold (the message event keeps a message the assembler is done with). */
void mp_msg_hold(struct mp_message *m);
/* The attachment numbered num (created when missing), NULL on no memory. */
struct mp_attachment *mp_msg_attachment(struct mp_message *m, uint32_t num);
/* The recipient with row_id (created when missing); NULL on no memory. */
struct mp_recipient *mp_msg_recipient(struct mp_message *m, uint32_t row_id);
void mp_msg_remove_recipient(struct mp_message *m, uint32_t row_id);
void mp_msg_clear_recipients(struct mp_message *m);
/* Adds n content bytes to m and its parents; true when the top message
 * passes l->max_message (it is then marked over_limit). */
bool mp_msg_count(struct mp_message *m, uint64_t n, const struct mp_content_limits *l);
struct mp_message *mp_msg_top(struct mp_message *m);

/* Properties.  A string8/Unicode pair of one id is one property: set
 * replaces either.  Values: fixed types in u, the others as bytes. */
struct mp_prop *mp_props_find(const struct mp_props *p, uint32_t tag);
struct mp_prop *mp_props_slot(struct mp_props *p, uint32_t tag); /* emptied, or new */
int mp_props_set_u(struct mp_props *p, uint32_t tag, uint64_t u);
int mp_props_set_bytes(struct mp_props *p, uint32_t tag, const void *v, size_t n,
                       const struct mp_content_limits *l);
void mp_props_free(struct mp_props *p);
/* A string property as UTF-8 (Unicode or string8 taken as Windows-1252's
 * ASCII part), NUL-terminated in out; -1 when absent. */
int mp_props_string(const struct mp_props *p, uint16_t id, struct mp_buf *out);
bool mp_props_u(const struct mp_props *p, uint32_t tag, uint64_t *u);

/* Tags the model and MIME use (MS-OXPROPS). */
enum {
    MP_TAG_SUBJECT = 0x0037001F,
    MP_TAG_MESSAGE_CLASS = 0x001A001F,
    MP_TAG_CLIENT_SUBMIT_TIME = 0x00390040,
    MP_TAG_DELIVERY_TIME = 0x0E060040,
    MP_TAG_TRANSPORT_HEADERS = 0x007D001F,
    MP_TAG_BODY = 0x1000001F,
    MP_TAG_RTF_COMPRESSED = 0x10090102,
    MP_TAG_HTML = 0x10130102,
    MP_TAG_INTERNET_MESSAGE_ID = 0x1035001F,
    MP_TAG_RECIPIENT_TYPE = 0x0C150003,
    MP_TAG_DISPLAY_NAME = 0x3001001F,
    MP_TAG_ADDRESS_TYPE = 0x3002001F,
    MP_TAG_EMAIL_ADDRESS = 0x3003001F,
    MP_TAG_SMTP_ADDRESS = 0x39FE001F,
    MP_TAG_ATTACH_DATA = 0x37010102,
    MP_TAG_ATTACH_FILENAME = 0x3704001F,
    MP_TAG_ATTACH_METHOD = 0x37050003,
    MP_TAG_ATTACH_LONG_FILENAME = 0x3707001F,
    MP_TAG_ATTACH_PATHNAME = 0x3708001F,
    MP_TAG_ATTACH_LONG_PATHNAME = 0x370D001F,
    MP_TAG_ATTACH_MIME_TAG = 0x370E001F,
    MP_TAG_ATTACH_CONTENT_ID = 0x3712001F,
    MP_TAG_SENDER_NAME = 0x0C1A001F,
    MP_TAG_SENDER_EMAIL = 0x0C1F001F,
    MP_TAG_SENDER_SMTP = 0x5D01001F,
    MP_TAG_SENT_REP_NAME = 0x0042001F,
    MP_TAG_SENT_REP_EMAIL = 0x0065001F,
    MP_TAG_SENT_REP_SMTP = 0x5D02001F,
};
enum { MP_ATTACH_BY_VALUE = 1, MP_ATTACH_BY_REFERENCE = 2, MP_ATTACH_EMBEDDED = 5 };

#endif
