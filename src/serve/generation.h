/* Model generations of `defectnet serve`: one loaded model with its identity, the
 * conv plan its worker sessions share, and the "current generation" slot that a hot
 * reload swaps.
 *
 * A dn_gen is reference counted: the slot holds one reference to the current
 * generation, every batch a worker runs holds one while it runs, so jobs already
 * running finish with the generation they started with while new jobs get the new one.
 *
 * plan: the immutable conv plan (BN-folded, packed weights) built by the first worker
 * session of the generation; the other workers' sessions share it
 * (dn_session_new_on_plan) instead of each packing ~45 MB of weights. The gen holds one
 * plan reference, each worker session another, so the plan of a replaced model dies
 * with the last of them.
 *
 * Ownership: dn_gen_load returns a generation with one reference owned by the caller,
 * who hands it to dn_gen_slot_init/dn_gen_slot_swap or frees it with dn_gen_free.
 * Thread-safety: dn_gen_acquire, dn_gen_release and dn_gen_slot_swap may be called from
 * any thread (the slot's mutex); dn_gen_session from any worker thread (the gen's
 * plan_mu). Fields of a dn_gen other than refs/plan never change after dn_gen_load. */
#ifndef DN_SERVE_GENERATION_H
#define DN_SERVE_GENERATION_H
#include "defectnet.h"
#include "eval/policy.h"
#include "nn/engine.h"
#include <pthread.h>

typedef struct dn_gen {
    int refs;                       /* guarded by the slot's mutex */
    int serial;                     /* 1, 2, ... in load order (set by the slot) */
    dn_model *model;
    pthread_mutex_t plan_mu;        /* guards plan; held while the first session builds it */
    dn_plan *plan;                  /* NULL until the first session; one reference owned */
    char sha[65];                   /* model file sha256 (hex) */
    char version[160];              /* metadata "version (file name)" or the file name */
    dn_policy policy;               /* good class + stored decision policy (eval/policy.h) */
    double expected_escape, expected_false_reject; /* of the policy as eval measured them, -1 unknown */
} dn_gen;

/* Loads model_path (must have a classification head) into a new generation (refs = 1). */
dn_status dn_gen_load(const char *model_path, dn_gen **out);
/* Frees a generation nobody references (its plan lives on in the sessions using it). */
void dn_gen_free(dn_gen *g);
/* A session for g with room for max_batch images: shares g's plan, building it first
 * if this is g's first session. On failure *out is NULL and dn_last_error() says why. */
dn_status dn_gen_session(dn_gen *g, int max_batch, int threads, dn_session **out);

/* The current generation. */
typedef struct dn_gen_slot {
    pthread_mutex_t mu;
    dn_gen *cur;
    int serial;
} dn_gen_slot;
void dn_gen_slot_init(dn_gen_slot *s, dn_gen *first);  /* takes the reference of first */
void dn_gen_slot_destroy(dn_gen_slot *s);                /* releases the current one */
dn_gen *dn_gen_acquire(dn_gen_slot *s);                  /* +1 reference to the current one */
void dn_gen_release(dn_gen_slot *s, dn_gen *g);          /* -1; frees at zero; NULL is a no-op */
void dn_gen_slot_swap(dn_gen_slot *s, dn_gen *g);        /* g becomes current (its reference moves in) */

/* Gives freed heap back to the OS (glibc keeps freed arenas of every thread mapped, so a
 * server that reloads would keep the peak of two models + two plans resident). */
void dn_gen_give_back_memory(void);

#endif
