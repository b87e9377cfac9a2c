/* kn_sessions_tool — several sessions on one model, through the public API only (kiln.h).
 *
 *   kn_sessions_tool MODEL N_SESSIONS N_GEN [--device D] [--threads T] [--mode kv|stateless]
 *       Opens MODEL once. Prompt k (ids derived from k) is answered greedily, N_GEN tokens,
 *       twice: first by N sessions one after another on the main thread, then by N threads at
 *       once, each opening its own session on the shared model, answering, and freeing it. Prints one line per session, "SEQ k ids..." and
 *       "PAR k ids...", then "COMPILES n" (graphs the model compiled for the device, summed over
 *       its devices) and exits 0 when every parallel run equals its sequential one, 1 when one
 *       differs, 2 on an error. tests/py/test_sessions.py runs it (also under ThreadSanitizer).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"

#define MAX_SESSIONS 16
#define MAX_GEN 256

typedef struct job {
    kiln_model *m;
    const kiln_session_params *sp;
    kiln_session *s;          /* NULL: the job opens (and frees) its own */
    int32_t prompt[8];
    int n_prompt;
    int n_gen;
    int32_t out[MAX_GEN];
    int n_out;
    kiln_status st;
    kiln_error err;
} job;

static void *run(void *arg) {
    job *j = arg;
    kiln_session *s = j->s;
    if (!s && (j->st = kiln_session_new(j->m, j->sp, &s, &j->err))) return NULL;
    kiln_generate_params gp = kiln_generate_default_params();
    gp.max_tokens = j->n_gen;
    kiln_result r;
    j->st = kiln_generate_ids(s, j->prompt, j->n_prompt, &gp, &r, &j->err);
    if (!j->s) kiln_session_free(s);
    if (j->st) return NULL;
    j->n_out = r.n_ids < MAX_GEN ? r.n_ids : MAX_GEN;
    memcpy(j->out, r.ids, sizeof(int32_t) * (size_t)j->n_out);
    kiln_result_free(&r);
    return NULL;
}

static void print_ids(const char *tag, int k, const job *j) {
    printf("%s %d", tag, k);
    for (int i = 0; i < j->n_out; i++) printf(" %d", (int)j->out[i]);
    printf("\n");
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: kn_sessions_tool MODEL N_SESSIONS N_GEN [--device D] "
                        "[--threads T] [--mode kv|stateless]\n");
        return 2;
    }
    int n = atoi(argv[2]), n_gen = atoi(argv[3]);
    if (n < 1 || n > MAX_SESSIONS || n_gen < 1 || n_gen > MAX_GEN) {
        fprintf(stderr, "kn_sessions_tool: 1..%d sessions, 1..%d tokens\n", MAX_SESSIONS,
                MAX_GEN);
        return 2;
    }
    kiln_session_params sp = kiln_session_default_params();
    sp.device = "cpu";
    for (int i = 4; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--device") == 0) sp.device = argv[i + 1];
        else if (strcmp(argv[i], "--threads") == 0) sp.threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--mode") == 0)
            sp.mode = strcmp(argv[i + 1], "stateless") == 0 ? KILN_MODE_STATELESS : KILN_MODE_KV;
    }
    kiln_error err;
    kiln_model *m = NULL;
    if (kiln_model_open(argv[1], NULL, &m, &err)) {
        fprintf(stderr, "kn_sessions_tool: %s\n", err.message);
        return 2;
    }
    static job seq[MAX_SESSIONS], par[MAX_SESSIONS];
    kiln_session *s[MAX_SESSIONS] = {0};
    int rc = 0;
    int V = kiln_model_n_vocab(m);
    for (int k = 0; k < n && !rc; k++) {
        if (kiln_session_new(m, &sp, &s[k], &err)) {
            fprintf(stderr, "kn_sessions_tool: session %d: %s\n", k, err.message);
            rc = 2;
            break;
        }
        for (job *j = &seq[k]; j; j = j == &seq[k] ? &par[k] : NULL) {
            j->m = m;
            j->sp = &sp;
            j->s = j == &seq[k] ? s[k] : NULL;
            j->n_prompt = 3 + k % 5;
            for (int i = 0; i < j->n_prompt; i++) j->prompt[i] = (int32_t)((1 + 37 * k + 11 * i) % V);
            j->n_gen = n_gen;
        }
    }
    for (int k = 0; k < n && !rc; k++) {
        run(&seq[k]);
        if (seq[k].st) {
            fprintf(stderr, "kn_sessions_tool: session %d: %s\n", k, seq[k].err.message);
            rc = 2;
        }
    }
    if (!rc) printf("BATCHED_SEQ %ld\n", kiln_model_batched_steps(m));
    pthread_t th[MAX_SESSIONS];
    int started = 0;
    for (int k = 0; k < n && !rc; k++, started++)
        if (pthread_create(&th[k], NULL, run, &par[k]) != 0) {
            fprintf(stderr, "kn_sessions_tool: cannot start thread %d\n", k);
            rc = 2;
            break;
        }
    for (int k = 0; k < started; k++) pthread_join(th[k], NULL);
    for (int k = 0; k < n && !rc; k++) {
        if (par[k].st) {
            fprintf(stderr, "kn_sessions_tool: session %d (parallel): %s\n", k,
                    par[k].err.message);
            rc = 2;
            break;
        }
        print_ids("SEQ", k, &seq[k]);
        print_ids("PAR", k, &par[k]);
        if (par[k].n_out != seq[k].n_out ||
            memcmp(par[k].out, seq[k].out, sizeof(int32_t) * (size_t)seq[k].n_out) != 0)
            rc = 1;
    }
    if (rc != 2) printf("COMPILES %d\nBATCHED %ld\n", kiln_model_compiles(m),
                        kiln_model_batched_steps(m));
    for (int k = 0; k < n; k++) kiln_session_free(s[k]);
    kiln_model_free(m);
    return rc;
}
