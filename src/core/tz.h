/* Time zones for reports: UTC offsets at an instant, from the system's zoneinfo
 * (TZif files, $TZDIR or /usr/share/zoneinfo), or a fixed offset. Thread-safe
 * (no TZ environment variable, no localtime). Beyond the file's last transition
 * the last offset applies (Debian's files list transitions up to 2037).
 *
 * Ownership: dn_tz_load fills a caller-owned dn_tz; release with dn_tz_free. */
#ifndef DN_CORE_TZ_H
#define DN_CORE_TZ_H
#include "defectnet.h"
#include <stdint.h>

typedef struct dn_tz {
    char name[64];
    int n;             /* transitions (0: fixed offset) */
    int64_t *at;       /* [n] unix seconds of each transition, increasing */
    int32_t *off;      /* [n] UTC offset in seconds from at[i] on */
    int32_t off0;      /* offset before the first transition, or the fixed offset */
} dn_tz;

/* name: NULL/""/"UTC"/"Z" -> UTC; "+HH", "+HH:MM", "-HHMM", "UTC+2" -> fixed offsets;
 * else an IANA zone name ("Europe/Berlin"). DN_ERR_ARG naming the zone otherwise. */
dn_status dn_tz_load(const char *name, dn_tz *tz);
void dn_tz_free(dn_tz *tz);
/* Seconds to add to a UTC time t to get the local wall-clock time. */
int32_t dn_tz_offset(const dn_tz *tz, double t);

#endif
