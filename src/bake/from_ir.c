/* from_ir.c — `kiln bake --from-ir`: lock an OpenVINO IR that optimum-intel exported with dynamic
 * dimensions to the static contract, for devices that only compile static graphs.
 *
 * The C API cannot serialize a model, so the XML is rewritten in place: every Parameter's
 * `shape` attribute and its output port's <dim>s get fixed values; the .bin is copied
 * unchanged. Internal port dims are left as written: OpenVINO re-infers every shape when it
 * reads the model, which is also the check that the locked shapes are consistent.
 *
 * Locking rules (T = chunk C new tokens per call, W = window of past tokens):
 *   input_ids, position_ids [?, ?]        -> [1, T]     (inputs_embeds [?, ?, E] -> [1, T, E])
 *   attention_mask [?, ?]                 -> [1, W + T] (past + current)
 *   beam_idx [?]                          -> [1]        cache_position [?] -> [T]
 *   past_key_values.N.key/value (4-D)     -> batch 1, the dynamic sequence dimension W
 * Any other dynamic dimension is an error naming the input: kiln never guesses a shape. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backends/openvino/ir_check.h"
#include "bake/bake.h"

#define IR_MAX KN_OV_IR_MAX
#define MAX_PARAMS 512

typedef struct param {
    char name[160];
    char etype[16];
    int rank;
    long long dims[8];     /* -1 = dynamic */
    long long locked[8];
} param;

/* Finds `attr="` inside [p, end) and returns the value span. */
static bool attr(const char *p, const char *end, const char *name, const char **v, size_t *n) {
    size_t ln = strlen(name);
    for (const char *q = p; q + ln + 2 < end; q++) {
        if (memcmp(q, name, ln) == 0 && q[ln] == '=' && q[ln + 1] == '"' &&
            (q == p || q[-1] == ' ' || q[-1] == '\t' || q[-1] == '\n')) {
            const char *s = q + ln + 2;
            const char *e = memchr(s, '"', (size_t)(end - s));
            if (!e) return false;
            *v = s;
            *n = (size_t)(e - s);
            return true;
        }
    }
    return false;
}

static bool parse_shape(const char *v, size_t n, param *pr) {
    pr->rank = 0;
    if (n == 0) return true; /* scalar */
    const char *p = v, *end = v + n;
    while (p < end) {
        if (pr->rank == 8) return false;
        const char *c = memchr(p, ',', (size_t)(end - p));
        if (!c) c = end;
        while (p < c && *p == ' ') p++;
        char tok[32];
        size_t tl = (size_t)(c - p);
        if (tl == 0 || tl >= sizeof tok) return false;
        memcpy(tok, p, tl);
        tok[tl] = 0;
        long long d = -1;
        if (strcmp(tok, "?") != 0 && strcmp(tok, "-1") != 0 && !strstr(tok, "..")) {
            char *e;
            d = strtoll(tok, &e, 10);
            if (*e || d < 0) return false;
        }
        pr->dims[pr->rank++] = d;
        p = c + 1;
    }
    return true;
}

static bool has(const char *name, const char *w) { return strstr(name, w) != NULL; }

static kiln_status lock_param(param *pr, int W, int C, const char *xml, kiln_error *err) {
    for (int i = 0; i < pr->rank; i++) pr->locked[i] = pr->dims[i];
    const char *n = pr->name;
    long long want[8];
    int wr = -1;
    if ((has(n, "input_ids") || has(n, "position_ids")) && pr->rank == 2) {
        wr = 2; want[0] = 1; want[1] = C;
    } else if (has(n, "inputs_embeds") && pr->rank == 3) {
        wr = 3; want[0] = 1; want[1] = C; want[2] = pr->dims[2];
    } else if (has(n, "attention_mask") && pr->rank == 2) {
        wr = 2; want[0] = 1; want[1] = (long long)W + C;
    } else if (has(n, "beam_idx") && pr->rank == 1) {
        wr = 1; want[0] = 1;
    } else if (has(n, "cache_position") && pr->rank == 1) {
        wr = 1; want[0] = C;
    } else if ((has(n, "past_key") || has(n, "past_value") || has(n, "key_values")) &&
               pr->rank == 4) {
        /* [batch, heads, seq, head_dim]: the batch is 1; the one other dynamic dim is the
         * sequence. */
        wr = 4;
        int dyn = 0;
        for (int i = 0; i < 4; i++) want[i] = pr->dims[i];
        want[0] = 1;
        for (int i = 1; i < 4; i++)
            if (pr->dims[i] < 0) {
                want[i] = W;
                dyn++;
            }
        if (dyn > 1)
            return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: input %s has %d dynamic dimensions "
                           "besides the batch; kiln cannot tell which is the sequence", xml, n, dyn);
    }
    if (wr < 0) {
        for (int i = 0; i < pr->rank; i++)
            if (pr->dims[i] < 0)
                return kn_fail(err, KILN_ERR_UNSUPPORTED,
                               "%s: input %s has a dynamic dimension %d that kiln does not know "
                               "how to lock", xml, n, i);
        return KILN_OK; /* already static */
    }
    for (int i = 0; i < wr; i++) {
        if (pr->dims[i] >= 0 && pr->dims[i] != want[i])
            return kn_fail(err, KILN_ERR_FORMAT, "%s: input %s dimension %d is fixed at %lld, "
                           "the contract needs %lld", xml, n, i, pr->dims[i], want[i]);
        if (want[i] <= 0)
            return kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: input %s dimension %d stays dynamic",
                           xml, n, i);
        pr->locked[i] = want[i];
    }
    return KILN_OK;
}

