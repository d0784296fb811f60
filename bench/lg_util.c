/*
 * lg_util.c — the small pure pieces of chorus-loadgen: the latency histogram,
 * ws:// URL parsing (loopback only), payload stamps, randomness, the
 * Sec-WebSocket-Accept computation, /proc readings of the server and the
 * option parsing helpers every mode shares. See lg.h for the contracts.
 *
 * Histogram layout (log-linear, like HdrHistogram with 6 significant bits):
 *
 *   v < 128            bucket v                      (exact)
 *   v in [2^m, 2^m+1)  bucket (m-6)*64 + (v >> (m-6))  (64 buckets per octave)
 *
 * so every bucket is at most 1/64 of its value wide and recording is a
 * count-leading-zeros, a shift and an increment: no allocation, no search.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>

#include "lg.h"
#include "core/err.h"

/* ---- histogram ---------------------------------------------------------------------------- */

static size_t lg__hist_index(uint64_t v) {
  if (v < 128) return (size_t)v;
  int m = 63 - __builtin_clzll(v); /* 7..63 */
  int shift = m - 6;
  return (size_t)shift * 64 + (size_t)(v >> shift);
}

static uint64_t lg__hist_mid(size_t idx) {
  if (idx < 128) return idx;
  int shift = (int)(idx / 64) - 1;
  uint64_t sub = idx % 64 + 64;
  uint64_t lo = sub << shift;
  return lo + (((uint64_t)1 << shift) >> 1);
}

void lg_hist_reset(lg_hist_t *h) { memset(h, 0, sizeof(*h)); }

void lg_hist_record(lg_hist_t *h, uint64_t ns) {
  h->counts[lg__hist_index(ns)]++;
  h->n++;
  if (ns > h->max) h->max = ns;
}

uint64_t lg_hist_quantile(const lg_hist_t *h, double q) {
  if (h->n == 0) return 0;
  if (q < 0) q = 0;
  if (q > 1) q = 1;
  uint64_t rank = (uint64_t)(q * (double)h->n + 0.999999);
  if (rank == 0) rank = 1;
  uint64_t seen = 0;
  for (size_t i = 0; i < LG_HIST_BUCKETS; i++) {
    seen += h->counts[i];
    if (seen >= rank) {
      uint64_t v = lg__hist_mid(i);
      return v > h->max ? h->max : v;
    }
  }
  return h->max;
}

/* ---- URLs --------------------------------------------------------------------------------- */

int lg_url_parse(const char *s, lg_url_t *u, char *err, size_t errlen) {
  memset(u, 0, sizeof(*u));
  if (strncmp(s, "ws://", 5) != 0) {
    snprintf(err, errlen, "url must start with ws:// (got '%s')", s);
    return CH_EINVAL;
  }
  const char *p = s + 5;
  const char *slash = strchr(p, '/');
  size_t hostlen = slash ? (size_t)(slash - p) : strlen(p);
  if (hostlen == 0 || hostlen >= sizeof(u->host)) {
    snprintf(err, errlen, "bad host in '%s'", s);
    return CH_EINVAL;
  }
  memcpy(u->host, p, hostlen);
  const char *path = slash ? slash : "/";
  if (strlen(path) >= sizeof(u->path)) {
    snprintf(err, errlen, "path too long in '%s'", s);
    return CH_EINVAL;
  }
  strcpy(u->path, path);

  char name[128];
  const char *colon = strrchr(u->host, ':');
  if (colon == NULL) {
    snprintf(err, errlen, "url needs an explicit port: '%s'", s);
    return CH_EINVAL;
  }
  size_t nlen = (size_t)(colon - u->host);
  memcpy(name, u->host, nlen);
  name[nlen] = '\0';
  char *end = NULL;
  errno = 0;
  long port = strtol(colon + 1, &end, 10);
  if (errno || end == colon + 1 || *end != '\0' || port < 1 || port > 65535) {
    snprintf(err, errlen, "bad port in '%s'", s);
    return CH_EINVAL;
  }
  const char *ip = strcmp(name, "localhost") == 0 ? "127.0.0.1" : name;
  if (uv_ip4_addr(ip, (int)port, &u->addr) != 0) {
    snprintf(err, errlen, "host must be localhost or an IPv4 loopback address: '%s'", name);
    return CH_EINVAL;
  }
  if ((ntohl(u->addr.sin_addr.s_addr) >> 24) != 127) {
    snprintf(err, errlen, "refusing non-loopback target %s (only 127.0.0.0/8 is allowed)", name);
    return CH_EINVAL;
  }
  return 0;
}

