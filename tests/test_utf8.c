/* The one UTF-8 check (src/core/utf8.h), used by HTTP metadata, watched file names,
 * MQTT topics/user properties/envelopes and the log escaper: RFC 3629 boundaries,
 * control characters (C0, DEL, C1), NUL inside length-delimited text, sequences cut
 * by the end of a buffer. The fuzz target "names" checks the same functions against a
 * reference decoder on random input; these are the named edge cases. */
#include "harness.h"
#include "core/utf8.h"
#include "serve/multipart.h"
#include <string.h>

#define T(s) dn_utf8_text(s, sizeof(s) - 1)

TEST(valid_text) {
    CHECK(T(""));
    CHECK(T("line-1 / camera_2"));
    CHECK(T("\xc3\xa4\xe2\x82\xac"));           /* U+00E4, U+20AC */
    CHECK(T("\xc2\xa0"));                       /* U+00A0: first after C1 */
    CHECK(T("\xed\x9f\xbf"));                   /* U+D7FF: last before surrogates */
    CHECK(T("\xee\x80\x80"));                   /* U+E000 */
    CHECK(T("\xef\xbf\xbd"));                   /* U+FFFD */
    CHECK(T("\xf0\x90\x80\x80"));               /* U+10000 */
    CHECK(T("\xf4\x8f\xbf\xbf"));               /* U+10FFFF */
    CHECK(dn_utf8_printable("plant/L\xc3\xa4/image"));
}

TEST(invalid_or_control) {
    CHECK(!T("a\x01"));
    CHECK(!T("a\nb"));
    CHECK(!T("\x7f"));                          /* DEL */
    CHECK(!T("\xc2\x80"));                      /* U+0080: C1 */
    CHECK(!T("\xc2\x85"));                      /* NEL */
    CHECK(!T("\xc2\x9f"));                      /* U+009F */
    CHECK(!T("\xc0\xaf"));                      /* overlong '/' */
    CHECK(!T("\xc1\xbf"));
    CHECK(!T("\xe0\x9f\xbf"));                  /* overlong 3-byte */
    CHECK(!T("\xf0\x8f\xbf\xbf"));              /* overlong 4-byte */
    CHECK(!T("\xed\xa0\x80"));                  /* U+D800 */
    CHECK(!T("\xed\xbf\xbf"));                  /* U+DFFF */
    CHECK(!T("\xf4\x90\x80\x80"));              /* U+110000 */
    CHECK(!T("\xf5\x80\x80\x80"));
    CHECK(!T("\xff"));
    CHECK(!T("\x80"));                          /* stray continuation */
    CHECK(!T("\xe2\x82"));                      /* truncated */
    CHECK(!dn_utf8_text("a\0b", 3));            /* NUL inside length-delimited text */
    CHECK(!dn_utf8_printable("a\xc2\x85"));
    CHECK(!strcmp(dn_utf8_problem("a\x01", 2), "contains control characters"));
    CHECK(!strcmp(dn_utf8_problem("a\xff", 2), "is not valid UTF-8"));
    CHECK(dn_utf8_problem("ok", 2) == NULL);
}

/* A valid sequence cut by the end of the buffer is invalid, and nothing past n is read
 * (the bytes after the cut here would complete it). */
TEST(bounded_length) {
    const unsigned char euro[] = {0xe2, 0x82, 0xac, 0};
    CHECK(dn_utf8_seq_len_n(euro, 3) == 3);
    CHECK(dn_utf8_seq_len_n(euro, 2) == 0);
    CHECK(dn_utf8_seq_len_n(euro, 1) == 0);
    CHECK(dn_utf8_seq_len_n(euro, 0) == 0);
    CHECK(dn_utf8_seq_len(euro) == 3);
    CHECK(!dn_utf8_text((const char *)euro, 2));
    CHECK(dn_utf8_text((const char *)euro, 3));
    const unsigned char cut[] = {0xf0, 0x90, 0};   /* NUL-terminated: stops at the NUL */
    CHECK(dn_utf8_seq_len(cut) == 0);
}

/* HTTP metadata uses the same check (dn_meta_problem adds the length rules). */
TEST(metadata_uses_it) {
    CHECK(dn_meta_problem("L\xc3\xa4-1") == NULL);
    CHECK(!strcmp(dn_meta_problem("L\xc2\x85"), "contains control characters"));
    CHECK(!strcmp(dn_meta_problem("L\xed\xa0\x80"), "is not valid UTF-8"));
    CHECK(!strcmp(dn_meta_problem(""), "is empty"));
}

int main(void) {
    RUN(valid_text);
    RUN(invalid_or_control);
    RUN(bounded_length);
    RUN(metadata_uses_it);
    return REPORT();
}
