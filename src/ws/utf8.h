/*
 * utf8.h — incremental, fail-fast UTF-8 validation (RFC 3629).
 *
 * WebSocket text messages arrive in pieces (fragments, TCP reads), and RFC 6455
 * 8.1 lets an endpoint fail the connection as soon as it sees a byte that can
 * never be part of valid UTF-8. ch_utf8_t is a one-word DFA state that carries
 * a partial code point from one piece to the next, so a caller validates each
 * piece as it lands and never buffers for the sake of validation.
 *
 * Rejected, and rejected at the first byte that makes them impossible:
 *   - bytes C0, C1, F5..FF anywhere; a continuation byte (80..BF) with no lead;
 *   - overlong forms   (E0 80..9F, F0 80..8F are rejected at the 2nd byte);
 *   - UTF-16 surrogates U+D800..U+DFFF (ED A0..BF, rejected at the 2nd byte);
 *   - code points above U+10FFFF (F4 90..BF, rejected at the 2nd byte);
 *   - a lead byte followed by a non-continuation byte.
 * Noncharacters (U+FFFE, U+FFFF, U+FDD0..) are valid UTF-8 and are accepted.
 * A sequence cut off at the end of the input is not an error for
 * ch_utf8_feed (more may come); ch_utf8_complete() tells whether the state
 * sits on a code point boundary.
 *
 * ASCII is checked 8 bytes at a time while the DFA is between code points.
 */
#ifndef CH_WS_UTF8_H
#define CH_WS_UTF8_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  uint32_t _state; /* DFA state; 0 = on a code point boundary */
} ch_utf8_t;

/* Start a new validation (boundary state). */
void ch_utf8_init(ch_utf8_t *u);

/* Validate p[0..n) as the continuation of everything fed since init.
 * p may be NULL when n == 0; p is only read during the call.
 * Returns 0 if the input so far is valid or a valid prefix (possibly in the
 * middle of a multi-byte sequence), or CH_EUTF8 as soon as a byte can never
 * be valid. The state is then sticky: every later feed returns CH_EUTF8. */
int ch_utf8_feed(ch_utf8_t *u, const uint8_t *p, size_t n);

/* 1 if everything fed so far is complete valid UTF-8 (on a code point
 * boundary and never rejected), else 0. */
int ch_utf8_complete(const ch_utf8_t *u);

/* 1 if p[0..n) is entirely valid UTF-8 (n == 0 is valid), else 0. */
int ch_utf8_valid(const uint8_t *p, size_t n);

#endif