static void append(kn_buf *b, const char *s, size_t n) { kn_buf_append(b, s, n); }

/* Rewrites the Parameter layer text [ls, le) with the locked shape. */
static void rewrite_param(kn_buf *out, const char *ls, const char *le, const param *pr) {
    const char *v;
    size_t vn;
    const char *data = strstr(ls, "<data");
    if (!data || data > le || !attr(data, le, "shape", &v, &vn)) {
        append(out, ls, (size_t)(le - ls));
        return;
    }
    append(out, ls, (size_t)(v - ls));
    for (int i = 0; i < pr->rank; i++) kn_buf_printf(out, "%s%lld", i ? "," : "", pr->locked[i]);
    const char *p = v + vn;
    /* the output port's dims, in order */
    const char *port = strstr(p, "<port");
    int di = 0;
    while (port && port < le) {
        const char *dim = strstr(p, "<dim>");
        if (!dim || dim > le) break;
        append(out, p, (size_t)(dim + 5 - p));
        const char *close = strstr(dim, "</dim>");
        if (!close || close > le) break;
        if (di < pr->rank) kn_buf_printf(out, "%lld", pr->locked[di]);
        else append(out, dim + 5, (size_t)(close - dim - 5));
        di++;
        p = close;
    }
    append(out, p, (size_t)(le - p));
}


static kiln_status copy_file(const char *from, const char *to, kiln_error *err) {
    kn_map m;
    kiln_status s = kn_map_file(from, &m, err);
    if (s) return s;
    FILE *f = fopen(to, "wb");
    if (!f) {
        kn_map_close(&m);
        return kn_fail(err, KILN_ERR_WRITE, "%s: cannot create: %s", to, strerror(errno));
    }
    bool ok = (m.size == 0 || fwrite(m.data, 1, m.size, f) == m.size) && fflush(f) == 0 &&
              fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    kn_map_close(&m);
    return ok ? KILN_OK : kn_fail(err, KILN_ERR_WRITE, "%s: write failed", to);
}

