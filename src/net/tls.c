/*
 * tls.c — OpenSSL over memory BIOs (see tls.h).
 *
 * Plaintext written before the handshake has finished waits in `early`
 * (owned) and is encrypted as soon as SSL_do_handshake succeeds.
 */
#include "net/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"

struct ch_tls_s {
  SSL *ssl;
  BIO *rbio;      /* network -> SSL (owned by ssl) */
  BIO *wbio;      /* SSL -> network (owned by ssl) */
  ch_buf_t early; /* plaintext queued before the handshake completed */
  int ready;      /* handshake done */
};

static SSL_CTX *ch__tls_ctx;

int ch_tls_setup(const char *cert_file, const char *key_file, ch_buf_t *err) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == NULL) goto Fail;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
    ch_buf_printf(err, "tls-cert '%s': ", cert_file);
    goto Fail;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
    ch_buf_printf(err, "tls-key '%s': ", key_file);
    goto Fail;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ch_buf_printf(err, "tls-key does not match tls-cert: ");
    goto Fail;
  }
  ch__tls_ctx = ctx;
  return 0;
Fail: {
  char msg[256];
  ERR_error_string_n(ERR_get_error(), msg, sizeof(msg));
  ch_buf_append_str(err, msg);
  SSL_CTX_free(ctx);
  return CH_ETLS;
}
}

void ch_tls_teardown(void) {
  SSL_CTX_free(ch__tls_ctx);
  ch__tls_ctx = NULL;
}

int ch_tls_enabled(void) { return ch__tls_ctx != NULL; }

ch_tls_t *ch_tls_new(void) {
  ch_tls_t *t = ch_xcalloc(1, sizeof(*t));
  t->ssl = SSL_new(ch__tls_ctx);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(t->rbio, -1);
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
  SSL_set_accept_state(t->ssl);
  return t;
}

void ch_tls_free(ch_tls_t *t) {
  if (t == NULL) return;
  SSL_free(t->ssl);
  ch_buf_dispose(&t->early);
  free(t);
}

static int ch__tls_write_all(ch_tls_t *t, const void *p, size_t n) {
  while (n > 0) {
    int w = SSL_write(t->ssl, p, n > 1u << 30 ? 1 << 30 : (int)n);
    if (w <= 0) return CH_ETLS;
    p = (const char *)p + w;
    n -= (size_t)w;
  }
  return 0;
}

int ch_tls_read(ch_tls_t *t, const char *in, size_t n, int (*plain)(void *ud, char *p, size_t n),
                void *ud) {
  if (BIO_write(t->rbio, in, (int)n) != (int)n) return CH_ETLS;
  if (!t->ready) {
    int r = SSL_do_handshake(t->ssl);
    if (r != 1) {
      int e = SSL_get_error(t->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
      ch_log_debug("tls handshake failed: %s", ERR_reason_error_string(ERR_peek_error()));
      ERR_clear_error();
      return CH_ETLS;
    }
    t->ready = 1;
    if (t->early.len) {
      int w = ch__tls_write_all(t, t->early.base, t->early.len);
      ch_buf_dispose(&t->early);
      if (w < 0) return w;
    }
  }
  char buf[16384];
  for (;;) {
    int r = SSL_read(t->ssl, buf, sizeof(buf));
    if (r > 0) {
      int pr = plain(ud, buf, (size_t)r);
      if (pr < 0) return pr;
      continue;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
    if (e == SSL_ERROR_ZERO_RETURN) return CH_ECLOSED;
    ERR_clear_error();
    return CH_ETLS;
  }
}

int ch_tls_write(ch_tls_t *t, const void *p, size_t n) {
  if (!t->ready) {
    ch_buf_append(&t->early, p, n);
    return 0;
  }
  return ch__tls_write_all(t, p, n);
}

int ch_tls_has_output(ch_tls_t *t) { return BIO_ctrl_pending(t->wbio) > 0; }

ch_chunk_t *ch_tls_take_output(ch_tls_t *t) {
  size_t n = BIO_ctrl_pending(t->wbio);
  if (n == 0) return NULL;
  ch_chunk_t *k = ch_chunk_new(n);
  int r = BIO_read(t->wbio, k->data, (int)n);
  k->len = r > 0 ? (size_t)r : 0;
  return k;
}
