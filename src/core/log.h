/*
 * log.h — leveled logging to stderr, as text or one JSON object per line.
 *
 * The level and format are process-wide and set once at start-up, before any
 * loop thread starts; after that they are only read. Each record is built in
 * a local buffer and written with one write(2), so lines from several loop
 * threads never interleave. Never pass a secret (token, key, PIN) to a log
 * call: records are meant to be shipped to shared log stores.
 */
#ifndef CH_CORE_LOG_H
#define CH_CORE_LOG_H

typedef enum { CH_LOG_ERROR = 0, CH_LOG_WARN, CH_LOG_INFO, CH_LOG_DEBUG } ch_log_level_t;

void ch_log_setup(ch_log_level_t level, int json);
/* Parse "error|warn|info|debug"; returns 0 or CH_EINVAL. */
int ch_log_level_parse(const char *s, ch_log_level_t *out);
int ch_log_enabled(ch_log_level_t level);
void ch_log(ch_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define ch_log_error(...) ch_log(CH_LOG_ERROR, __VA_ARGS__)
#define ch_log_warn(...) ch_log(CH_LOG_WARN, __VA_ARGS__)
#define ch_log_info(...) ch_log(CH_LOG_INFO, __VA_ARGS__)
#define ch_log_debug(...) \
  do {                                                  \
    if (ch_log_enabled(CH_LOG_DEBUG)) ch_log(CH_LOG_DEBUG, __VA_ARGS__); \
  } while (0)

#endif
