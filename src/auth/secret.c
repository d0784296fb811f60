/*
 * secret.c — the hub's signing secret: data_dir/secret.key.
 *
 * File format: 64 hex digits (32 random bytes) and an optional trailing
 * newline/blanks. Mode 0600; a file that group or others may access is
 * refused (the same rule ssh applies to private keys), so a secret that has
 * been readable by other local users is never silently used.
 *
 * Creating it without a race (the hub and a CLI may both start on a fresh
 * data directory at the same moment):
 *
 *   mkstemp("secret.key.tmp.XXXXXX")   O_EXCL, mode 0600, private name
 *   write hex + "\n", fsync, close
 *   link(tmp, "secret.key")            atomic; EEXIST -> another process won
 *   unlink(tmp); fsync(dir)
 *   read "secret.key"                  everyone returns the winner's key
 *
 * A reader can therefore never see a half-written secret. On a file system
 * without hard links, the fallback is open(O_CREAT|O_EXCL, 0600) + write,
 * with readers retrying briefly on a short file.
 *
 * The key bytes live only in the caller's ch_auth_secret_t and in stack
 * buffers that are wiped before return; no message ever contains them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "auth/auth.h"
#include "auth/internal.h"
#include "core/alloc.h"
#include "core/err.h"

static int ch__hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* mkdir -p with mode 0700 for every directory created. */
static int ch__mkdirs(const char *dir, ch_buf_t *err) {
  int rc = 0;
  char *p = ch_xstrdup(dir);
  size_t n = strlen(p);
  while (n > 1 && p[n - 1] == '/') p[--n] = '\0';
  for (size_t i = 1; i <= n; i++) {
    if (p[i] != '/' && p[i] != '\0') continue;
    char saved = p[i];
    p[i] = '\0';
    if (mkdir(p, 0700) != 0 && errno != EEXIST) {
      if (err) ch_buf_printf(err, "auth: cannot create directory %s: %s\n", p, strerror(errno));
      rc = CH_EIO;
      goto Exit;
    }
    p[i] = saved;
  }
  struct stat st;
  if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
    if (err) ch_buf_printf(err, "auth: %s is not a directory\n", p);
    rc = CH_EIO;
  }
Exit:
  free(p);
  return rc;
}

/* Read and check path. CH_AGAIN: the file is shorter than a key (a writer of
 * the O_EXCL fallback may still be writing). */
static int ch__secret_read(const char *path, ch_auth_secret_t *out, ch_buf_t *err) {
  char text[160];
  int rc = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    if (errno == ENOENT) return CH_ENOTFOUND;
    if (err) ch_buf_printf(err, "auth: cannot open %s: %s\n", path, strerror(errno));
    return CH_EIO;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    if (err) ch_buf_printf(err, "auth: cannot stat %s: %s\n", path, strerror(errno));
    rc = CH_EIO;
    goto Exit;
  }
  if (!S_ISREG(st.st_mode)) {
    if (err) ch_buf_printf(err, "auth: %s is not a regular file\n", path);
    rc = CH_EPERM;
    goto Exit;
  }
  if (st.st_mode & 077) {
    if (err)
      ch_buf_printf(err,
                    "auth: %s has mode %04o: group/others may access the signing secret; "
                    "refusing to use it (fix: chmod 600 %s, and consider rotating it)\n",
                    path, (unsigned)(st.st_mode & 07777), path);
    rc = CH_EPERM;
    goto Exit;
  }
  size_t len = 0;
  for (;;) {
    ssize_t r = read(fd, text + len, sizeof text - len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      if (err) ch_buf_printf(err, "auth: cannot read %s: %s\n", path, strerror(errno));
      rc = CH_EIO;
      goto Exit;
    }
    if (r == 0) break;
    len += (size_t)r;
    if (len == sizeof text) break;
  }
  while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' ' ||
                     text[len - 1] == '\t'))
    len--;
  if (len < 2 * CH_AUTH_SECRET_LEN) {
    int all_hex = 1;
    for (size_t i = 0; i < len; i++)
      if (ch__hexval((unsigned char)text[i]) < 0) all_hex = 0;
    if (all_hex) {
      rc = CH_AGAIN;
      if (err) ch_buf_printf(err, "auth: %s is truncated (expected 64 hex digits)\n", path);
      goto Exit;
    }
  }
  if (len != 2 * CH_AUTH_SECRET_LEN) {
    if (err) ch_buf_printf(err, "auth: %s does not hold 64 hex digits\n", path);
    rc = CH_ECONFIG;
    goto Exit;
  }
  for (size_t i = 0; i < CH_AUTH_SECRET_LEN; i++) {
    int hi = ch__hexval((unsigned char)text[2 * i]), lo = ch__hexval((unsigned char)text[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      if (err) ch_buf_printf(err, "auth: %s does not hold 64 hex digits\n", path);
      OPENSSL_cleanse(out->key, sizeof out->key);
      rc = CH_ECONFIG;
      goto Exit;
    }
    out->key[i] = (unsigned char)(hi << 4 | lo);
  }
Exit:
  OPENSSL_cleanse(text, sizeof text);
  close(fd);
  return rc;
}

