/* Zoneinfo (TZif, RFC 8536) reader and fixed offsets; see tz.h. */
#include "core/tz.h"
#include "core/core.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static int64_t be64(const uint8_t *p) { return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4)); }

/* "+HH", "+HH:MM", "+HHMM" after an optional "UTC"/"GMT"; -1 if not one. */
static int parse_fixed(const char *s, int32_t *off) {
    if (!strncmp(s, "UTC", 3) || !strncmp(s, "GMT", 3)) s += 3;
    if (*s != '+' && *s != '-') return -1;
    int sign = *s++ == '-' ? -1 : 1, h = 0, m = 0, n = 0;
    if (sscanf(s, "%2d%n", &h, &n) != 1 || n < 1) return -1;
    s += n;
    if (*s == ':') s++;
    if (*s) {
        if (sscanf(s, "%2d%n", &m, &n) != 1 || n != 2 || s[n]) return -1;
    }
    if (h > 14 || m > 59) return -1;
    *off = sign * (h * 3600 + m * 60);
    return 0;
}

void dn_tz_free(dn_tz *tz) {
    if (!tz) return;
    free(tz->at);
    free(tz->off);
    tz->at = NULL;
    tz->off = NULL;
    tz->n = 0;
}

/* Parses one TZif data block (v1: 4-byte times, v2+: 8-byte) starting at p. */
static dn_status parse_block(const uint8_t *p, size_t len, int tsize, const char *name, dn_tz *tz, size_t *used) {
    if (len < 44 || memcmp(p, "TZif", 4)) return dn_fail(DN_ERR_FORMAT, "time zone %s: not a TZif file", name);
    uint32_t isut = be32(p + 20), isstd = be32(p + 24), leap = be32(p + 28), timecnt = be32(p + 32),
             typecnt = be32(p + 36), charcnt = be32(p + 40);
    if (timecnt > 100000 || typecnt < 1 || typecnt > 256 || charcnt > 100000 || leap > 100000 || isut > 256 || isstd > 256)
        return dn_fail(DN_ERR_FORMAT, "time zone %s: implausible TZif header", name);
    size_t need = 44 + (size_t)timecnt * tsize + timecnt + (size_t)typecnt * 6 + charcnt + (size_t)leap * (tsize + 4) +
                  isstd + isut;
    if (need > len) return dn_fail(DN_ERR_FORMAT, "time zone %s: truncated TZif file", name);
    *used = need;
    const uint8_t *times = p + 44, *idx = times + (size_t)timecnt * tsize, *types = idx + timecnt;
    for (uint32_t i = 0; i < timecnt; i++)
        if (idx[i] >= typecnt) return dn_fail(DN_ERR_FORMAT, "time zone %s: bad type index", name);
    dn_tz_free(tz);
    tz->at = dn_malloc((size_t)(timecnt ? timecnt : 1) * sizeof *tz->at);
    tz->off = dn_malloc((size_t)(timecnt ? timecnt : 1) * sizeof *tz->off);
    if (!tz->at || !tz->off) { dn_tz_free(tz); return DN_ERR_NOMEM; }
    for (uint32_t i = 0; i < timecnt; i++) {
        tz->at[i] = tsize == 8 ? be64(times + 8 * i) : (int64_t)(int32_t)be32(times + 4 * i);
        tz->off[i] = (int32_t)be32(types + 6 * idx[i]);
    }
    tz->n = (int)timecnt;
    /* before the first transition: the first standard-time type (RFC 8536 3.2), else type 0 */
    tz->off0 = (int32_t)be32(types);
    for (uint32_t k = 0; k < typecnt; k++)
        if (!types[6 * k + 4]) { tz->off0 = (int32_t)be32(types + 6 * k); break; }
    return DN_OK;
}

dn_status dn_tz_load(const char *name, dn_tz *tz) {
    memset(tz, 0, sizeof *tz);
    if (!name || !*name || !strcmp(name, "UTC") || !strcmp(name, "Z") || !strcmp(name, "GMT")) {
        snprintf(tz->name, sizeof tz->name, "UTC");
        return DN_OK;
    }
    snprintf(tz->name, sizeof tz->name, "%.63s", name);
    if (!parse_fixed(name, &tz->off0)) return DN_OK;
    if (strlen(name) > 60 || name[0] == '/' || strstr(name, "..") || strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_+-") != strlen(name))
        return dn_fail(DN_ERR_ARG, "time zone '%.60s': expected an IANA name (Europe/Berlin), UTC or an offset (+02:00)", name);
    const char *dir = getenv("TZDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", name);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (dn_read_file(path, 1 << 20, &buf, &len))
        return dn_fail(DN_ERR_ARG, "time zone '%s': unknown (no %s)", name, path);
    size_t used = 0;
    dn_status st = parse_block(buf, len, 4, name, tz, &used);
    if (!st && buf[4] >= '2') st = parse_block(buf + used, len - used, 8, name, tz, &used);
    free(buf);
    return st;
}

int32_t dn_tz_offset(const dn_tz *tz, double t) {
    if (!tz || !tz->n || t < (double)tz->at[0]) return tz ? tz->off0 : 0;
    int lo = 0, hi = tz->n - 1; /* last transition <= t */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if ((double)tz->at[mid] <= t) lo = mid;
        else hi = mid - 1;
    }
    return tz->off[lo];
}
