/*
 * router.h — method + path-pattern routing table.
 *
 * Patterns are '/'-separated segments matched against the decoded request
 * path, segment by segment:
 *
 *     /rooms              literal segment: matches exactly (case-sensitive)
 *     /rooms/:id          parameter: matches one NON-empty segment, captured as "id"
 *     /static/ *path      trailing wildcard (no space): matches the rest of the path,
 *                         zero or more segments, slashes included ("", "a", "a/b");
 *                         "/static" and "/static/" both give path=""
 *
 * The path splits like the pattern: "/" is one empty segment, "/a/" is "a"
 * then an empty segment (so "/a" and "/a/" are different routes).
 *
 * Precedence, when several routes match a path: compare the patterns segment
 * by segment from the left; at the first position where they differ a literal
 * beats a parameter, which beats a wildcard. Among equally specific patterns
 * an exact method beats HEAD served by a GET route, which beats "*"; then the
 * route added first wins.
 *
 * Methods: "GET", "POST", ... (case-sensitive, as HTTP methods are) or "*"
 * for any method. A HEAD request matches GET routes (the caller sends the
 * head only).
 *
 * Param values: ch_http_router_match() copies each value, NUL-terminated,
 * into m->_buf inside the match struct; params[i].value points there and
 * params[i].name points into the router's copy of the pattern. So values are
 * valid as long as *m is (do not copy a match struct by value and keep using
 * the copy's values after the original is gone), names as long as the router.
 * Values are not decoded again (the request path is already decoded).
 *
 * The table is a flat array scanned linearly: a hub has tens of routes, and
 * the scan does no allocation. Build the table before serving; matching is
 * read-only and may run from several threads at once.
 */
#ifndef CH_HTTP_ROUTER_H
#define CH_HTTP_ROUTER_H

#include <stddef.h>

#include "core/buf.h"

#define CH_HTTP_MAX_PARAMS 8
#define CH_HTTP_MATCH_BUF 4096 /* bytes for all param values of one match, NULs included */

typedef struct {
  const char *name; /* borrowed from the router (pattern copy), without ':' or '*' */
  char *value;      /* NUL-terminated copy in the match's _buf */
  size_t len;       /* strlen(value) */
} ch_http_param_t;

typedef struct {
  void *handler; /* as given to ch_http_router_add */
  void *udata;   /* as given to ch_http_router_add */
  ch_http_param_t params[CH_HTTP_MAX_PARAMS];
  size_t nparams;
  char _buf[CH_HTTP_MATCH_BUF]; /* storage of the param values */
} ch_http_match_t;

typedef struct ch_http_router_s ch_http_router_t;

ch_http_router_t *ch_http_router_new(void);
/* Free the router and its pattern copies (handlers/udata are not touched). NULL ok. */
void ch_http_router_free(ch_http_router_t *r);

/* Add a route. method: "GET" etc. or "*" (copied). pattern: starts with '/',
 * at most CH_HTTP_MAX_PARAMS parameters, a wildcard only as the last segment,
 * parameter names non-empty (copied). handler/udata are opaque (borrowed).
 * Returns 0 or CH_EINVAL (bad method or pattern; nothing added). */
int ch_http_router_add(ch_http_router_t *r, const char *method, const char *pattern, void *handler,
                       void *udata);

/* Find the route for method + path. m is filled on success.
 * Returns 0; CH_ENOTFOUND (answer 404) when no pattern matches path;
 * CH_EUNSUPPORTED (answer 405 with ch_http_router_allow) when patterns match
 * but none for this method; CH_ETOOBIG (answer 414) when the param values do
 * not fit in CH_HTTP_MATCH_BUF. */
int ch_http_router_match(const ch_http_router_t *r, const char *method, const char *path,
                         ch_http_match_t *m);

/* Append to allow the methods of every route whose pattern matches path, in
 * order of addition, without duplicates, ", "-separated, "HEAD" added after
 * "GET" (for an Allow header). Returns 0, or CH_ENOTFOUND with allow untouched
 * when no pattern matches (or a "*" route matches: then every method is allowed). */
int ch_http_router_allow(const ch_http_router_t *r, const char *path, ch_buf_t *allow);

#endif
