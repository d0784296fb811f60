/*
 * tls.h — TLS (wss://, https://) with OpenSSL over memory BIOs.
 *
 * The socket stays a plain libuv TCP handle; OpenSSL never touches it.
 * Ciphertext read from the socket is written into the read BIO and
 * SSL_read() yields plaintext for the protocol; plaintext to send goes
 * through SSL_write() into the write BIO, which the connection's flush drains
 * into one chunk per loop turn:
 *
 *   socket ──ciphertext──> rbio ─SSL_read─> plaintext ─> protocol
 *   protocol ─SSL_write─> wbio ──ch_tls_take_output──> outq ──> socket
 *
 * One process-wide SSL_CTX, set up at start-up from --tls-cert/--tls-key.
 */
#ifndef CH_NET_TLS_H
#define CH_NET_TLS_H

#include <stddef.h>

#include "core/buf.h"

typedef struct ch_tls_s ch_tls_t;

/* Load certificate chain and key; 0 or CH_ETLS with a message in err. */
int ch_tls_setup(const char *cert_file, const char *key_file, ch_buf_t *err);
void ch_tls_teardown(void);
int ch_tls_enabled(void);

ch_tls_t *ch_tls_new(void);
void ch_tls_free(ch_tls_t *t);
/* Feed ciphertext; plaintext is passed to plain(ud, data, len). Returns 0,
 * the first negative value plain() returned, or CH_ETLS (handshake/record
 * failure: flush the pending output — an alert — and close). */
int ch_tls_read(ch_tls_t *t, const char *in, size_t n, int (*plain)(void *ud, char *p, size_t n),
                void *ud);
/* Encrypt plaintext into the pending output. 0 or CH_ETLS. Data written
 * before the handshake completes is buffered by OpenSSL's BIO pair semantics. */
int ch_tls_write(ch_tls_t *t, const void *p, size_t n);
int ch_tls_has_output(ch_tls_t *t);
/* Pending ciphertext as one chunk (the caller's reference), or NULL. */
ch_chunk_t *ch_tls_take_output(ch_tls_t *t);

#endif
