/* Folder-watch ingestion for camera drop folders (Linux inotify).
 *
 * Every regular file that appears in DIR (not recursive) is classified through the
 * prediction pipeline (src/serve/pipeline.h: same queue, store and actions as HTTP) once it is
 * completely written: IN_CLOSE_WRITE (the writer closed it) or IN_MOVED_TO (it was
 * renamed into place). Names starting with '.' or ending in .tmp/.part/~ are ignored
 * so writers can create a temporary file and rename it. Files already present at
 * startup are scanned, and so is the whole folder after an inotify queue overflow;
 * a scanned file modified less than 2 s ago may still be open by its writer, so it is
 * deferred until it has been unchanged for 2 s (or its close event comes first).
 * A writer must produce a file in one open/write/close (or rename it into place):
 * every IN_CLOSE_WRITE is taken as "complete".
 *
 * Idempotent across restarts: a file whose (absolute path, sha256) is already in
 * the store is not classified again (if moving is enabled it is still moved, with
 * the recorded class). With move_processed, a classified file goes to
 * DIR/processed/<class>/<name> (an existing name gets "-<id>" appended) and a file
 * that cannot be classified (not an image, ...) to DIR/rejected/<name>.
 *
 * Ownership: dn_watch_start returns a watcher owned by the caller (dn_watch_stop
 * stops its thread and frees it); it must be stopped before the server. */
#ifndef DN_SERVE_WATCH_H
#define DN_SERVE_WATCH_H
#include "defectnet.h"

struct dn_pipeline;
typedef struct dn_watch dn_watch;

/* line/station/camera (may be NULL) are recorded with every watched file's prediction. */
dn_status dn_watch_start(struct dn_pipeline *p, const char *dir, int move_processed, const char *line,
                         const char *station, const char *camera, dn_watch **out);
void dn_watch_stop(dn_watch *w);
/* Files handled so far (classified + skipped + rejected), for tests. */
long dn_watch_handled(dn_watch *w);

#endif
