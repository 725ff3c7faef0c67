/* Command transport (see transport.h): runs the action's argv (PATH lookup, no shell)
 * in its own process group with the prediction JSON on stdin and DN_RULE,
 * DN_PREDICTION_ID, DN_CLASS, DN_LINE in its environment; success is exit status 0
 * within the timeout (then the whole group is killed). The first 255 bytes of its
 * stdout/stderr go into the outcome detail. Stateless between sends. */
#include "serve/transport.h"
#include "core/core.h"
#include "core/json.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

void dn_transport_snip(char *buf, size_t cap, size_t *len, const char *s, size_t n) {
    for (size_t i = 0; i < n && *len + 1 < cap; i++) {
        char c = s[i];
        buf[(*len)++] = (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
    }
    buf[*len] = 0;
}

static int command_send(dn_transport *t, const dn_action_call *c, char *detail, size_t cap) {
    const dn_action_def *act = c->act;
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    int ok = 0, spawn_rc, have_fa = 0, have_at = 0;
    pid_t pid = -1;
    char **envp = NULL;
    char *extra[5] = {0};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC)) {
        snprintf(detail, cap, "pipe: %s", strerror(errno));
        goto done;
    }
    /* environment: the service's plus DN_RULE, DN_PREDICTION_ID, DN_CLASS, DN_LINE */
    size_t nenv = 0;
    while (environ && environ[nenv]) nenv++;
    if (!(envp = dn_calloc(nenv + 5, sizeof *envp))) { snprintf(detail, cap, "out of memory"); goto done; }
    size_t e = 0;
    for (size_t i = 0; i < nenv; i++)
        if (strncmp(environ[i], "DN_RULE=", 8) && strncmp(environ[i], "DN_PREDICTION_ID=", 17) &&
            strncmp(environ[i], "DN_CLASS=", 9) && strncmp(environ[i], "DN_LINE=", 8))
            envp[e++] = environ[i];
    dn_sb v[4] = {{0}}; /* through the core allocation helpers (fault injection reaches them) */
    dn_sb_printf(&v[0], "DN_RULE=%s", c->rule);
    dn_sb_printf(&v[1], "DN_PREDICTION_ID=%lld", (long long)c->ev->id);
    dn_sb_printf(&v[2], "DN_CLASS=%s", c->ev->cls ? c->ev->cls : "");
    dn_sb_printf(&v[3], "DN_LINE=%s", c->ev->line ? c->ev->line : "");
    int oom = 0;
    for (int i = 0; i < 4; i++) {
        oom |= v[i].oom || !v[i].s;
        extra[i] = v[i].s; /* freed at done */
        if (extra[i]) envp[e++] = extra[i];
    }
    if (oom) { snprintf(detail, cap, "out of memory"); goto done; }

    posix_spawn_file_actions_init(&fa);
    have_fa = 1;
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, out[1], 2);
    posix_spawnattr_init(&at);
    have_at = 1;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    /* own process group (so a timeout kills `sh -c` and its children), clean signal state */
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    spawn_rc = posix_spawnp(&pid, act->argv[0], &fa, &at, act->argv, envp);
    close(in[0]); in[0] = -1;
    close(out[1]); out[1] = -1;
    if (spawn_rc) {
        snprintf(detail, cap, "cannot run %s: %s", act->argv[0], strerror(spawn_rc));
        pid = -1;
        goto done;
    }
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    const char *payload = c->ev->json;
    size_t plen = strlen(payload), off = 0;
    char obuf[256] = "";
    size_t olen = 0;
    double start = dn_now(), deadline = start + act->timeout_s;
    int status = 0, exited = 0, timed_out = 0, stopped = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD)) { exited = r == pid; break; }
        double now = dn_now();
        if (now >= deadline || c->should_stop(c->stop_ctx)) {
            timed_out = now >= deadline;
            stopped = !timed_out;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            if (waitpid(pid, &status, 0) == pid) exited = 1;
            break;
        }
        struct pollfd pf[2];
        int np = 0, iw = -1, ir = -1;
        if (in[1] >= 0) { pf[np].fd = in[1]; pf[np].events = POLLOUT; iw = np++; }
        if (out[0] >= 0) { pf[np].fd = out[0]; pf[np].events = POLLIN; ir = np++; }
        int ms = (int)((deadline - now) * 1000) + 1;
        if (ms > 20) ms = 20; /* also polls waitpid: a child may exit with its stdout still shared */
        if (poll(pf, (nfds_t)np, ms) < 0 && errno != EINTR) break;
        if (iw >= 0 && pf[iw].revents) {
            ssize_t n = write(in[1], payload + off, plen - off);
            if (n > 0) off += (size_t)n;
            if ((n < 0 && errno != EAGAIN && errno != EINTR) || off == plen) {
                close(in[1]); /* done, or the command does not read stdin (EPIPE): not an error */
                in[1] = -1;
            }
        }
        if (ir >= 0 && pf[ir].revents) {
            char tmp[512];
            ssize_t n = read(out[0], tmp, sizeof tmp);
            if (n > 0) dn_transport_snip(obuf, sizeof obuf, &olen, tmp, (size_t)n);
            else if (n == 0 || (errno != EAGAIN && errno != EINTR)) { close(out[0]); out[0] = -1; }
        }
    }
    if (out[0] >= 0) { /* output written just before exit */
        char tmp[512];
        ssize_t n;
        while ((n = read(out[0], tmp, sizeof tmp)) > 0) dn_transport_snip(obuf, sizeof obuf, &olen, tmp, (size_t)n);
    }
    {   /* consume a SIGPIPE raised by writing to a command that closed its stdin */
        sigset_t pipe_set;
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) > 0) {}
    }
    pid = -1;
    if (timed_out) snprintf(detail, cap, "timeout after %.3g s (killed)", act->timeout_s);
    else if (stopped) snprintf(detail, cap, "killed at shutdown");
    else if (!exited) snprintf(detail, cap, "lost track of the process");
    else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        ok = 1;
        snprintf(detail, cap, "exit 0 in %.3f s%s%s", dn_now() - start, olen ? ": " : "", obuf);
    } else if (WIFEXITED(status))
        snprintf(detail, cap, "exit %d%s%s", WEXITSTATUS(status), olen ? ": " : "", obuf);
    else if (WIFSIGNALED(status))
        snprintf(detail, cap, "killed by signal %d%s%s", WTERMSIG(status), olen ? ": " : "", obuf);
    else snprintf(detail, cap, "ended with status 0x%x", status);
done:
    if (have_fa) posix_spawn_file_actions_destroy(&fa);
    if (have_at) posix_spawnattr_destroy(&at);
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0) close(in[i]);
        if (out[i] >= 0) close(out[i]);
    }
    for (int i = 0; i < 4; i++) free(extra[i]);
    free(envp);
    return ok;
}

static void command_describe(const dn_action_call *c, char *detail, size_t cap) {
    snprintf(detail, cap, "would run %s with the prediction JSON (%zu bytes) on stdin, timeout %g s", c->act->target,
             strlen(c->ev->json), c->act->timeout_s);
}

static void command_close(dn_transport *t) { free(t); }

dn_transport *dn_transport_command_new(void) {
    dn_transport *t = dn_calloc(1, sizeof *t);
    if (!t) return NULL;
    t->send = command_send;
    t->describe = command_describe;
    t->close = command_close;
    return t;
}
