/*
 * static.c — document-root path resolution and MIME types (see static.h).
 *
 * Two independent defences: a lexical one (no segment starting with '.', so
 * no "." or ".." and no dotfile, is ever joined) and a canonical one (the
 * realpath of the result must start with realpath(root) + "/"), which also
 * catches symlinks pointing outside.
 */
#include "http/static.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/err.h"

/* 1 if p has a segment starting with '.' (".", "..", dotfiles such as .git)
 * or a backslash. */
static int ch__bad_segments(const char *p) {
  if (strchr(p, '\\') != NULL) return 1;
  while (*p) {
    while (*p == '/') p++;
    if (*p == '.') return 1;
    p += strcspn(p, "/");
  }
  return 0;
}

int ch_http_static_resolve(const char *root, const char *url_path, char *out, size_t outlen) {
  char rootreal[PATH_MAX], joined[PATH_MAX], real[PATH_MAX];
  struct stat st;
  if (url_path == NULL || url_path[0] != '/' || ch__bad_segments(url_path)) return CH_EPERM;
  if (realpath(root, rootreal) == NULL) return CH_ENOTFOUND;
  size_t rlen = strlen(rootreal);
  size_t ulen = strlen(url_path);
  int trailing = url_path[ulen - 1] == '/';
  int n =
      snprintf(joined, sizeof(joined), "%s%s%s", rootreal, url_path, trailing ? "index.html" : "");
  if (n < 0 || (size_t)n >= sizeof(joined)) return CH_ETOOBIG;
  if (stat(joined, &st) != 0) return CH_ENOTFOUND;
  if (S_ISDIR(st.st_mode)) {
    if ((size_t)n + sizeof("/index.html") > sizeof(joined)) return CH_ETOOBIG;
    memcpy(joined + n, "/index.html", sizeof("/index.html"));
    if (stat(joined, &st) != 0) return CH_ENOTFOUND;
  }
  if (!S_ISREG(st.st_mode)) return CH_ENOTFOUND;
  if (realpath(joined, real) == NULL) return CH_ENOTFOUND;
  /* Strictly inside the root: "<rootreal>/..." (rootreal "/" is its own prefix). */
  size_t plen = (rlen == 1) ? 0 : rlen;
  if (strncmp(real, rootreal, plen) != 0 || real[plen] != '/') return CH_EPERM;
  size_t len = strlen(real);
  if (len + 1 > outlen) return CH_ETOOBIG;
  memcpy(out, real, len + 1);
  return 0;
}

const char *ch_http_mime_type(const char *path) {
  static const struct {
    const char *ext, *type;
  } types[] = {
      {"html", "text/html; charset=utf-8"},
      {"htm", "text/html; charset=utf-8"},
      {"js", "text/javascript; charset=utf-8"},
      {"mjs", "text/javascript; charset=utf-8"},
      {"css", "text/css; charset=utf-8"},
      {"json", "application/json"},
      {"map", "application/json"},
      {"svg", "image/svg+xml"},
      {"png", "image/png"},
      {"jpg", "image/jpeg"},
      {"jpeg", "image/jpeg"},
      {"gif", "image/gif"},
      {"webp", "image/webp"},
      {"ico", "image/x-icon"},
      {"wasm", "application/wasm"},
      {"txt", "text/plain; charset=utf-8"},
      {"woff", "font/woff"},
      {"woff2", "font/woff2"},
  };
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  const char *dot = strrchr(base, '.');
  if (dot == NULL || dot == base) return "application/octet-stream";
  for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
    if (strcasecmp(dot + 1, types[i].ext) == 0) return types[i].type;
  return "application/octet-stream";
}
