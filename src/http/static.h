/*
 * static.h — mapping request paths to files under a document root.
 *
 * Pure resolution: no file is opened, only stat(2) and realpath(3) are used.
 *
 *   url_path (decoded, "/a/b.js") --reject dot-segments, backslash--> root + url_path
 *     --directory or trailing '/'--> + "index.html"
 *     --realpath--> must lie strictly inside realpath(root)   (symlinks included)
 *     --regular file--> out
 *
 * The caller opens `out` right after; the window between the check and the
 * open only matters if someone can rewrite the document root, which the hub
 * never does.
 */
#ifndef CH_HTTP_STATIC_H
#define CH_HTTP_STATIC_H

#include <stddef.h>

/* Resolve url_path (the request's decoded path: starts with '/', no query)
 * under the directory root into the canonical absolute path of a regular file,
 * written NUL-terminated to out[0..outlen).
 * "/" and directories map to their index.html.
 * Returns 0;
 *   CH_EPERM     url_path has a segment starting with '.' ("." "..", dotfiles),
 *                a backslash, does not start with '/', or the resolved file lies
 *                outside root (symlink escape);
 *   CH_ENOTFOUND no such regular file (or root itself is missing);
 *   CH_ETOOBIG   the path does not fit in out or PATH_MAX (answer 404/414). */
int ch_http_static_resolve(const char *root, const char *url_path, char *out, size_t outlen);

/* Content-Type for path by its extension (case-insensitive): html/htm, js/mjs,
 * css, json/map, svg, png, jpg/jpeg, gif, webp, ico, wasm, txt, woff/woff2;
 * textual types carry "; charset=utf-8". Default "application/octet-stream".
 * Static string. */
const char *ch_http_mime_type(const char *path);

#endif
