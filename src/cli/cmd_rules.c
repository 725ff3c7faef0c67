/* defectnet rules: validate a rules file, and replay predictions through it in dry-run
 * mode ("what would have fired"). Format: docs/rules.md. */
#include "commands.h"
#include "cli/args.h"
#include "core/core.h"
#include "core/json.h"
#include "serve/actions.h"
#include "serve/rules.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: defectnet rules check FILE [-m|--model M]\n"
            "       defectnet rules dry-run FILE [PREDICTIONS|-]\n"
            "  check    parse FILE and list its rules, conditions and actions (exit 2 on any error);\n"
            "           with --model, warn about rule classes the model does not have\n"
            "  dry-run  evaluate predictions (JSON lines, or the JSON of GET /v1/predictions; '-' or\n"
            "           nothing = stdin) in order, with N-of-M, rate and cooldown history, and print\n"
            "           every action that would fire; nothing is run, posted or published\n"
            "  Fields read from each prediction: id, time (unix s), class, confidence, decision or\n"
            "  uncertain, line, station, camera, part.\n" DN_EXIT_HELP);
}

static void print_set(const char *what, char **set) {
    if (!set) return;
    printf(" %s=", what);
    for (char **p = set; *p; p++) printf("%s%s", p == set ? "" : "|", *p);
}

/* Rule classes the model cannot predict never fire: one warning line each. */
static int warn_unknown_classes(const dn_rules *r, const char *model_path) {
    dn_model *m = NULL;
    dn_status st = dn_model_load(model_path, &m);
    if (st) return dn_cli_fail("rules", st);
    int nwarn = 0;
    for (int i = 0; i < r->n; i++)
        for (char **c = r->rules[i].classes; c && *c; c++) {
            int k = 0;
            while (k < dn_model_num_classes(m) && strcmp(dn_model_class_name(m, k), *c)) k++;
            if (k == dn_model_num_classes(m)) {
                fprintf(stderr, "defectnet rules: warning: rule '%s': class '%s' is not one of %s's classes; it never fires\n",
                        r->rules[i].name, *c, model_path);
                nwarn++;
            }
        }
    dn_model_free(m);
    return nwarn ? DN_EXIT_PARTIAL : 0;
}

static int do_check(const char *path, const char *model) {
    dn_rules *r = NULL;
    dn_status st;
    if ((st = dn_rules_load(path, &r))) return dn_cli_fail("rules", st);
    int rc = model ? warn_unknown_classes(r, model) : 0;
    if (rc > DN_EXIT_PARTIAL) { dn_rules_free(r); return rc; }
    printf("%s: %d rule%s, queue_capacity %d, drain_s %g\n", path, r->n, r->n == 1 ? "" : "s", r->queue_capacity,
           r->drain_s);
    for (int i = 0; i < r->n; i++) {
        const dn_rule *ru = &r->rules[i];
        printf("rule '%s'%s: when", ru->name, ru->enabled ? "" : " (disabled)");
        int any = ru->classes || ru->lines || ru->stations || ru->cameras || ru->has_min || ru->has_max ||
                  ru->uncertain >= 0 || ru->m || ru->rate_above >= 0;
        if (!any) printf(" always");
        print_set("class", ru->classes);
        if (ru->has_min) printf(" confidence>=%g", ru->min_conf);
        if (ru->has_max) printf(" confidence<=%g", ru->max_conf);
        if (ru->uncertain >= 0) printf(" uncertain=%s", ru->uncertain ? "true" : "false");
        print_set("line", ru->lines);
        print_set("station", ru->stations);
        print_set("camera", ru->cameras);
        if (ru->m) printf(" %d-of-last-%d-on-line", ru->n, ru->m);
        if (ru->rate_above >= 0)
            printf(" rate>%g/h(window %gs, %s)", ru->rate_above, ru->rate_window_s,
                   ru->rate_per_line ? "per line" : "all lines");
        if (ru->cooldown_s > 0) printf("; cooldown %gs%s", ru->cooldown_s, ru->cooldown_per_line ? " per line" : "");
        printf("\n");
        for (int k = 0; k < ru->nactions; k++) {
            const dn_action_def *a = &ru->actions[k];
            printf("  %s %s (timeout %gs, retries %d, backoff %g..%gs", a->kind_name, a->target, a->timeout_s,
                   a->retries, a->backoff_s, a->backoff_max_s);
            if (a->kind == DN_ACT_MQTT) printf(", qos %d, retain %s", a->qos, a->retain ? "true" : "false");
            printf(")\n");
        }
    }
    dn_rules_free(r);
    return rc;
}