/* ---- payloads ----------------------------------------------------------------------------- */

static uint8_t lg__filler[LG_MAX_PAYLOAD];
static int lg__filler_ready;

const uint8_t *lg_filler_table(void) {
  if (!lg__filler_ready) {
    for (size_t i = 0; i < LG_MAX_PAYLOAD; i++) lg__filler[i] = lg_filler(i);
    lg__filler_ready = 1;
  }
  return lg__filler;
}

static const char lg__hex[] = "0123456789abcdef";

void lg_hex16(uint8_t *p, uint64_t v) {
  for (int i = 15; i >= 0; i--) {
    p[i] = (uint8_t)lg__hex[v & 15];
    v >>= 4;
  }
}

void lg_payload_stamp(uint8_t *p, uint64_t seq, uint64_t t_ns) {
  lg_hex16(p, seq);
  lg_hex16(p + 16, t_ns);
}

int lg_unhex16(const uint8_t *p, uint64_t *out) {
  uint64_t v = 0;
  for (int i = 0; i < 16; i++) {
    uint8_t ch = p[i];
    unsigned d;
    if (ch >= '0' && ch <= '9') d = ch - '0';
    else if (ch >= 'a' && ch <= 'f') d = (unsigned)(ch - 'a' + 10);
    else return CH_EPROTO;
    v = v << 4 | d;
  }
  *out = v;
  return 0;
}

int lg_payload_parse(const uint8_t *p, uint64_t *seq, uint64_t *t_ns) {
  if (lg_unhex16(p, seq) < 0 || lg_unhex16(p + 16, t_ns) < 0) return CH_EPROTO;
  return 0;
}

/* ---- randomness and the accept key -------------------------------------------------------- */

int lg_random(void *p, size_t n) {
  uint8_t *b = p;
  while (n > 0) {
    ssize_t r = getrandom(b, n, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return CH_EIO;
    }
    b += r;
    n -= (size_t)r;
  }
  return 0;
}

int lg_ws_accept(const char *key, char *out, size_t outlen) {
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  char cat[128];
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  int n = snprintf(cat, sizeof(cat), "%s%s", key, guid);
  if (n < 0 || (size_t)n >= sizeof(cat) || outlen < 29) return CH_EINVAL;
  if (EVP_Digest(cat, (size_t)n, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20) return CH_EIO;
  EVP_EncodeBlock((unsigned char *)out, md, 20); /* 28 chars + NUL */
  return 0;
}

/* ---- the server's process, options ---------------------------------------------------------- */

long lg_proc_rss_kb(long pid) {
  char path[64], line[256];
  snprintf(path, sizeof(path), "/proc/%ld/status", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  long kb = -1;
  while (fgets(line, sizeof(line), f)) {
    if (strncmp(line, "VmRSS:", 6) == 0) {
      kb = strtol(line + 6, NULL, 10);
      break;
    }
  }
  fclose(f);
  return kb;
}

uint64_t lg_proc_cpu_ticks(long pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return 0;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  if (p == NULL) return 0;
  unsigned long ut = 0, st = 0;
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return 0;
  return (uint64_t)ut + st;
}

void lg_keep_first_error(char *first, size_t n, const char *why) {
  if (first[0] == '\0') snprintf(first, n, "%s", why);
}

void lg_keep_fatal(char *fatal, size_t n, const char *why, const char *first_error) {
  if (fatal[0] != '\0') return;
  if (first_error[0]) snprintf(fatal, n, "%s (first error: %s)", why, first_error);
  else snprintf(fatal, n, "%s", why);
}

int lg_parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out) {
  char *end = NULL;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return CH_EINVAL;
  *out = (unsigned)v;
  return 0;
}

int lg_parse_sec(const char *s, double lo, double hi, double *out) {
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= lo && v <= hi)) return CH_EINVAL;
  *out = v;
  return 0;
}

void lg_raise_nofile(unsigned need) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)need + 32 > rl.rlim_cur) {
    fprintf(stderr, "chorus-loadgen: warning: %u connections need more descriptors than the limit %lu\n",
            need, (unsigned long)rl.rlim_cur);
  }
}
