/* UTF-8 validation (see utf8.h). */
#include "core/utf8.h"
#include <string.h>

size_t dn_utf8_seq_len_n(const unsigned char *p, size_t avail) {
    if (!avail) return 0;
    unsigned c = p[0];
    if (c == 0) return 0;
    if (c < 0x80) return 1;
    /* second-byte range per lead byte (RFC 3629 table): excludes overlong forms,
     * surrogates (ED A0..BF) and code points above U+10FFFF (F4 90.., F5..) */
    unsigned lo = 0x80, hi = 0xBF;
    size_t n;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) { n = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else return 0;
    if (avail < 2 || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (i >= avail || (p[i] & 0xC0) != 0x80) return 0;
    return n;
}

/* A NUL ends a sequence early (it is no continuation byte), so reading stops there. */
size_t dn_utf8_seq_len(const unsigned char *p) { return dn_utf8_seq_len_n(p, 4); }

const char *dn_utf8_problem(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c < 0x20 || c == 0x7f) return "contains control characters";
        size_t k = dn_utf8_seq_len_n(p + i, n - i);
        if (!k) return "is not valid UTF-8";
        if (k == 2 && c == 0xC2 && p[i + 1] < 0xA0) return "contains control characters"; /* C1: U+0080..U+009F */
        i += k;
    }
    return NULL;
}

int dn_utf8_text(const char *s, size_t n) { return dn_utf8_problem(s, n) == NULL; }
int dn_utf8_printable(const char *s) { return dn_utf8_problem(s, strlen(s)) == NULL; }
