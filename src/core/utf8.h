/* The one UTF-8 check of defectnet (RFC 3629): metadata values (HTTP query, headers,
 * multipart fields, MQTT user properties, topic levels, JSON envelopes), watched file
 * names, MQTT topic filters, client ids and topic templates all go through it, and the
 * log escaper (dn_pipeline_log) uses dn_utf8_seq_len to tell valid sequences from
 * bytes it must escape. "Text" is valid UTF-8 without control characters: no C0
 * (U+0000..U+001F, NUL included), no DEL, no C1 (U+0080..U+009F). Pure functions. */
#ifndef DN_CORE_UTF8_H
#define DN_CORE_UTF8_H
#include <stddef.h>

/* Length (1..4) of the valid UTF-8 sequence starting at p, or 0 when the bytes there are
 * not valid UTF-8 (stray continuation byte, overlong form, UTF-16 surrogate, beyond
 * U+10FFFF, truncated). *p == 0 counts as invalid. p must be NUL-terminated (or have
 * 4 readable bytes): the check stops at the first byte that cannot continue. */
size_t dn_utf8_seq_len(const unsigned char *p);
/* The same on p[0..n): a sequence cut by the end of the buffer is invalid. */
size_t dn_utf8_seq_len_n(const unsigned char *p, size_t n);
/* NULL if s[0..n) is text (see above; n == 0 is text), else the problem:
 * "contains control characters" or "is not valid UTF-8". */
const char *dn_utf8_problem(const char *s, size_t n);
/* 1 if s[0..n) is text, else 0. */
int dn_utf8_text(const char *s, size_t n);
/* 1 if the NUL-terminated s is text, else 0. */
int dn_utf8_printable(const char *s);

#endif
