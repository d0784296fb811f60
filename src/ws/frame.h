/*
 * frame.h — RFC 6455 frame codec: header encode/parse, masking, close frames.
 *
 * Pure code: bytes in, bytes or fields out; no sockets, no loop. The message
 * layer on top (ws/reader.h) enforces the stateful rules of section 5.
 *
 * Wire layout of a frame header (RFC 6455 5.2), 2 to 14 bytes:
 *
 *    0               1               2               3
 *   +-+-+-+-+-------+-+-------------+-------------------------------+
 *   |F|R|R|R| opcode|M| len7 (0-125)|  len16 if len7 == 126        |
 *   |I|S|S|S|  (4)  |A|  126 = 16-bit|  len64 if len7 == 127 (8 B,  |
 *   |N|1|2|3|       |S|  127 = 64-bit|  MSB must be 0)              |
 *   +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
 *   | ... | masking key (4 bytes, only if MASK = 1) | payload ...   |
 *
 * Length encodings: RFC 6455 5.2 says "the minimal number of bytes MUST be
 * used to encode the length" and "the most significant bit MUST be 0". The
 * parser enforces both: a 16-bit length below 126, a 64-bit length below
 * 65536, or a 64-bit length with its top bit set is a protocol error
 * (close 1002). No conforming peer sends these, so rejecting them costs
 * nothing and closes a source of parser ambiguity. The encoder always
 * emits the minimal form.
 *
 * Server-to-client frames are unmasked, so ch_ws_frame_encode() builds one
 * immutable chunk that can be queued on every subscriber's socket.
 */
#ifndef CH_WS_FRAME_H
#define CH_WS_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum {
  CH_WS_OP_CONT = 0,
  CH_WS_OP_TEXT = 1,
  CH_WS_OP_BINARY = 2,
  CH_WS_OP_CLOSE = 8,
  CH_WS_OP_PING = 9,
  CH_WS_OP_PONG = 10,
};

/* Close status codes (RFC 6455 7.4.1, IANA registry). */
enum {
  CH_WS_CLOSE_NORMAL = 1000,
  CH_WS_CLOSE_GOING_AWAY = 1001,
  CH_WS_CLOSE_PROTOCOL = 1002,
  CH_WS_CLOSE_UNSUPPORTED = 1003,
  CH_WS_CLOSE_NO_STATUS = 1005,   /* never on the wire */
  CH_WS_CLOSE_ABNORMAL = 1006,    /* never on the wire */
  CH_WS_CLOSE_INVALID_DATA = 1007,
  CH_WS_CLOSE_POLICY = 1008,
  CH_WS_CLOSE_TOO_BIG = 1009,
  CH_WS_CLOSE_MANDATORY_EXT = 1010,
  CH_WS_CLOSE_INTERNAL = 1011,
  CH_WS_CLOSE_TRY_AGAIN = 1013,
};

#define CH_WS_MAX_HEADER 14   /* 2 + 8 (len64) + 4 (mask) */
#define CH_WS_MAX_CONTROL 125 /* payload limit of ping/pong/close */

/* RSV bits as stored in ch_ws_frame_hdr_t.rsv. */
#define CH_WS_RSV1 4
#define CH_WS_RSV2 2
#define CH_WS_RSV3 1

/* Write a frame header into out and return its length (2..14).
 * fin, rsv1: 0/1. opcode: 0..15 (low 4 bits used). payload_len < 2^63.
 * mask4: NULL for an unmasked frame (server side), else 4 key bytes that are
 * copied into the header (the caller still masks the payload, ch_ws_mask). */
size_t ch_ws_frame_header(uint8_t out[CH_WS_MAX_HEADER], int fin, int rsv1, int opcode,
                          uint64_t payload_len, const uint8_t *mask4);

/* XOR data[0..len) in place with the masking key, where data[0] is byte
 * `offset` of the payload (so a payload may be unmasked in pieces). Masking
 * and unmasking are the same operation. Works a machine word at a time on
 * aligned words; any alignment and length are accepted. */
void ch_ws_mask(uint8_t *data, size_t len, const uint8_t mask[4], size_t offset);

/* One whole unmasked frame, FIN set: header + copy of payload[0..len).
 * payload may be NULL when len == 0. Returns a chunk with one reference,
 * owned by the caller (ch_chunk_unref). Never NULL (aborts on OOM). */
ch_chunk_t *ch_ws_frame_encode(int opcode, int rsv1, const void *payload, size_t len);

/* An unmasked close frame. code 0: empty payload (reason ignored). Otherwise
 * the payload is the code (big-endian) and the reason (NUL-terminated, may be
 * NULL), truncated so the payload is at most 125 bytes, cut on a UTF-8
 * code point boundary. One reference, owned by the caller. */