kiln_status kn_bake_from_ir(const char *xml, const char *out_dir, const kiln_bake_params *p,
                            kiln_error *err) {
    char *text = NULL, *bin = NULL;
    kn_stage stage = {0};
    size_t len = 0;
    kn_buf out = {0}, man = {0};
    param *params = NULL;
    int np = 0;
    kiln_status s = kn_ov_ir_check(xml, err);
    if (s) return s;
    if ((s = kn_read_text(xml, IR_MAX, &text, &len, err))) return s;
    size_t xl = strlen(xml);
    bin = kn_malloc(xl + 5);
    params = kn_calloc(MAX_PARAMS, sizeof *params);
    if (!bin || !params) {
        s = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        goto done;
    }
    memcpy(bin, xml, xl + 1);
    if (xl > 4 && strcmp(bin + xl - 4, ".xml") == 0) memcpy(bin + xl - 4, ".bin", 5);
    else memcpy(bin + xl, ".bin", 5);
    if (!kn_is_file(bin)) {
        s = kn_fail(err, KILN_ERR_IO, "%s: the weights file beside the IR is missing", bin);
        goto done;
    }
    /* Walk the layers; copy everything, rewriting Parameters. */
    const char *p0 = text, *end = text + len;
    for (const char *ls = strstr(p0, "<layer "); ls; ls = strstr(p0, "<layer ")) {
        const char *le = strstr(ls, "</layer>");
        const char *selfclose = strstr(ls, "/>");
        const char *gt = strchr(ls, '>');
        if (!gt) break;
        if (gt > ls && gt[-1] == '/' && (!le || selfclose < le)) le = gt + 1;
        else if (!le) {
            s = kn_fail(err, KILN_ERR_FORMAT, "%s: unterminated <layer> element", xml);
            goto done;
        } else le += 8;
        const char *tv;
        size_t tn;
        bool is_param = attr(ls, gt, "type", &tv, &tn) && tn == 9 && memcmp(tv, "Parameter", 9) == 0;
        append(&out, p0, (size_t)(ls - p0));
        if (!is_param) {
            append(&out, ls, (size_t)(le - ls));
            p0 = le;
            continue;
        }
        if (np == MAX_PARAMS) {
            s = kn_fail(err, KILN_ERR_UNSUPPORTED, "%s: more than %d inputs", xml, MAX_PARAMS);
            goto done;
        }
        param *pr = &params[np++];
        const char *nv, *sv, *ev;
        size_t nn, sn, en;
        const char *data = strstr(gt, "<data");
        /* the tensor name of the output port names the input as optimum does; else the layer */
        const char *port = strstr(gt, "<port");
        if (port && port < le && attr(port, strchr(port, '>') ? strchr(port, '>') : le, "names", &nv, &nn)) {
            const char *comma = memchr(nv, ',', nn);
            if (comma) nn = (size_t)(comma - nv);
        } else if (!attr(ls, gt, "name", &nv, &nn)) {
            nv = "?";
            nn = 1;
        }
        snprintf(pr->name, sizeof pr->name, "%.*s", (int)(nn < 159 ? nn : 159), nv);
        if (!data || data > le || !attr(data, le, "shape", &sv, &sn) ||
            !attr(data, le, "element_type", &ev, &en) || !parse_shape(sv, sn, pr)) {
            s = kn_fail(err, KILN_ERR_FORMAT, "%s: input %s has no readable shape", xml, pr->name);
            goto done;
        }
        snprintf(pr->etype, sizeof pr->etype, "%.*s", (int)(en < 15 ? en : 15), ev);
        if ((s = lock_param(pr, p->window, p->chunk, xml, err))) goto done;
        rewrite_param(&out, ls, le, pr);
        p0 = le;
    }
    append(&out, p0, (size_t)(end - p0));
    if (np == 0) {
        s = kn_fail(err, KILN_ERR_FORMAT, "%s: no inputs (Parameter layers) found", xml);
        goto done;
    }
    for (int i = 0; i < np; i++)
        for (int d = 0; d < params[i].rank; d++)
            if (params[i].locked[d] <= 0) {
                s = kn_fail(err, KILN_ERR_INTERNAL, "%s: input %s still dynamic", xml,
                            params[i].name);
                goto done;
            }

    /* manifest: the locked inputs are the contract of this offering */
    char sha[65];
    kn_sha256_hex(text, len, sha);
    kn_buf_printf(&man, "{\n  \"format\": \"kiln-offering\",\n  \"format_version\": %d,\n"
                        "  \"kiln_version\": \"%s\",\n  \"baked\": true,\n"
                        "  \"source_kind\": \"openvino-ir\",\n  \"model_file\": "
                        "\"openvino_model.xml\",\n  \"contract\": {\"window\": %d, \"chunk\": %d, "
                        "\"batch\": 1, \"graphs\": [{\"name\": \"ir\", \"inputs\": [",
                  KN_FORMAT_VERSION, KILN_VERSION, p->window, p->chunk);
    for (int i = 0; i < np; i++) {
        kn_buf_printf(&man, "%s{\"name\": ", i ? ", " : "");
        kn_buf_json_str(&man, params[i].name, strlen(params[i].name));
        kn_buf_printf(&man, ", \"dtype\": \"%s\", \"shape\": [", params[i].etype);
        for (int d = 0; d < params[i].rank; d++)
            kn_buf_printf(&man, "%s%lld", d ? ", " : "", params[i].locked[d]);
        kn_buf_append(&man, "]}", 2);
    }
    kn_buf_printf(&man, "], \"outputs\": []}]},\n  \"provenance\": {\"kiln_version\": \"%s\", "
                        "\"source\": ", KILN_VERSION);
    kn_buf_json_str(&man, xml, strlen(xml));
    kn_buf_printf(&man, ", \"source_kind\": \"openvino-ir\", \"options\": {\"window\": %d, "
                        "\"chunk\": %d}, \"files\": [{\"name\": \"openvino_model.xml\", "
                        "\"sha256\": \"%s\"}]},\n  \"validation\": {\"ok\": true, \"checks\": "
                        "[{\"check\": \"every input static\", \"ok\": true, \"detail\": \"%d "
                        "inputs locked\"}]}\n}\n",
                  p->window, p->chunk, sha, np);
    if (out.oom || man.oom) {
        s = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        goto done;
    }

    /* staged beside the target and renamed into place, as the GGUF bake is */
    if ((s = kn_stage_begin(&stage, out_dir, err))) goto done;
    char *xo = kn_path_join(stage.tmp, "openvino_model.xml");
    char *bo = kn_path_join(stage.tmp, "openvino_model.bin");
    char *mo = kn_path_join(stage.tmp, "manifest.json");
    if (!xo || !bo || !mo) s = kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    if (!s) s = kn_write_file(xo, out.data, out.len, err);
    if (!s) s = copy_file(bin, bo, err);
    if (!s) s = kn_write_file(mo, man.data, man.len, err);
    kn_free(xo);
    kn_free(bo);
    kn_free(mo);
    if (!s) s = kn_stage_commit(&stage, err);
done:
    kn_stage_end(&stage);
    kn_free(text);
    kn_free(bin);
    kn_free(params);
    kn_buf_free(&out);
    kn_buf_free(&man);
    return s;
}
