/* The message model as RFC 5322 / MIME, with GMime 3 (doc/internals/content.md):
 * headers from PidTagTransportMessageHeaders when present (less its
 * Content-* and MIME-Version lines), otherwise from the properties (From,
 * To, Cc, Bcc, Subject, Date, Message-ID); bodies (plain, HTML, RTF
 * decompressed) in multipart/alternative; attachments by value with their
 * file names and content types, base64; embedded messages as
 * message/rfc822.  Attachments by reference are left out (the JSON line of
 * mime-dump lists them). */
#ifndef MP_CONTENT_MIME_H
#define MP_CONTENT_MIME_H
#include <stddef.h>

#include "content/message.h"

/* Once per process, before any conversion; mp_mime_shutdown at exit. */
void mp_mime_init(void);
void mp_mime_shutdown(void);
/* Writes m as an .eml to fd; 0 or -1.  max_rtf caps a decompressed RTF body. */
int mp_mime_write(const struct mp_message *m, int fd, size_t max_rtf);

#endif