ch_chunk_t *ch_ws_close_frame(uint16_t code, const char *reason);

/* 1 if code may appear in a close frame on the wire (RFC 6455 7.4 and the
 * IANA registry): 1000-1003, 1007-1014, 3000-4999. 1004-1006 and 1015 are
 * reserved / local-only, everything below 1000 or in 1016-2999 or >= 5000
 * is invalid. (1012-1014 are IANA-registered; Autobahn accepts them.) */
int ch_ws_close_code_valid(uint16_t code);

/* ---- Faults: every way a peer's byte stream can break RFC 6455 ---------- */

typedef enum {
  CH_WS_FAULT_NONE = 0,
  CH_WS_FAULT_LEN_NONMINIMAL, /* "non-minimal length encoding"           1002 */
  CH_WS_FAULT_LEN_MSB,        /* "64-bit length with MSB set"            1002 */
  CH_WS_FAULT_UNMASKED,       /* "unmasked client frame"                 1002 */
  CH_WS_FAULT_MASKED,         /* "masked server frame"                   1002 */
  CH_WS_FAULT_RSV,            /* "reserved bits set"                     1002 */
  CH_WS_FAULT_OPCODE,         /* "reserved opcode"                       1002 */
  CH_WS_FAULT_CTL_LONG,       /* "control frame too long"                1002 */
  CH_WS_FAULT_CTL_FRAG,       /* "fragmented control frame"              1002 */
  CH_WS_FAULT_CONT,           /* "continuation without start"            1002 */
  CH_WS_FAULT_NEW_IN_FRAG,    /* "new message during fragmented message" 1002 */
  CH_WS_FAULT_UTF8,           /* "invalid UTF-8"                         1007 */
  CH_WS_FAULT_FRAME_BIG,      /* "frame too large"                       1009 */
  CH_WS_FAULT_MSG_BIG,        /* "message too large"                     1009 */
  CH_WS_FAULT_CLOSE_CODE,     /* "invalid close code"                    1002 */
  CH_WS_FAULT_CLOSE_1BYTE,    /* "close payload of 1 byte"               1002 */
  CH_WS_FAULT__COUNT
} ch_ws_fault_t;

/* Static description of a fault ("no error" for NONE, "unknown" if out of range). */
const char *ch_ws_fault_str(int fault);
/* Close code to send for a fault: 1002, 1007 or 1009 (0 for NONE). */
uint16_t ch_ws_fault_close_code(int fault);
/* CH_E* code for a fault: CH_EPROTO, CH_EUTF8 or CH_ETOOBIG (0 for NONE). */
int ch_ws_fault_err(int fault);

/* ---- Resumable frame-header parser -------------------------------------- */

typedef struct {
  uint64_t len;    /* payload length in bytes (< 2^63) */
  uint8_t fin;     /* 0/1 */
  uint8_t rsv;     /* CH_WS_RSV1|2|3 bits as sent */
  uint8_t opcode;  /* 0..15, not yet checked against the known set */
  uint8_t masked;  /* 0/1 */
  uint8_t mask[4]; /* masking key, valid if masked */
} ch_ws_frame_hdr_t;

/* Holds at most one partial header (14 bytes) between calls; never
 * allocates. Embed it and ch_ws_frame_parser_init() it. */
typedef struct ch_ws_frame_parser_s {
  uint8_t _buf[CH_WS_MAX_HEADER]; /* partial header bytes, only when split */
  uint8_t _have;                  /* bytes in _buf */
  uint8_t _fault;                 /* ch_ws_fault_t; sticky once set */
} ch_ws_frame_parser_t;

void ch_ws_frame_parser_init(ch_ws_frame_parser_t *fp);

/* Parse the next frame header from p[0..n) (p is only read, during the call).
 * Returns:
 *   0          a header is complete: *h is filled, *used = bytes of p taken
 *              (the payload starts at p + *used). The parser is reset.
 *   CH_AGAIN   all n bytes were taken (*used = n) into the partial header;
 *              call again with more bytes.
 *   CH_EPROTO  bad length encoding (non-minimal, or 64-bit MSB set);
 *              ch_ws_frame_parser_fault() says which. Sticky.
 * When the whole header lies in p, nothing is copied. */
int ch_ws_frame_parse(ch_ws_frame_parser_t *fp, const uint8_t *p, size_t n, size_t *used,
                      ch_ws_frame_hdr_t *h);

/* The fault after CH_EPROTO (CH_WS_FAULT_NONE otherwise). */
int ch_ws_frame_parser_fault(const ch_ws_frame_parser_t *fp);

#endif
