/* test_generate.c — the public generation loop: no allocation per token, and both modes agree
 * through kiln_generate_ids (the golden ids themselves are checked in tests/py/test_run.py). */
#include <string.h>

#include "base/base.h"
#include "kiln.h"
#include "kt.h"

static const char *stories(void) { return kt_shared("models/stories260K/stories260K.gguf"); }

/* Allocations of a whole kiln_generate_ids call: what it sizes before its first step. */
static uint64_t allocs_for(kiln_session *s, int max_tokens, int *n_gen) {
    int32_t bos = 1;
    kiln_generate_params gp = kiln_generate_default_params();
    gp.max_tokens = max_tokens;
    kiln_result r;
    kiln_error e;
    kn_alloc_fail_after(0); /* resets the counter */
    uint64_t before = kn_alloc_count();
    kiln_status st = kiln_generate_ids(s, &bos, 1, &gp, &r, &e);
    uint64_t after = kn_alloc_count();
    *n_gen = st == KILN_OK ? r.n_ids : -1;
    if (st == KILN_OK) kiln_result_free(&r);
    return after - before;
}

TEST(generate_allocates_nothing_per_token) {
    kiln_model *m = NULL;
    kiln_session *s = NULL;
    kiln_error e;
    kiln_model_params mp = kiln_model_default_params();
    mp.window = 512;
    CHECKF(kiln_model_open(stories(), &mp, &m, &e) == KILN_OK, "%s", e.message);
    for (int mode = 0; mode < 2; mode++) {
        kiln_session_params sp = kiln_session_default_params();
        sp.mode = mode ? KILN_MODE_STATELESS : KILN_MODE_KV;
        sp.device = "cpu";
        CHECKF(kiln_session_new(m, &sp, &s, &e) == KILN_OK, "%s", e.message);
        int n8, n200;
        uint64_t a8 = allocs_for(s, 8, &n8);
        uint64_t a200 = allocs_for(s, 200, &n200);
        CHECK(n8 == 8 && n200 == 200);
        /* the same fixed set of buffers whether 8 or 200 tokens are generated */
        CHECKF(a8 == a200, "mode %d: %llu allocations for 8 tokens, %llu for 200", mode,
               (unsigned long long)a8, (unsigned long long)a200);
        kiln_session_free(s);
        s = NULL;
    }
    kiln_model_free(m);
}

TEST(generate_modes_agree_through_the_public_api) {
    kiln_model *m = NULL;
    kiln_error e;
    CHECKF(kiln_model_open(stories(), NULL, &m, &e) == KILN_OK, "%s", e.message);
    int32_t ids[2][256];
    for (int mode = 0; mode < 2; mode++) {
        kiln_session *s = NULL;
        kiln_session_params sp = kiln_session_default_params();
        sp.mode = mode ? KILN_MODE_STATELESS : KILN_MODE_KV;
        sp.threads = 2;
        CHECKF(kiln_session_new(m, &sp, &s, &e) == KILN_OK, "%s", e.message);
        int32_t bos = 1;
        kiln_generate_params gp = kiln_generate_default_params();
        gp.max_tokens = 256;
        kiln_result r;
        CHECKF(kiln_generate_ids(s, &bos, 1, &gp, &r, &e) == KILN_OK, "%s", e.message);
        CHECK(r.n_ids == 256);
        memcpy(ids[mode], r.ids, sizeof ids[mode]);
        kiln_result_free(&r);
        kiln_session_free(s);
    }
    kiln_model_free(m);
    CHECK(memcmp(ids[0], ids[1], sizeof ids[0]) == 0);
}
