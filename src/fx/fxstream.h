/* FastTransfer stream codec (MS-OXCFXICS 2.2.4): an incremental decoder that
 * turns the bytes of RopFastTransferSourceGetBuffer / DestinationPutBuffer,
 * split at any byte, into events, and an encoder that turns the same events
 * back into the same bytes.  See doc/internals/fasttransfer.md.
 *
 * Lexical level: the stream is a sequence of atoms, each starting with a u32
 * tag.  A tag that is one of the markers (2.2.4.1.4) is the whole atom;
 * any other tag starts a propValue (2.2.4.3.21): [named info if the id is
 * >= 0x8000] then the value of the tag's type (fixed size, or u32 length +
 * bytes, or u32 count + values for multi-valued types; code page strings
 * have type 0x8000|codepage).  Structure level: begin/end markers nest
 * (folder, message, recipient, attachment, embedded message, ICS state) and
 * must match; an ICS message change (IncrSyncChg / IncrSyncChgPartial) ends
 * implicitly at the next change, deletion, read state, state or end marker,
 * which the decoder reports as MP_FX_EV_CHANGE_END.
 *
 * Memory is bounded: a value's bytes are handed on as they arrive (DATA
 * events that point into the caller's buffer), unless the value is at most
 * `coalesce` bytes long (mp_fx_parser_set_coalesce), in which case it comes
 * as one DATA event.  IDSET meta-properties up to MP_FX_IDSET_MAX bytes are
 * gathered and checked (mp_fx_idset_decode). */
#ifndef MP_FX_STREAM_H
#define MP_FX_STREAM_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Markers (MS-OXCFXICS 2.2.4.1.4) */
enum {
    MP_FX_NewAttach = 0x40000003,
    MP_FX_StartEmbed = 0x40010003,
    MP_FX_EndEmbed = 0x40020003,
    MP_FX_StartRecip = 0x40030003,
    MP_FX_EndToRecip = 0x40040003,
    MP_FX_StartTopFld = 0x40090003,
    MP_FX_StartSubFld = 0x400A0003,
    MP_FX_EndFolder = 0x400B0003,
    MP_FX_StartMessage = 0x400C0003,
    MP_FX_EndMessage = 0x400D0003,
    MP_FX_EndAttach = 0x400E0003,
    MP_FX_StartFAIMsg = 0x40100003,
    MP_FX_IncrSyncChg = 0x40120003,
    MP_FX_IncrSyncDel = 0x40130003,
    MP_FX_IncrSyncEnd = 0x40140003,
    MP_FX_IncrSyncMessage = 0x40150003,
    MP_FX_FXErrorInfo = 0x40180003,
    MP_FX_IncrSyncRead = 0x402F0003,
    MP_FX_IncrSyncStateBegin = 0x403A0003,
    MP_FX_IncrSyncStateEnd = 0x403B0003,
    MP_FX_IncrSyncProgressMode = 0x4074000B,
    MP_FX_IncrSyncProgressPerMsg = 0x4075000B,
    MP_FX_IncrSyncGroupInfo = 0x407B0102,
    MP_FX_IncrSyncChgPartial = 0x407D0003,
};
/* Meta-properties (2.2.4.1.5, 2.2.1) */
enum {
    MP_FX_MetaTagDnPrefix = 0x4008001E,
    MP_FX_MetaTagEcWarning = 0x400F0003,
    MP_FX_MetaTagNewFXFolder = 0x40110102,
    MP_FX_MetaTagFXDelProp = 0x40160003,
    MP_FX_MetaTagIdsetGiven = 0x40170003, /* type says Integer32, value is binary */
    MP_FX_MetaTagIdsetNoLongerInScope = 0x40210102,
    MP_FX_MetaTagIdsetRead = 0x402D0102,
    MP_FX_MetaTagIdsetUnread = 0x402E0102,
    MP_FX_MetaTagIncrementalSyncMessagePartial = 0x407A0003,
    MP_FX_MetaTagIncrSyncGroupId = 0x407C0003,
    MP_FX_MetaTagIdsetExpired = 0x67930102,
    MP_FX_MetaTagCnsetSeen = 0x67960102,
    MP_FX_MetaTagCnsetRead = 0x67D20102,
    MP_FX_MetaTagCnsetSeenFAI = 0x67DA0102,
    MP_FX_MetaTagIdsetDeleted = 0x67E50102,
};