/* Outcomes arrive from one thread per target in any order; they are collected and printed
 * sorted by (prediction id, rule order in the file, text). */
typedef struct { long long id; int ri; char *text; } dry_line;
typedef struct {
    dry_line *v;
    size_t n, cap;
    int oom;
    const dn_rules *rules;
} dry_ctx;

static void on_outcome(void *ctx, const dn_action_outcome *o) {
    dry_ctx *c = ctx; /* calls are serialised by the executor */
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 64;
        dry_line *nv = dn_realloc(c->v, nc * sizeof *nv);
        if (!nv) { c->oom = 1; return; }
        c->v = nv;
        c->cap = nc;
    }
    int ri = 0;
    while (ri < c->rules->n && strcmp(c->rules->rules[ri].name, o->rule)) ri++;
    dn_sb t = {0}; /* through the core allocation helpers (fault injection reaches it) */
    dn_sb_printf(&t, "prediction %lld: rule '%s' %s: %s%s%s", (long long)o->prediction_id, o->rule, o->status,
                 strcmp(o->status, "dry-run") ? o->target : "", strcmp(o->status, "dry-run") ? ": " : "", o->detail);
    if (t.oom || !t.s) { dn_sb_free(&t); c->oom = 1; return; }
    c->v[c->n].id = (long long)o->prediction_id;
    c->v[c->n].ri = ri;
    c->v[c->n].text = t.s;
    c->n++;
}

static int cmp_line(const void *x, const void *y) {
    const dry_line *a = x, *b = y;
    if (a->id != b->id) return a->id < b->id ? -1 : 1;
    if (a->ri != b->ri) return a->ri < b->ri ? -1 : 1;
    return strcmp(a->text, b->text);
}

/* One prediction object -> event (strings point into v). 0 on success. */
static int to_event(const dn_json *v, long lineno, dn_pred_event *ev, const char *src) {
    memset(ev, 0, sizeof *ev);
    if (dn_json_type_of(v) != DN_JSON_OBJ) {
        fprintf(stderr, "defectnet rules: %s:%ld: a prediction must be a JSON object\n", src, lineno);
        return -1;
    }
    const dn_json *cls = dn_json_get(v, "class"), *conf = dn_json_get(v, "confidence");
    if (dn_json_type_of(cls) != DN_JSON_STR || dn_json_type_of(conf) != DN_JSON_NUM) {
        fprintf(stderr, "defectnet rules: %s:%ld: prediction needs \"class\" (string) and \"confidence\" (number)\n",
                src, lineno);
        return -1;
    }
    ev->id = (int64_t)dn_json_num(dn_json_get(v, "id"), (double)lineno);
    ev->time = dn_json_num(dn_json_get(v, "time"), 0);
    ev->cls = dn_json_str(cls, "");
    ev->confidence = (float)dn_json_num(conf, 0);
    const char *dec = dn_json_str(dn_json_get(v, "decision"), NULL);
    ev->uncertain = dn_json_bool(dn_json_get(v, "uncertain"), dec && !strcmp(dec, "uncertain"));
    ev->decision = dec && !strcmp(dec, "unknown") ? DN_DECISION_UNKNOWN : ev->uncertain ? DN_DECISION_UNCERTAIN : DN_DECISION_ACCEPTED;
    ev->ood_score = (float)dn_json_num(dn_json_get(v, "ood_score"), NAN);
    ev->line = dn_json_str(dn_json_get(v, "line"), NULL);
    ev->station = dn_json_str(dn_json_get(v, "station"), NULL);
    ev->camera = dn_json_str(dn_json_get(v, "camera"), NULL);
    ev->part = dn_json_str(dn_json_get(v, "part"), NULL);
    return 0;
}

