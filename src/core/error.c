/* Per-thread error messages: the failing call stores its message here and
 * returns a status code; callers retrieve it with dn_last_error(). */
#include "core.h"
#include <stdarg.h>
#include <string.h>

#define DN_ERRLEN 1024
static _Thread_local char g_err[DN_ERRLEN];

const char *dn_last_error(void) { return g_err; }
void dn_clear_error(void) { g_err[0] = 0; }

dn_status dn_fail(dn_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    /* one line, always */
    for (char *p = g_err; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    return code;
}

dn_status dn_fail_prefix(dn_status code, const char *fmt, ...) {
    char old[DN_ERRLEN], pre[DN_ERRLEN];
    memcpy(old, g_err, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    if (old[0]) return dn_fail(code, "%s: %s", pre, old);
    return dn_fail(code, "%s", pre);
}