/* What a marker is (ev.elem) */
enum mp_fx_elem {
    MP_FX_E_NONE = 0,
    MP_FX_E_FOLDER,         /* StartTopFld / StartSubFld .. EndFolder */
    MP_FX_E_MESSAGE,        /* StartMessage / StartFAIMsg .. EndMessage */
    MP_FX_E_RECIP,          /* StartRecip .. EndToRecip */
    MP_FX_E_ATTACH,         /* NewAttach .. EndAttach */
    MP_FX_E_EMBED,          /* StartEmbed .. EndEmbed */
    MP_FX_E_STATE,          /* IncrSyncStateBegin .. IncrSyncStateEnd */
    MP_FX_E_CHANGE,         /* IncrSyncChg (messageChangeFull) */
    MP_FX_E_CHANGE_PARTIAL, /* IncrSyncChgPartial (messageChangePartial) */
    MP_FX_E_CHANGE_BODY,    /* IncrSyncMessage: the message's properties follow */
    MP_FX_E_DELETIONS,      /* IncrSyncDel */
    MP_FX_E_READ,           /* IncrSyncRead */
    MP_FX_E_PROGRESS,       /* IncrSyncProgressMode */
    MP_FX_E_PROGRESS_MSG,   /* IncrSyncProgressPerMsg */
    MP_FX_E_GROUP_INFO,     /* IncrSyncGroupInfo */
    MP_FX_E_END,            /* IncrSyncEnd */
    MP_FX_E_ERROR_INFO,     /* FXErrorInfo */
};

enum mp_fx_ev_kind {
    MP_FX_EV_MARKER,     /* tag, elem, begin/end */
    MP_FX_EV_PROP,       /* a propValue starts: tag, type, named, mv/count */
    MP_FX_EV_VALUE,      /* one value starts (index in a multi-value; len bytes) */
    MP_FX_EV_DATA,       /* p, n: the next bytes of the current value */
    MP_FX_EV_VALUE_END,  /* u: the value if fixed-size and <= 8 bytes */
    MP_FX_EV_PROP_END,   /* the propValue is complete */
    MP_FX_EV_CHANGE_END, /* an ICS message change ended (no bytes of its own) */
};

/* Named property (MS-OXCFXICS 2.2.4.3.x namedPropInfo): kind 0 = LID, 1 = name. */
#define MP_FX_NAME_MAX 1024 /* bytes of a property name (UTF-16LE) */
struct mp_fx_named {
    uint8_t guid[16];
    uint8_t kind;
    uint32_t lid;
    const uint8_t *name; /* UTF-16LE, without the 00 00 terminator */
    uint32_t name_len;   /* bytes */
};

struct mp_fx_event {
    enum mp_fx_ev_kind kind;
    uint32_t tag;  /* marker or property tag as on the wire */
    uint16_t type; /* value type (MetaTagIdsetGiven: 0x0102), MV bit included */
    enum mp_fx_elem elem;
    bool begin, end; /* marker opens / closes an element */
    bool named;
    const struct mp_fx_named *np; /* when named */
    bool mv;
    uint32_t count;   /* values of a multi-valued property */
    uint32_t index;   /* current value */
    uint32_t len;     /* bytes of the current value (fixed: its size) */
    const uint8_t *p; /* DATA: bytes; VALUE_END of a gathered value: all bytes */
    size_t n;
    uint64_t u;      /* fixed-size value (little-endian, <= 8 bytes) */
    uint64_t offset; /* stream offset where the atom began */
    int depth;       /* open elements */
};

