/*
 * router.c — linear routing table with segment-kind precedence (see router.h).
 *
 * Each route keeps a private copy of its pattern in which every '/' is
 * replaced by NUL, so segment texts (literals and parameter names) are
 * NUL-terminated strings pointing into that copy:
 *
 *   "/rooms/:id/ *rest"  ->  copy: "\0rooms\0:id\0*rest"
 *                            segs: {LIT "rooms"} {PARAM "id"} {WILD "rest"}
 *
 * Matching walks the path's segments without allocating, recording each
 * parameter as an (offset, length) slice of the path; only the winning
 * route's slices are copied into the match's buffer. The "score" of a
 * matching route is its sequence of segment kinds; comparing two scores left
 * to right gives the precedence rule (literal < param < wildcard).
 */
#include "http/router.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/err.h"

enum { CH__SEG_LIT = 0, CH__SEG_PARAM = 1, CH__SEG_WILD = 2 };
enum { CH__METH_EXACT = 0, CH__METH_HEAD_GET = 1, CH__METH_ANY = 2, CH__METH_NONE = 3 };

typedef struct {
  int kind;         /* CH__SEG_* */
  const char *text; /* literal text or param name; in the route's _copy */
  size_t len;       /* strlen(text) */
} ch__seg_t;

typedef struct {
  char *method;    /* owned copy; "*" = any */
  char *_copy;     /* owned pattern copy, '/' replaced by NUL */
  ch__seg_t *segs; /* owned, nsegs entries */
  size_t nsegs;
  void *handler, *udata; /* borrowed */
} ch__route_t;

struct ch_http_router_s {
  ch__route_t *routes; /* owned array */
  size_t n, cap;
};

typedef struct {
  size_t off, len; /* slice of the path */
} ch__slice_t;

ch_http_router_t *ch_http_router_new(void) { return CH_NEW(ch_http_router_t); }

void ch_http_router_free(ch_http_router_t *r) {
  if (r == NULL) return;
  for (size_t i = 0; i < r->n; i++) {
    free(r->routes[i].method);
    free(r->routes[i]._copy);
    free(r->routes[i].segs);
  }
  free(r->routes);
  free(r);
}

static int ch__method_ok(const char *m) {
  if (m == NULL || m[0] == '\0') return 0;
  if (strcmp(m, "*") == 0) return 1;
  for (const char *p = m; *p; p++)
    if (!((*p >= 'A' && *p <= 'Z') || *p == '-' || *p == '_')) return 0;
  return 1;
}

int ch_http_router_add(ch_http_router_t *r, const char *method, const char *pattern, void *handler,
                       void *udata) {
  if (!ch__method_ok(method) || pattern == NULL || pattern[0] != '/') return CH_EINVAL;
  char *copy = ch_xstrdup(pattern);
  size_t nsegs = 1;
  for (const char *p = pattern + 1; *p; p++) nsegs += (*p == '/');
  ch__seg_t *segs = ch_xcalloc(nsegs, sizeof(*segs));
  size_t nparams = 0;
  char *p = copy + 1;
  for (size_t i = 0; i < nsegs; i++) {
    char *end = strchr(p, '/');
    if (end != NULL) *end = '\0';
    ch__seg_t *s = &segs[i];
    if (p[0] == ':' || p[0] == '*') {
      s->kind = p[0] == ':' ? CH__SEG_PARAM : CH__SEG_WILD;
      s->text = p + 1;
      s->len = strlen(p + 1);
      if (s->len == 0 || ++nparams > CH_HTTP_MAX_PARAMS) goto Invalid;
      if (s->kind == CH__SEG_WILD && i != nsegs - 1) goto Invalid;
    } else {
      s->kind = CH__SEG_LIT;
      s->text = p;
      s->len = strlen(p);
    }
    p = end != NULL ? end + 1 : p + s->len;
  }
  if (r->n == r->cap) {
    r->cap = r->cap ? r->cap * 2 : 16;
    r->routes = ch_xrealloc(r->routes, r->cap * sizeof(*r->routes));
  }
  ch__route_t *rt = &r->routes[r->n++];
  rt->method = ch_xstrdup(method);
  rt->_copy = copy;
  rt->segs = segs;
  rt->nsegs = nsegs;
  rt->handler = handler;
  rt->udata = udata;
  return 0;
Invalid:
  free(copy);
  free(segs);
  return CH_EINVAL;
}

