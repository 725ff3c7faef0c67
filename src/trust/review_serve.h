/* The review loop inside `defectnet serve` (docs/review.md): the hook that queues a
 * freshly committed prediction, and the review endpoints, answered without
 * libmicrohttpd types so http.c only routes:
 *   GET  /review                      the review page (HTML, no data in it)
 *   GET  /v1/review?n=10&reviewer=R   next open items (R: leave out what R labelled)
 *   GET  /v1/review/disagreements     open items whose reviewers disagree
 *   GET  /v1/review/{id}              one item (open or final) with its labels
 *   GET  /v1/review/{id}/image        the stored image copy (needs --store-images)
 *   GET  /v1/review/{id}/heatmap      the Grad-CAM overlay of serve --heatmaps beside the copy, if any
 *   POST /v1/review/{id}              {"label":"scratch","reviewer":"ana"}
 * Every /v1/review endpoint needs the bearer token when serve has one; /review does not
 * (it is a static page that asks for the token).
 * Thread-safety: all functions may run on any thread concurrently. */
#ifndef DN_TRUST_REVIEW_SERVE_H
#define DN_TRUST_REVIEW_SERVE_H
#include "core/json.h"
#include "serve/pipeline.h"
#include "trust/review.h"

/* Neighbours listed per queued item (from the model's OOD bank). */
#define DN_REVIEW_NEIGHBOURS 5

/* After prediction id was committed (new, not a duplicate): queues it when policy says so,
 * with the neighbours of its features feat (may be NULL) when m has a bank. Returns the
 * store's status (the caller logs a failure; the prediction stands). */
dn_status dn_review_after_commit(const dn_review_policy *policy, dn_store *st, const dn_model *m, int64_t id,
                                 const dn_prediction *pr, double time, const float *feat);

/* Kind of a review URL: 0 = not one, 1 = the page, 2 = API (token checked by the caller
 * like other data endpoints). *post_ok: POST is the method (else GET/HEAD). */
int dn_review_route(const char *url, int *post_ok);

typedef struct dn_review_http {
    const char *url;
    int post;
    const char *q_n, *q_reviewer;   /* query arguments, NULL when absent */
    const char *body;               /* POST body */
    size_t len;
    /* answer */
    int code;
    const char *ctype;              /* static string */
    dn_sb out;                      /* body (binary for images); owned by the caller (dn_sb_free) */
} dn_review_http;
/* Answers one review request (code, ctype, out). */
void dn_review_handle(dn_pipeline *p, dn_review_http *h);

/* The review page (static, NUL-terminated HTML). */
extern const char dn_review_page_html[];

#endif
