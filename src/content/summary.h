/* The message model summarised as JSON members (for mime-dump and
 * message-log's lines): subject, sizes, recipients, attachments with file
 * names, content types, sizes and SHA-256 (embedded messages nested). */
#ifndef MP_CONTENT_SUMMARY_H
#define MP_CONTENT_SUMMARY_H
#include "content/message.h"

struct mp_json;
/* Writes members into the open object j: "subject", "size", "sizes",
 * "recipients", "attachments".  0, or -1 when a value could not be read. */
int mp_msg_summary(struct mp_json *j, const struct mp_message *m);

#endif
