/* Minimal JSON DOM parser (RFC 8259) and a growable string builder for writing JSON.
 *
 * Ownership: dn_json_parse returns a root node that owns the whole tree; free it
 * with dn_json_free(root). Pointers returned by dn_json_get/dn_json_at/
 * dn_json_key_at/dn_json_str point into that tree and are valid until the root
 * is freed. Never free a non-root node.
 *
 * Parser limits: nesting depth <= DN_JSON_MAX_DEPTH, whole text must be one value
 * (trailing non-whitespace is an error), strings must be valid escapes (\u
 * surrogate pairs are combined; lone surrogates are rejected), numbers follow the
 * JSON grammar strictly (no leading zeros, no NaN/Infinity). Embedded NUL bytes in
 * strings (\u0000) are rejected since values are exposed as C strings. Duplicate
 * object keys are kept; dn_json_get returns the last one (like most parsers). */
#ifndef DN_JSON_H
#define DN_JSON_H
#include "defectnet.h"
#include <stddef.h>
#include <stdio.h>

#define DN_JSON_MAX_DEPTH 256

#if defined(__GNUC__)
#define DN_JSON_PRINTF __attribute__((format(printf, 2, 3)))
#else
#define DN_JSON_PRINTF
#endif

typedef enum { DN_JSON_NULL, DN_JSON_BOOL, DN_JSON_NUM, DN_JSON_STR, DN_JSON_ARR, DN_JSON_OBJ } dn_json_type;
typedef struct dn_json dn_json; /* DOM node; the root owns the whole tree */

/* NULL on error, with err = "line L col C: problem" (err may be NULL). Also
 * records the message via dn_fail(DN_ERR_FORMAT, ...). */
dn_json *dn_json_parse(const char *text, size_t len, char *err, size_t errlen);
void dn_json_free(dn_json *root);
/* Type of v; DN_JSON_NULL for v == NULL. */
dn_json_type dn_json_type_of(const dn_json *v);
const dn_json *dn_json_get(const dn_json *obj, const char *key); /* NULL if absent / not an object */
size_t dn_json_len(const dn_json *arr_or_obj);                   /* 0 for other types */
const dn_json *dn_json_at(const dn_json *arr_or_obj, size_t i);  /* NULL if out of range */
const char *dn_json_key_at(const dn_json *obj, size_t i);         /* NULL if not object / out of range */
double dn_json_num(const dn_json *v, double dflt);                 /* dflt unless a number */
const char *dn_json_str(const dn_json *v, const char *dflt);      /* UTF-8, \u escapes decoded */
int dn_json_bool(const dn_json *v, int dflt);                     /* dflt unless a bool */

/* Growable string builder. Zero-initialise (dn_sb b = {0}). b.s is always
 * NUL-terminated once anything was appended (NULL before). On OOM sets oom and
 * stops growing; check b.oom before using the result. The builder owns b.s
 * until dn_sb_free (or the caller takes b.s and does not call dn_sb_free). */
typedef struct dn_sb { char *s; size_t len, cap; int oom; } dn_sb;
void dn_sb_printf(dn_sb *b, const char *fmt, ...) DN_JSON_PRINTF;
void dn_sb_puts(dn_sb *b, const char *s);
void dn_sb_putn(dn_sb *b, const char *s, size_t n);
void dn_sb_json_str(dn_sb *b, const char *s); /* appends a quoted, escaped JSON string */
/* The same quoted, escaped JSON string written to f (the one escaper for both). */
void dn_json_fput_str(FILE *f, const char *s);
void dn_sb_free(dn_sb *b);

#endif
