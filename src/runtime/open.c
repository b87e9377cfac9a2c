/* open.c — kiln_model: an offering (or a source) opened with its tokenizer and contract, and
 * the devices its sessions share. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/registry.h"
#include "model/source.h"
#include "runtime/runtime.h"

kiln_model_params kiln_model_default_params(void) {
    kiln_model_params p;
    memset(&p, 0, sizeof p); /* window, chunk 0: the offering's own, or 1024 / 128 */
    return p;
}

/* The model.gguf an offering path designates, or NULL when path is a plain source. */
static char *offering_gguf(const char *path) {
    if (kn_is_dir(path)) {
        char *m = kn_path_join(path, "model.gguf");
        if (m && kn_is_file(m)) return m;
        kn_free(m);
        return NULL;
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t nb = strlen(base);
    bool sibling = strcmp(base, "manifest.json") == 0 ||
                   (nb > 4 && strcmp(base + nb - 4, ".xml") == 0) ||
                   (nb > 4 && strcmp(base + nb - 4, ".bin") == 0);
    if (!sibling) return NULL;
    char *dir = kn_strndup(path, (size_t)(base - path));
    char *m = dir ? kn_path_join(*dir ? dir : ".", "model.gguf") : NULL;
    kn_free(dir);
    if (m && kn_is_file(m)) return m;
    kn_free(m);
    return NULL;
}

/* A Hugging Face folder or cache id: baked (weights kept) into a private directory under
 * $TMPDIR, which is removed once the GGUF is mapped (the mapping outlives the unlink). */
static kiln_status bake_private(const char *path, const kn_model_params *mp,
                                const kiln_model_params *p, char **tmpdir, char **gguf,
                                kiln_error *err) {
    *tmpdir = kn_make_tmpdir("kiln-run");
    if (!*tmpdir) return kn_fail(err, KILN_ERR_IO, "%s: cannot create a temporary directory "
                                 "($TMPDIR or /tmp)", path);
    char *off = kn_path_join(*tmpdir, "offering");
    kiln_bake_params bp = kiln_bake_default_params();
    bp.quant = KILN_QUANT_KEEP;
    if (mp->window > 0) bp.window = mp->window;
    if (mp->chunk > 0) bp.chunk = mp->chunk;
    else if (bp.chunk > bp.window) bp.chunk = bp.window;
    if (bp.sink >= bp.window) bp.sink = bp.window - 1;
    kiln_status s = off ? kiln_bake(path, off, &bp, err)
                        : kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    if (!s && !(*gguf = kn_path_join(off, "model.gguf")))
        s = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    kn_free(off);
    return s;
}

static kiln_status open_tokenizer(kiln_model *km, const char *path, const kiln_model_params *p,
                                  bool baked, kiln_error *err) {
    kiln_status s = KILN_OK;
    if (p->tokenizer && *p->tokenizer) {
        char *dir = NULL;
        if (!kn_is_dir(p->tokenizer) && !kn_is_file(p->tokenizer) &&
            strchr(p->tokenizer, '/') && p->tokenizer[0] != '/' && p->tokenizer[0] != '.')
            s = kn_hf_cache_resolve(p->tokenizer, &dir, err);
        if (!s) s = kn_tokenizer_open(dir ? dir : p->tokenizer, &km->tok, err);
        kn_free(dir);
        if (!s && (int)kn_tokenizer_n_vocab(km->tok) > km->m->hp.n_vocab)
            s = kn_fail(err, KILN_ERR_FORMAT, "%s: tokenizer has %u tokens, the model only %d",
                        p->tokenizer, kn_tokenizer_n_vocab(km->tok), km->m->hp.n_vocab);
        return s;
    }
    if (!kn_gguf_has_tokenizer(km->m->gguf))
        return kn_fail(err, KILN_ERR_FORMAT, "%s: no tokenizer (%s); give one with "
                       "--tokenizer_id", path, baked ? "the folder has no tokenizer.json"
                                                     : "no tokenizer.* keys");
    /* the model's own tokenizer: the checks bake and inspect make */
    s = kn_tokenizer_load_gguf(km->m->gguf, &km->tok, err);
    if (!s) s = kn_tokenizer_check_model(km->tok, km->m->gguf, km->m->hp.n_vocab, err);
    return s;
}

kiln_status kiln_model_open(const char *path, const kiln_model_params *params, kiln_model **out,
                            kiln_error *err) {
    kn_error_clear(err);
    *out = NULL;
    kiln_model_params dp = kiln_model_default_params();
    const kiln_model_params *p = params ? params : &dp;
    if (!path || !*path) return kn_fail(err, KILN_ERR_INVALID_ARG, "no model path given");
    if (p->window < 0 || p->chunk < 0)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "window %d / chunk %d must not be negative",
                       p->window, p->chunk);
    kiln_model *km = kn_calloc(1, sizeof *km);
    if (!km) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&km->mu, NULL);
    kn_model_params mp = kn_model_default_params();
    mp.window = p->window;
    mp.chunk = p->chunk;
    kiln_status s = KILN_OK;
    char *gguf = offering_gguf(path);
    char *tmpdir = NULL;
    if (!gguf && kn_is_file(path)) {
        gguf = kn_strdup(path); /* a GGUF source: its weights as they are, default contract */
        if (!gguf) s = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    } else if (!gguf) {
        s = bake_private(path, &mp, p, &tmpdir, &gguf, err);
    }
    if (!s) s = kn_model_open(gguf, &mp, &km->m, err);
    if (!s && tmpdir) {
        /* messages name the folder the user gave, not the private bake under $TMPDIR */
        char *label = kn_strdup(path);
        if (!label) {
            s = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        } else {
            kn_free(km->m->owned_gguf->path);
            km->m->owned_gguf->path = label;
        }
    }
    if (!s && !tmpdir) {
        const char *slash = strrchr(gguf, '/');
        km->dir = slash ? kn_strndup(gguf, (size_t)(slash - gguf)) : kn_strdup(".");
        if (!km->dir) s = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    if (!s) s = kn_contract_build(&km->m->hp, km->m->window, km->m->chunk, km->m->sink,
                                  &km->contract, err);
    if (!s) s = open_tokenizer(km, path, p, tmpdir != NULL, err);
    bool baked = tmpdir != NULL;
    if (tmpdir) {
        kn_rmtree(tmpdir);
        kn_free(tmpdir);
    }
    kn_free(gguf);
    if (s) {
        kiln_model_free(km);
        return s;
    }
    km->max_token_bytes = 1;
    for (uint32_t i = 0; i < kn_tokenizer_n_vocab(km->tok); i++) {
        size_t len = 0;
        kn_tokenizer_token_text(km->tok, (int32_t)i, &len);
        if ((int)len > km->max_token_bytes) km->max_token_bytes = (int)len;
    }
    /* decoding may expand a byte token to U+FFFD (3 bytes) or a piece marker to a space */
    km->max_token_bytes = km->max_token_bytes * 3 + 8;
    if (baked)
        kn_log(p->log, p->log_user, KILN_LOG_INFO, "%s: not an offering: ran a private bake "
               "(weights as they are) made under %s and removed once loaded; kiln bake keeps "
               "one", path, getenv("TMPDIR") && *getenv("TMPDIR") ? "$TMPDIR" : "/tmp");
    *out = km;
    return KILN_OK;
}

