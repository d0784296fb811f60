/*
 * ws_inflate.c — libFuzzer harness for ch_ws_deflate_inflate (and compress).
 *
 * Input layout:
 *
 *     byte 0   bit0 server_no_context_takeover, bit1 client_no_context_takeover,
 *              bit2 the receiver is the server (else the client)
 *     byte 1   bits 0-2: server window 8+n, bits 3-5: client window 8+n
 *     byte 2   output limit, one of {0, 1, 16, 255, 4096, 65536, 1 MiB}
 *     rest     messages, each "len byte + len bytes" (the last takes what is left)
 *
 * Part A feeds the messages as received compressed payloads: the result must
 * be 0, CH_ETOOBIG or CH_EPROTO; success never exceeds the limit; failure
 * leaves the output buffer as it was. Context carries across messages, and
 * an error discards the inflater (the next message starts a fresh one).
 *
 * Part B treats the same messages as plaintext: the opposite side compresses
 * them and a fresh receiver must inflate them back byte for byte.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "ws/deflate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const size_t limits[] = {0, 1, 16, 255, 4096, 65536, (size_t)1 << 20};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  ch_ws_deflate_params_t p = {1, data[0] & 1, (data[0] >> 1) & 1, 8 + (data[1] & 7),
                              8 + ((data[1] >> 3) & 7)};
  int recv_is_server = (data[0] >> 2) & 1;
  size_t max_out = limits[data[2] % 7];
  int tx_level = 1 + data[0] % 9, tx_mem = 1 + data[1] % 9;
  data += 3;
  size = size - 3;

  /* Part A: arbitrary compressed payloads. The inflate side takes every
   * window 8..15; only our own compress side may not be 8 (zlib limit). */
  ch_ws_deflate_params_t pa = p;
  int *own = recv_is_server ? &pa.server_max_window_bits : &pa.client_max_window_bits;
  if (*own == 8) {
    if (ch_ws_deflate_new(&pa, recv_is_server, 6, 8) != NULL) abort();
    *own = 9;
  }
  ch_ws_deflate_t *rx = ch_ws_deflate_new(&pa, recv_is_server, 6, 8);
  if (rx == NULL) abort();
  ch_buf_t out = CH_BUF_INIT;
  const uint8_t *q = data, *end = data + size;
  while (q < end) {
    size_t n = *q++;
    if (n > (size_t)(end - q)) n = (size_t)(end - q);
    size_t before = out.len;
    int rc = ch_ws_deflate_inflate(rx, q, n, max_out, &out);
    if (rc == 0) {
      if (out.len - before > max_out) abort();
    } else {
      if (rc != CH_ETOOBIG && rc != CH_EPROTO) abort();
      if (out.len != before) abort();
    }
    if (out.len > ((size_t)4 << 20)) out.len = 0;
    q += n;
  }
  ch_ws_deflate_free(rx);

  /* Part B: the same bytes as plaintext, round trip. */
  if (p.server_max_window_bits == 8) p.server_max_window_bits = 9;
  if (p.client_max_window_bits == 8) p.client_max_window_bits = 9;
  ch_ws_deflate_t *tx = ch_ws_deflate_new(&p, !recv_is_server, tx_level, tx_mem);
  rx = ch_ws_deflate_new(&p, recv_is_server, 6, 8);
  if (tx == NULL || rx == NULL) abort();
  ch_buf_t wire = CH_BUF_INIT;
  q = data;
  while (q < end) {
    size_t n = *q++;
    if (n > (size_t)(end - q)) n = (size_t)(end - q);
    wire.len = out.len = 0;
    if (ch_ws_deflate_compress(tx, q, n, &wire) != 0) abort();
    if (ch_ws_deflate_inflate(rx, wire.base, wire.len, n, &out) != 0) abort();
    if (out.len != n || (n && memcmp(out.base, q, n) != 0)) abort();
    q += n;
  }
  ch_ws_deflate_free(tx);
  ch_ws_deflate_free(rx);
  ch_buf_dispose(&wire);
  ch_buf_dispose(&out);
  return 0;
}
