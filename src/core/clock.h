/*
 * clock.h — time sources: monotonic milliseconds for timeouts, wall-clock
 * milliseconds for timestamps, and ISO 8601 UTC formatting with milliseconds
 * ("2025-11-18T12:08:00.000Z", exactly 24 characters).
 */
#ifndef CH_CORE_CLOCK_H
#define CH_CORE_CLOCK_H

#include <stdint.h>

#define CH_ISO8601_LEN 24

uint64_t ch_clock_mono_ms(void);
int64_t ch_clock_wall_ms(void);
/* Writes CH_ISO8601_LEN chars plus NUL into out (at least 25 bytes). */
void ch_clock_iso8601(int64_t wall_ms, char *out);

#endif