void kiln_model_free(kiln_model *km) {
    if (!km) return;
    for (int i = 0; i < km->n_devs; i++) {
        km->devs[i]->device->ops->free(km->devs[i]->device);
        kn_free(km->devs[i]);
    }
    kn_free(km->devs);
    pthread_mutex_destroy(&km->mu);
    kn_tokenizer_free(km->tok);
    kn_model_free(km->m);
    kn_free(km->dir);
    kn_free(km);
}

const kiln_tokenizer *kiln_model_tokenizer(const kiln_model *km) {
    return (const kiln_tokenizer *)km->tok;
}
int kiln_model_window(const kiln_model *km) { return km->contract.window; }
int kiln_model_chunk(const kiln_model *km) { return km->contract.chunk; }
int kiln_model_n_vocab(const kiln_model *km) { return km->m->hp.n_vocab; }

int kiln_model_compiles(const kiln_model *km) {
    kiln_model *m = (kiln_model *)km; /* the lock, not the model, changes */
    pthread_mutex_lock(&m->mu);
    int n = 0;
    for (int i = 0; i < m->n_devs; i++) n += m->devs[i]->device->n_compiles;
    pthread_mutex_unlock(&m->mu);
    return n;
}

long kiln_model_batched_steps(const kiln_model *km) {
    kiln_model *m = (kiln_model *)km;
    pthread_mutex_lock(&m->mu);
    long n = 0;
    for (int i = 0; i < m->n_devs; i++)
        n += __atomic_load_n(&m->devs[i]->device->n_batched, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&m->mu);
    return n;
}

kiln_status kn_model_device(kiln_model *km, const kiln_session_params *p, kn_device_entry **out,
                            kiln_error *err) {
    *out = NULL;
    const char *dev = p->device && *p->device ? p->device : "auto";
    char key[sizeof ((kn_device_entry *)0)->key];
    /* Everything that changes what opening the device does: sessions asking the same share. */
    int w = snprintf(key, sizeof key, "%s|%d|%d|%d|%d|%s", dev, p->mode == KILN_MODE_STATELESS,
                     p->threads, p->verify != 0, p->no_fallback != 0,
                     p->openvino_lib ? p->openvino_lib : "");
    if (w < 0 || (size_t)w >= sizeof key)
        return kn_fail(err, KILN_ERR_INVALID_ARG, "--device / --openvino-lib is too long");
    pthread_mutex_lock(&km->mu);
    kiln_status s = KILN_OK;
    for (int i = 0; i < km->n_devs && !*out; i++)
        if (strcmp(km->devs[i]->key, key) == 0) *out = km->devs[i];
    if (!*out && km->n_devs == km->cap_devs) {
        int cap = km->cap_devs ? km->cap_devs * 2 : 4;
        kn_device_entry **d = kn_realloc(km->devs, (size_t)cap * sizeof *d);
        if (!d) s = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        else {
            km->devs = d;
            km->cap_devs = cap;
        }
    }
    kn_device_entry *e = NULL;
    if (!*out && !s && !(e = kn_calloc(1, sizeof *e))) s = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    if (e) {
        memcpy(e->key, key, sizeof key);
        kn_device_params dp = {0};
        dp.hp = &km->m->hp;
        dp.contract = &km->contract;
        dp.cpu_model = km->m;
        dp.threads = p->threads;
        dp.stateless = p->mode == KILN_MODE_STATELESS;
        dp.offering_dir = km->dir;
        dp.ov_lib = p->openvino_lib;
        dp.log = p->log;
        dp.log_user = p->log_user;
        kn_device_choice c = {dev, p->no_fallback != 0, p->verify != 0,
                              kn_tokenizer_bos(km->tok)};
        s = kn_device_choose(&dp, &c, &e->device, e->fallback, err);
        if (s) kn_free(e);
        else *out = km->devs[km->n_devs++] = e;
    }
    pthread_mutex_unlock(&km->mu);
    return s;
}