/* Returns 0 to go on; any other value stops the decoder and is returned by
 * mp_fx_feed. */
typedef int (*mp_fx_cb)(void *ud, const struct mp_fx_event *ev);

#define MP_FX_MAX_DEPTH 64
#define MP_FX_IDSET_MAX (1u << 20)
enum { MP_FX_ERR = -1, MP_FX_NOMEM = -2 };

struct mp_fx_parser;
struct mp_fx_parser *mp_fx_parser_new(mp_fx_cb cb, void *ud);
void mp_fx_parser_free(struct mp_fx_parser *p);
/* Values of at most max bytes come whole, in one DATA event (default 0). */
void mp_fx_parser_set_coalesce(struct mp_fx_parser *p, uint32_t max);
/* 0 on success, MP_FX_ERR on malformed input (mp_fx_error says why; the
 * parser stays failed), MP_FX_NOMEM, or the callback's nonzero value. */
int mp_fx_feed(struct mp_fx_parser *p, const uint8_t *buf, size_t n);
/* The stream has ended: fails if an atom or an element is unfinished. */
int mp_fx_finish(struct mp_fx_parser *p);
const char *mp_fx_error(const struct mp_fx_parser *p);
uint64_t mp_fx_offset(const struct mp_fx_parser *p);
/* Bytes of an atom's tag read but not complete yet (0-3): the atom that
 * begins mp_fx_offset() - that many bytes in may be a marker. */
size_t mp_fx_partial_tag(const struct mp_fx_parser *p);

/* Helpers */
bool mp_fx_is_marker(uint32_t tag);
/* Size of a fixed-size type, 0 for variable, -1 for a type FastTransfer
 * does not carry. */
int mp_fx_type_size(uint16_t type);
const char *mp_fx_marker_name(uint32_t tag);
/* IDSET meta-property: 1 REPLGUID-based, 2 REPLID-based, 0 not an IDSET. */
int mp_fx_idset_form(uint32_t tag);

/* IDSET (2.2.2.4): a sequence of (REPLID u16 | REPLGUID 16 bytes) + GLOBSET
 * (2.2.2.6: Push 0x01-0x06, Pop 0x50, Bitmask 0x42, Range 0x52, End 0x00).
 * cb (may be NULL) gets every GLOBCNT range; returns 0, or -1 if malformed. */
typedef int (*mp_fx_idset_cb)(void *ud, const uint8_t *repl, size_t repl_len, uint64_t lo,
                              uint64_t hi);
int mp_fx_idset_decode(const uint8_t *p, size_t n, bool guid_form, mp_fx_idset_cb cb, void *ud);

/* Encoder: writes the bytes an event stream stands for.  Fed the decoder's
 * events unchanged, it writes the decoder's input byte for byte.  Output
 * goes to a growable buffer (out, len) that the caller may take and reset. */
struct mp_fx_enc {
    uint8_t *out;
    size_t len, cap;
    int err;       /* sticky: nonzero after a bad event or no memory */
    uint32_t left; /* bytes still owed to the current value */
};
void mp_fx_enc_init(struct mp_fx_enc *e);
void mp_fx_enc_free(struct mp_fx_enc *e);
int mp_fx_enc_event(struct mp_fx_enc *e, const struct mp_fx_event *ev);
/* Building streams from scratch */
int mp_fx_enc_marker(struct mp_fx_enc *e, uint32_t tag);
/* Bytes already encoded (a property list made with another encoder). */
int mp_fx_enc_raw(struct mp_fx_enc *e, const uint8_t *p, size_t n);
int mp_fx_enc_fixed(struct mp_fx_enc *e, uint32_t tag, const struct mp_fx_named *np, uint64_t u);
int mp_fx_enc_var(struct mp_fx_enc *e, uint32_t tag, const struct mp_fx_named *np, const uint8_t *v,
                  uint32_t n);
#endif