static int ch__write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void ch__fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
}

/* Create path with a fresh key. 0 (we created it), CH_EEXIST (someone else
 * did), CH_EIO. */
static int ch__secret_create(const char *dir, const char *path, ch_buf_t *err) {
  unsigned char key[CH_AUTH_SECRET_LEN];
  char hex[2 * CH_AUTH_SECRET_LEN + 2];
  char *tmp = NULL;
  int fd = -1, rc = 0, made_tmp = 0;
  if (RAND_bytes(key, (int)sizeof key) != 1) {
    if (err) ch_buf_printf(err, "auth: no randomness for a new secret\n");
    rc = CH_EIO;
    goto Exit;
  }
  ch__auth_hex(key, sizeof key, hex);
  hex[2 * CH_AUTH_SECRET_LEN] = '\n';
  hex[2 * CH_AUTH_SECRET_LEN + 1] = '\0';

  size_t n = strlen(path) + sizeof ".tmp.XXXXXX";
  tmp = ch_xmalloc(n);
  snprintf(tmp, n, "%s.tmp.XXXXXX", path);
  fd = mkstemp(tmp); /* O_EXCL, mode 0600 */
  if (fd < 0) {
    if (err) ch_buf_printf(err, "auth: cannot create %s: %s\n", tmp, strerror(errno));
    rc = CH_EIO;
    goto Exit;
  }
  made_tmp = 1;
  if (fchmod(fd, 0600) != 0 || ch__write_all(fd, hex, 2 * CH_AUTH_SECRET_LEN + 1) != 0 ||
      fsync(fd) != 0) {
    if (err) ch_buf_printf(err, "auth: cannot write %s: %s\n", tmp, strerror(errno));
    rc = CH_EIO;
    goto Exit;
  }
  close(fd);
  fd = -1;
  if (link(tmp, path) == 0) {
    rc = 0;
  } else if (errno == EEXIST) {
    rc = CH_EEXIST;
  } else if (errno == EPERM || errno == ENOTSUP || errno == EOPNOTSUPP || errno == ENOSYS ||
             errno == EMLINK) {
    /* No hard links here: exclusive create of the final name instead. */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 && errno == EEXIST) {
      rc = CH_EEXIST;
    } else if (fd < 0 || ch__write_all(fd, hex, 2 * CH_AUTH_SECRET_LEN + 1) != 0 || fsync(fd) != 0) {
      if (err) ch_buf_printf(err, "auth: cannot write %s: %s\n", path, strerror(errno));
      rc = CH_EIO;
    }
  } else {
    if (err) ch_buf_printf(err, "auth: cannot create %s: %s\n", path, strerror(errno));
    rc = CH_EIO;
  }
  ch__fsync_dir(dir);
Exit:
  if (fd >= 0) close(fd);
  if (made_tmp) unlink(tmp);
  free(tmp);
  OPENSSL_cleanse(key, sizeof key);
  OPENSSL_cleanse(hex, sizeof hex);
  return rc;
}

int ch_auth_secret_load(const char *data_dir, int create, ch_auth_secret_t *out, int *created,
                        ch_buf_t *err) {
  if (created) *created = 0;
  if (data_dir == NULL || data_dir[0] == '\0' || out == NULL) return CH_EINVAL;
  size_t n = strlen(data_dir) + 1 + sizeof CH_AUTH_SECRET_FILE;
  char *path = ch_xmalloc(n);
  snprintf(path, n, "%s/%s", data_dir, CH_AUTH_SECRET_FILE);
  ch_buf_t scratch = CH_BUF_INIT;
  int rc = ch__secret_read(path, out, &scratch);
  if (rc == CH_ENOTFOUND && create) {
    rc = ch__mkdirs(data_dir, err);
    if (rc != 0) goto Exit;
    rc = ch__secret_create(data_dir, path, err);
    if (rc != 0 && rc != CH_EEXIST) goto Exit;
    if (rc == 0 && created) *created = 1;
    scratch.len = 0;
    rc = ch__secret_read(path, out, &scratch);
  }
  /* A short file may be a concurrent O_EXCL-fallback writer: retry briefly. */
  for (int i = 0; rc == CH_AGAIN && i < 50; i++) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
    scratch.len = 0;
    rc = ch__secret_read(path, out, &scratch);
  }
  if (rc == CH_AGAIN) rc = CH_ECONFIG;
  if (rc == CH_ENOTFOUND) {
    if (err) ch_buf_printf(err, "auth: %s does not exist\n", path);
  } else if (rc != 0 && err) {
    ch_buf_append(err, scratch.base, scratch.len);
  }
Exit:
  if (rc != 0) OPENSSL_cleanse(out->key, sizeof out->key);
  ch_buf_dispose(&scratch);
  free(path);
  return rc;
}

void ch_auth_secret_dispose(ch_auth_secret_t *s) {
  if (s) OPENSSL_cleanse(s->key, sizeof s->key);
}
