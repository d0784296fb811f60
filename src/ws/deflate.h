/*
 * deflate.h — RFC 7692 permessage-deflate: negotiation and per-message codec.
 *
 * Two halves, both pure (no sockets, no loop):
 *
 *   1. ch_ws_deflate_negotiate() reads the client's Sec-WebSocket-Extensions
 *      offers, applies the server's policy (ch_ws_deflate_cfg_t) and yields
 *      the negotiated parameters plus the exact response value.
 *
 *   2. ch_ws_deflate_t compresses outgoing and inflates incoming messages
 *      with the negotiated window sizes and context-takeover rules.
 *
 * Direction naming follows the RFC: "server_*" parameters govern what the
 * server compresses (and the client inflates), "client_*" the reverse. A
 * ch_ws_deflate_t made with is_server=1 compresses with server_* and
 * inflates with client_*; with is_server=0 it is the client's mirror image.
 *
 *     server  --deflate(server_max_window_bits, server_no_context_takeover)-->  client
 *     server  <--inflate(client_max_window_bits, client_no_context_takeover)--  client
 *
 * Memory. A hub keeps ~19,000 connections at ~2 KiB each, and one zlib
 * stream costs far more than that (deflate ~ 2^(wbits+2) + 2^(memLevel+9)
 * bytes + ~6 KiB, i.e. 256 KiB at 15/8; inflate ~ 2^wbits + ~7 KiB). So:
 *   - the ch_ws_deflate_t itself is a few dozen bytes;
 *   - each z_stream is created lazily, on the first message in its
 *     direction, so an idle or one-way connection pays nothing;
 *   - when a direction has no_context_takeover, its z_stream is ended and
 *     freed after every message (deflateEnd/inflateEnd), so between
 *     messages that direction costs nothing either.
 * With context takeover a stream lives as long as the connection; a memory-
 * tight deployment forces server_no_context_takeover (and/or
 * client_no_context_takeover) and smaller windows in its cfg.
 *
 * Window bits and zlib. zlib cannot produce a raw deflate stream with an
 * 8-bit window (deflateInit2 refuses -8; with a zlib wrapper it silently
 * uses 9, which would break the RFC's promise). Hence:
 *   - an offer with server_max_window_bits=8 is DECLINED (that offer is
 *     skipped; a later fallback offer in the same header may still match);
 *   - the cfg's own window sizes are clamped to 9..15 (0 means 15);
 *   - a client hint client_max_window_bits=8 is honoured (the client
 *     promises to use a 256-byte window; we inflate with a 9-bit window,
 *     which is a superset and therefore always safe).
 *
 * min_size in the cfg is policy for the caller (session layer): messages
 * shorter than it are sent uncompressed (RSV1 clear). The codec itself
 * compresses whatever it is given.
 */
#ifndef CH_WS_DEFLATE_H
#define CH_WS_DEFLATE_H

#include <stddef.h>

#include "core/buf.h"

/* Server policy for permessage-deflate. A zeroed struct means "disabled". */
typedef struct {
  int enabled;                    /* 0 = ignore every offer */
  int server_no_context_takeover; /* 1 = force it on (we reset after each message) */
  int client_no_context_takeover; /* 1 = force it on (client must reset; we free our inflater) */
  int server_max_window_bits;     /* max window we compress with, 9..15; 0 = 15; 8 is raised to 9 */
  int client_max_window_bits;     /* max window we allow the client, 9..15; 0 = 15; 8 is raised to 9.
                                     Below 15, offers without client_max_window_bits are declined
                                     (the RFC forbids asking a client that did not offer it) */
  int level;                      /* zlib level 1..9; anything else = 6 (zlib default) */
  int mem_level;                  /* zlib memLevel 1..9; anything else = 8 (zlib default) */
  size_t min_size;                /* bytes; messages shorter than this go uncompressed (caller applies) */
} ch_ws_deflate_cfg_t;

/* Negotiated parameters (the outcome of one handshake). */
typedef struct {
  int enabled;                    /* 1 = permessage-deflate is in effect */
  int server_no_context_takeover; /* server resets its compressor after each message */
  int client_no_context_takeover; /* client resets its compressor after each message */
  int server_max_window_bits;     /* 9..15: window the server compresses with */
  int client_max_window_bits;     /* 8..15: window the client compresses with (15 if not negotiated) */
} ch_ws_deflate_params_t;