/* Does route rt match path? On success fills slices (one per param, in order). */
static int ch__path_match(const ch__route_t *rt, const char *path, ch__slice_t *slices) {
  if (path[0] != '/') return 0;
  size_t pos = 1; /* start of the current path segment */
  size_t plen = strlen(path);
  size_t np = 0;
  for (size_t i = 0; i < rt->nsegs; i++) {
    const ch__seg_t *s = &rt->segs[i];
    if (s->kind == CH__SEG_WILD) {
      slices[np].off = pos > plen ? plen : pos;
      slices[np].len = plen - slices[np].off;
      return 1;
    }
    if (pos > plen) return 0; /* path has fewer segments */
    const char *seg = path + pos;
    size_t slen = strcspn(seg, "/");
    if (s->kind == CH__SEG_LIT) {
      if (slen != s->len || memcmp(seg, s->text, slen) != 0) return 0;
    } else {
      if (slen == 0) return 0;
      slices[np].off = pos;
      slices[np].len = slen;
      np++;
    }
    pos += slen + 1; /* past the '/' (or one past the end for the last segment) */
  }
  return pos > plen; /* all path segments used */
}

static int ch__method_rank(const char *route_method, const char *method) {
  if (strcmp(route_method, method) == 0) return CH__METH_EXACT;
  if (strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0) return CH__METH_HEAD_GET;
  if (strcmp(route_method, "*") == 0) return CH__METH_ANY;
  return CH__METH_NONE;
}

/* <0 if a is more specific than b, >0 if less, 0 if equal. */
static int ch__cmp_specificity(const ch__route_t *a, const ch__route_t *b) {
  size_t n = a->nsegs < b->nsegs ? a->nsegs : b->nsegs;
  for (size_t i = 0; i < n; i++)
    if (a->segs[i].kind != b->segs[i].kind) return a->segs[i].kind - b->segs[i].kind;
  /* Same kinds over the common prefix and both match the same path: the
   * longer one can only be the shorter one plus a wildcard matching nothing
   * ("/a" vs "/a/ *rest" on "/a"), so the shorter one is more specific. */
  if (a->nsegs != b->nsegs) return a->nsegs > b->nsegs ? 1 : -1;
  return 0;
}

int ch_http_router_match(const ch_http_router_t *r, const char *method, const char *path,
                         ch_http_match_t *m) {
  ch__slice_t slices[CH_HTTP_MAX_PARAMS], best_slices[CH_HTTP_MAX_PARAMS];
  const ch__route_t *best = NULL;
  int best_rank = CH__METH_NONE;
  int path_matched = 0;
  for (size_t i = 0; i < r->n; i++) {
    const ch__route_t *rt = &r->routes[i];
    if (!ch__path_match(rt, path, slices)) continue;
    path_matched = 1;
    int rank = ch__method_rank(rt->method, method);
    if (rank == CH__METH_NONE) continue;
    if (best != NULL) {
      int c = ch__cmp_specificity(rt, best);
      if (c > 0 || (c == 0 && rank >= best_rank)) continue;
    }
    best = rt;
    best_rank = rank;
    memcpy(best_slices, slices, sizeof(slices));
  }
  if (best == NULL) return path_matched ? CH_EUNSUPPORTED : CH_ENOTFOUND;
  size_t used = 0, np = 0;
  for (size_t i = 0; i < best->nsegs; i++) {
    const ch__seg_t *s = &best->segs[i];
    if (s->kind == CH__SEG_LIT) continue;
    const ch__slice_t *sl = &best_slices[np];
    if (sl->len + 1 > sizeof(m->_buf) - used) return CH_ETOOBIG;
    memcpy(m->_buf + used, path + sl->off, sl->len);
    m->_buf[used + sl->len] = '\0';
    m->params[np].name = s->text;
    m->params[np].value = m->_buf + used;
    m->params[np].len = sl->len;
    used += sl->len + 1;
    np++;
  }
  m->nparams = np;
  m->handler = best->handler;
  m->udata = best->udata;
  return 0;
}

int ch_http_router_allow(const ch_http_router_t *r, const char *path, ch_buf_t *allow) {
  ch__slice_t slices[CH_HTTP_MAX_PARAMS];
  const char *seen[64];
  size_t nseen = 0;
  for (size_t i = 0; i < r->n; i++) {
    const ch__route_t *rt = &r->routes[i];
    if (!ch__path_match(rt, path, slices)) continue;
    if (strcmp(rt->method, "*") == 0) return CH_ENOTFOUND;
  }
  for (size_t i = 0; i < r->n; i++) {
    const ch__route_t *rt = &r->routes[i];
    if (!ch__path_match(rt, path, slices)) continue;
    const char *add[2] = {rt->method, strcmp(rt->method, "GET") == 0 ? "HEAD" : NULL};
    for (size_t k = 0; k < 2 && add[k] != NULL; k++) {
      size_t j = 0;
      while (j < nseen && strcmp(seen[j], add[k]) != 0) j++;
      if (j < nseen || nseen == CH_ARRAY_SIZE(seen)) continue;
      seen[nseen++] = add[k];
    }
  }
  if (nseen == 0) return CH_ENOTFOUND;
  for (size_t j = 0; j < nseen; j++) {
    if (j) ch_buf_append(allow, ", ", 2);
    ch_buf_append_str(allow, seen[j]);
  }
  return 0;
}