static int do_dry_run(const char *rules_path, const char *pred_path) {
    int rc = DN_EXIT_DATA;
    dn_rules *r = NULL;
    dn_actions *a = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    dry_ctx ctx = {.n = 0};
    
    const char *src = pred_path && strcmp(pred_path, "-") ? pred_path : "stdin";
    if (dn_rules_load(rules_path, &r)) {
        fprintf(stderr, "defectnet rules: %s\n", dn_last_error());
        goto done;
    }
    if (pred_path && strcmp(pred_path, "-")) {
        if (dn_read_file(pred_path, (size_t)1 << 30, &data, &len)) {
            fprintf(stderr, "defectnet rules: %s\n", dn_last_error());
            goto done;
        }
    } else {
        dn_sb b = {0};
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) dn_sb_putn(&b, buf, n);
        if (b.oom) { dn_sb_free(&b); fprintf(stderr, "defectnet rules: stdin: out of memory\n"); goto done; }
        data = (uint8_t *)b.s;
        len = b.len;
    }
    ctx.rules = r;
    if (dn_actions_new(r, 1, on_outcome, &ctx, &a)) {
        fprintf(stderr, "defectnet rules: %s\n", dn_last_error());
        goto done;
    }
    long npred = 0, fired = 0;
    const char *text = data ? (const char *)data : "";
    /* a whole JSON document ({"predictions": [...]} or [...]) or JSON lines */
    dn_json *doc = dn_json_parse(text, len, NULL, 0);
    const dn_json *arr = doc ? dn_json_get(doc, "predictions") : NULL;
    if (doc && !arr && dn_json_type_of(doc) == DN_JSON_ARR) arr = doc;
    if (doc && arr) {
        for (size_t i = 0; i < dn_json_len(arr); i++) {
            dn_pred_event ev;
            if (to_event(dn_json_at(arr, i), (long)i + 1, &ev, src)) { dn_json_free(doc); goto done; }
            fired += dn_actions_submit(a, &ev);
            npred++;
        }
    } else {
        long lineno = 0;
        const char *p = text, *end = text + len;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *le = nl ? nl : end;
            lineno++;
            const char *q = p;
            while (q < le && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
            if (q < le) {
                char err[200];
                dn_json *v = dn_json_parse(p, (size_t)(le - p), err, sizeof err);
                if (!v) {
                    fprintf(stderr, "defectnet rules: %s:%ld: invalid JSON: %s\n", src, lineno, err);
                    dn_json_free(doc);
                    goto done;
                }
                dn_pred_event ev;
                if (to_event(v, lineno, &ev, src)) { dn_json_free(v); dn_json_free(doc); goto done; }
                /* JSON sent to actions is the line itself */
                char *js = dn_strndup(p, (size_t)(le - p));
                ev.json = js;
                fired += dn_actions_submit(a, &ev);
                free(js);
                dn_json_free(v);
                npred++;
            }
            p = nl ? nl + 1 : end;
        }
    }
    dn_json_free(doc);
    dn_actions_free(a); /* drains: every dry-run outcome is reported before this returns */
    a = NULL;
    if (ctx.oom) {
        fprintf(stderr, "defectnet rules: out of memory collecting outcomes\n");
        goto done;
    }
    qsort(ctx.v, ctx.n, sizeof *ctx.v, cmp_line);
    for (size_t i = 0; i < ctx.n; i++) printf("%s\n", ctx.v[i].text);
    printf("%ld prediction%s, %ld action%s would fire\n", npred, npred == 1 ? "" : "s", fired, fired == 1 ? "" : "s");
    rc = 0;
done:
    dn_actions_free(a);
    for (size_t i = 0; i < ctx.n; i++) free(ctx.v[i].text);
    free(ctx.v);
    dn_rules_free(r);
    free(data);
    return rc;
}

int cmd_rules(int argc, char **argv) {
    const char *model = NULL;
    static const dn_opt opts[] = {{"model", 'm', DN_ARG_REQ, NULL}, {0}};
    dn_args a;
    dn_args_init(&a, "rules", argc, argv, opts);
    for (int c; (c = dn_args_next(&a)) != -1;) {
        if (c == 'h') { usage(stdout); return 0; }
        if (c == 'm') model = a.val;
        else return DN_EXIT_USAGE;
    }
    int np = dn_args_npos(&a);
    const char *sub = np ? dn_args_pos(&a, 0) : "";
    if (!strcmp(sub, "check") && np == 2) return do_check(dn_args_pos(&a, 1), model);
    if (!strcmp(sub, "dry-run") && (np == 2 || np == 3)) {
        if (model) return dn_usage_error("rules", "--model applies to 'rules check'");
        return do_dry_run(dn_args_pos(&a, 1), np == 3 ? dn_args_pos(&a, 2) : NULL);
    }
    if (strcmp(sub, "check") && strcmp(sub, "dry-run"))
        return dn_usage_error("rules", "expected 'check FILE' or 'dry-run FILE [PREDICTIONS]' (see defectnet rules --help)");
    return dn_usage_error("rules", "%s: wrong number of arguments (see defectnet rules --help)", sub);
}