/*
 * Parse a Sec-WebSocket-Extensions request value and accept the FIRST valid
 * permessage-deflate offer that the policy allows.
 *
 *   header          NUL-terminated value (several offers comma-separated,
 *                   parameters ';'-separated, values token or quoted-string),
 *                   or NULL. Borrowed for the call only.
 *   cfg             server policy; borrowed.
 *   out             receives the result; out->enabled is 0 when nothing was
 *                   accepted (all other fields are then 0).
 *   response_value  if non-NULL and an offer was accepted, the response
 *                   extension value is appended, e.g.
 *                   "permessage-deflate; server_no_context_takeover; client_max_window_bits=12".
 *
 * Offers that are invalid per RFC 7692 section 5 (unknown parameter,
 * duplicate parameter, window bits outside 8..15 or with leading zeros,
 * missing server_max_window_bits value, a value on *_no_context_takeover,
 * malformed syntax) are skipped, as are offers with server_max_window_bits=8
 * (see above) and, when cfg->client_max_window_bits < 15, offers without
 * client_max_window_bits. Extension and parameter names compare
 * case-insensitively. A malformed header never fails the handshake.
 *
 * Returns 0, or CH_EINVAL if cfg or out is NULL.
 */
int ch_ws_deflate_negotiate(const char *header, const ch_ws_deflate_cfg_t *cfg,
                            ch_ws_deflate_params_t *out, ch_buf_t *response_value);

typedef struct ch_ws_deflate_s ch_ws_deflate_t;

/*
 * New codec for one connection. p is copied (borrowed for the call).
 * is_server selects the direction (see top). level/mem_level as in the cfg
 * (out of range = zlib default). No zlib memory is allocated here.
 * Returns NULL if p is NULL, not enabled, or has window bits outside 8..15
 * or a compress-side window of 8 (zlib cannot honour it). The caller owns
 * the result and releases it with ch_ws_deflate_free().
 */
ch_ws_deflate_t *ch_ws_deflate_new(const ch_ws_deflate_params_t *p, int is_server, int level,
                                   int mem_level);
/* Free the codec and any live z_streams. NULL is a no-op. */
void ch_ws_deflate_free(ch_ws_deflate_t *d);

/*
 * Compress one whole message in[0..n) and append the payload to send (RSV1
 * set) to out: DEFLATE blocks flushed with Z_SYNC_FLUSH, minus the trailing
 * 00 00 ff ff. An empty message becomes the single byte 00. If our side has
 * no_context_takeover the compressor is freed afterwards. The output can be
 * larger than the input for incompressible data; comparing is the caller's
 * choice.
 * Returns 0, or CH_ENOMEM (zlib could not allocate its state), or CH_EIO
 * (zlib internal failure; the compressor is reset). On error out->len is
 * restored to its value on entry.
 */
int ch_ws_deflate_compress(ch_ws_deflate_t *d, const void *in, size_t n, ch_buf_t *out);

/*
 * Inflate one whole received message in[0..n) (RSV1 was set; all fragments
 * joined) and append the plaintext to out. The 00 00 ff ff tail is supplied
 * internally (in is not copied). A final block (BFINAL=1) is accepted; bytes
 * after it are ignored, and with context takeover the window is carried
 * over. n == 0 appends nothing.
 *
 *   max_out  largest plaintext accepted, in bytes. Inflation stops as soon
 *            as it would exceed this: at most max_out + 1 bytes are ever
 *            written, so out's capacity stays below 2 * (its length on
 *            entry + max_out + 2) whatever the ratio of the input.
 *
 * Returns 0; CH_ETOOBIG if the plaintext exceeds max_out (close 1009);
 * CH_EPROTO if the data is corrupt or ends inside a block (close 1007/1002);
 * CH_ENOMEM if zlib could not allocate; CH_EIO on a zlib internal failure. On any error out->len is restored,
 * and the inflater is discarded: the caller must fail the connection, as
 * the peer's compression context can no longer be followed. If the peer has
 * no_context_takeover the inflater is freed after every message.
 */
int ch_ws_deflate_inflate(ch_ws_deflate_t *d, const void *in, size_t n, size_t max_out,
                          ch_buf_t *out);

#endif
