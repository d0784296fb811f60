/*
 * reader.h — RFC 6455 message reader: raw socket bytes in, whole messages
 * and control frames out. Pure: no sockets, no loop, no clock.
 *
 *   socket bytes ──feed──▶ [frame header parser] ──▶ rules of RFC 6455 §5
 *                                                      │
 *          unmask in place, UTF-8 check (text, uncompressed, per piece)
 *                                                      │
 *        whole frame in this feed? ──yes──▶ on_message(pointer into data)
 *                   │ no
 *                   ▼
 *        append to _msg (heap ch_buf_t, only while a message spans
 *        frames or feeds) ──fin──▶ on_message(_msg bytes) ──▶ free _msg
 *
 *   ping / pong / close ──▶ on_control (may arrive between fragments)
 *
 * The reader enforces, for a server (client frames must be masked) or a
 * client (server frames must not be masked):
 *   RSV2/RSV3 never set; RSV1 only if permessage-deflate was negotiated and
 *   only on the first frame of a data message; no reserved opcodes; control
 *   frames unfragmented and <= 125 bytes; continuation only inside a
 *   fragmented message and no new data message inside one; minimal length
 *   encodings with the 64-bit MSB clear; UTF-8 of uncompressed text messages
 *   (fail-fast, across fragments and feeds); close payload either empty or
 *   a valid code plus UTF-8 reason; frame and message size limits, checked
 *   from the header before any payload is buffered.
 *
 * Any violation kills the reader: feed returns a negative CH_E* code and
 * ch_ws_reader_close_code()/ch_ws_reader_error() say what to send. After a
 * close frame has been delivered, every further byte is ignored.
 *
 * Memory: the struct is 88 bytes on LP64 and owns no heap while idle (between
 * messages). It buffers only a header split across feeds (inside the struct)
 * and the bytes of a message that spans frames or feeds (heap, bounded by
 * max_message, freed as soon as the message is delivered).
 */
#ifndef CH_WS_READER_H
#define CH_WS_READER_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "ws/frame.h"
#include "ws/utf8.h"

typedef struct {
  int is_client;        /* 0 = server: frames MUST be masked (else 1002); 1 = client: must NOT be */
  int allow_rsv1;       /* permessage-deflate negotiated: RSV1 allowed on a message's first frame */
  uint64_t max_frame;   /* max payload bytes of one data frame -> 1009; 0 = no limit */
  uint64_t max_message; /* max payload bytes of an assembled message (compressed bytes if
                           RSV1) -> 1009; 0 = no limit */
} ch_ws_reader_cfg_t;

/* Callbacks. Either may be NULL (the event is dropped). A nonzero return
 * stops feed at once: feed returns that value without touching the reader
 * again and the rest of the fed bytes are dropped, so a callback may dispose
 * of the reader (e.g. close the connection) before returning nonzero. The
 * reader must then not be fed again. Callbacks must not call feed. */
typedef struct {
  /* A whole data message. opcode: CH_WS_OP_TEXT or CH_WS_OP_BINARY.
   * compressed: RSV1 was set on its first frame (inflate it; text is then
   * NOT UTF-8-checked yet). data is borrowed, valid only during the call:
   * it points into the caller's fed buffer (zero-copy, when the whole
   * message was one frame inside one feed) or into the reader's buffer. */
  int (*on_message)(void *ud, int opcode, int compressed, const uint8_t *data, size_t len);
  /* A ping, pong or close frame (opcode CH_WS_OP_PING/PONG/CLOSE), len <= 125.
   * A close payload is already validated: empty, or a valid close code
   * (big-endian) followed by valid UTF-8. data borrowed, as above. */
  int (*on_control)(void *ud, int opcode, const uint8_t *data, size_t len);
} ch_ws_reader_cb_t;

typedef struct ch_ws_reader_s {
  ch_ws_frame_parser_t _fp; /* partial header between feeds */
  uint64_t _left;           /* payload bytes still to come in the current frame */
  uint64_t _max_frame;      /* bytes; UINT64_MAX when unlimited */
  uint64_t _max_message;    /* bytes; UINT64_MAX when unlimited */
  ch_buf_t *_msg;           /* owned; NULL when idle. Message bytes so far, then the
                               partial control payload (last _ctl_have bytes) */
  ch_ws_reader_cb_t _cb;    /* copy of the caller's callbacks */
  void *_ud;                /* opaque, passed to callbacks; not owned */
  ch_utf8_t _utf8;          /* validator of the current uncompressed text message */
  uint8_t _mask[4];         /* masking key of the current frame */
  uint8_t _state;           /* reader state (HDR, PAYLOAD, CLOSED, DEAD) */
  uint8_t _op;              /* opcode of the current frame */
  uint8_t _msg_op;          /* TEXT/BINARY of the message in progress, 0 = none */
  uint8_t _ctl_have;        /* control payload bytes buffered at the tail of _msg */
  uint8_t _fault;           /* ch_ws_fault_t once DEAD */
  uint8_t _mpos;            /* payload offset of the next byte, mod 4 */
  uint8_t _flags;           /* fin / compressed / client / rsv1-allowed bits */
} ch_ws_reader_t;

/* Set up r (embedded by the caller). cfg and cb are copied; neither need
 * outlive the call. ud is passed to the callbacks as is. Allocates nothing. */
void ch_ws_reader_init(ch_ws_reader_t *r, const ch_ws_reader_cfg_t *cfg,
                       const ch_ws_reader_cb_t *cb, void *ud);

/* Free what r holds (a partly received message). r may be re-initialised. */
void ch_ws_reader_dispose(ch_ws_reader_t *r);

/* Consume data[0..len) (data may be NULL when len == 0). data must be
 * writable: payloads are unmasked IN PLACE; the caller keeps ownership and
 * may reuse the buffer once feed returns. Every byte is consumed; events
 * fire in wire order from inside the call. Returns:
 *   0            all bytes consumed (also: after a close frame, ignored)
 *   CH_EPROTO    protocol violation      (close code 1002)
 *   CH_EUTF8     invalid UTF-8 text      (close code 1007)
 *   CH_ETOOBIG   frame or message limit  (close code 1009)
 *   other != 0   the value a callback returned (the reader was not touched
 *                after that callback)
 * After a negative CH_E* return the reader is dead, holds no heap, and
 * returns the same code on every later feed. */
int ch_ws_reader_feed(ch_ws_reader_t *r, uint8_t *data, size_t len);

/* Close code to send after feed failed: 1002, 1007 or 1009; 0 if not failed. */
uint16_t ch_ws_reader_close_code(const ch_ws_reader_t *r);

/* Static description of the failure (e.g. "unmasked client frame"), or
 * "no error". Never NULL. Meant for logs and the close reason. */
const char *ch_ws_reader_error(const ch_ws_reader_t *r);

/* 1 once a close frame has been delivered (later input is ignored). */
int ch_ws_reader_closed(const ch_ws_reader_t *r);

#endif
