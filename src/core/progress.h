/* One progress line for every long step (feature extraction, eval, predict over
 * folders, quantize, training epochs): "label [#####.....] done/total  rate/s  ETA".
 *
 * Shown on stderr only when stderr is a terminal (and DN_PROGRESS is not "0");
 * quiet when piped or redirected, so logs and scripts see only the final lines.
 * DN_PROGRESS=1 forces it on (tests). Updates are rate-limited (5 per second).
 * A progress value is plain data: zero-initialise or use dn_progress_start. */
#ifndef DN_CORE_PROGRESS_H
#define DN_CORE_PROGRESS_H
#include <stddef.h>

typedef struct dn_progress {
    const char *label;   /* not copied: must outlive the progress */
    const char *unit;    /* "img" by default */
    long total;          /* <= 0: unknown (no bar, no ETA) */
    long done;
    double t0, last;     /* start, last draw (monotonic seconds) */
    int on;              /* drawing enabled */
    int drawn;           /* a line is on screen */
} dn_progress;

/* Is progress wanted for stderr? (TTY and DN_PROGRESS != "0", or DN_PROGRESS == "1"). */
int dn_progress_enabled(void);
void dn_progress_start(dn_progress *p, const char *label, long total);
/* Sets the count of finished units and redraws if due. */
void dn_progress_update(dn_progress *p, long done);
/* Clears the line (call before printing other stderr lines while a progress is live). */
void dn_progress_clear(dn_progress *p);
/* Clears the line; the caller prints its own summary. */
void dn_progress_end(dn_progress *p);
/* "12s", "3m05s", "1h02m"; "?" for negative / absurd values. */
void dn_format_eta(double seconds, char *buf, size_t n);
/* Text of the line that would be drawn now (for tests). */
void dn_progress_text(const dn_progress *p, double now, char *buf, size_t n);

#endif
