/*
 * clock.c — see clock.h.
 */
#include "core/clock.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t ch_clock_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int64_t ch_clock_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ch_clock_iso8601(int64_t wall_ms, char *out) {
  time_t secs = (time_t)(wall_ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  /* Years past 9999 would not fit the fixed width: format wide, keep 24. */
  char tmp[96];
  snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(wall_ms % 1000));
  memcpy(out, tmp, CH_ISO8601_LEN);
  out[CH_ISO8601_LEN] = '\0';
}
