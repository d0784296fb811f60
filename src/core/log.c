/*
 * log.c — see log.h. One record = one write(2) of one line.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"

static ch_log_level_t ch__log_level = CH_LOG_INFO;
static int ch__log_json;
static const char *const ch__log_names[] = {"error", "warn", "info", "debug"};

void ch_log_setup(ch_log_level_t level, int json) {
  ch__log_level = level;
  ch__log_json = json;
}

int ch_log_level_parse(const char *s, ch_log_level_t *out) {
  for (int i = 0; i <= CH_LOG_DEBUG; i++) {
    if (strcmp(s, ch__log_names[i]) == 0) {
      *out = (ch_log_level_t)i;
      return 0;
    }
  }
  return CH_EINVAL;
}

int ch_log_enabled(ch_log_level_t level) { return level <= ch__log_level; }

void ch_log(ch_log_level_t level, const char *fmt, ...) {
  if (!ch_log_enabled(level)) return;
  char ts[32];
  ch_clock_iso8601(ch_clock_wall_ms(), ts);
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (n < 0) return;
  size_t mlen = (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1;

  char line[4096 + 256];
  ch_buf_t b = CH_BUF_INIT;
  if (ch__log_json) {
    ch_buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts, ch__log_names[level]);
    ch_buf_append_json_str(&b, msg, mlen);
    ch_buf_append_str(&b, "\"}\n");
  } else {
    ch_buf_printf(&b, "%s %-5s %.*s\n", ts, ch__log_names[level], (int)mlen, msg);
  }
  size_t len = b.len < sizeof(line) ? b.len : sizeof(line);
  memcpy(line, b.base, len);
  ch_buf_dispose(&b);
  ssize_t w = write(STDERR_FILENO, line, len);
  (void)w;
}
