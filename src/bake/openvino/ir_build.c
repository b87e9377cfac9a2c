/* ir_build.c — OpenVINO IR v11 builder (see ir_build.h).
 *
 * Layers are kept as records and the XML is written only at the end, because a tensor name
 * (the `names` attribute of a producer's output port) is known only once a Result asks for it.
 * Constant bytes go to the .bin immediately, so a multi-gigabyte model never sits in memory. */
#include "bake/openvino/ir_build.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Constants start on this boundary: plugins that map the .bin use weights in place and prefer
 * aligned rows. */
#define BIN_ALIGN 64

typedef struct ov_val {
    int layer;
    int port;
    kn_ov_et et;
    int rank;
    int64_t shape[KN_OV_MAX_RANK];
    char *names;              /* tensor name(s) for the port, or NULL */
} ov_val;

typedef struct ov_layer {
    size_t head_off, head_len; /* "<data .../>" text in b->heads (may be empty) */
    char type[24];
    char version[8];
    char *extra;               /* extra attributes on <layer> (Result's output_names) */
    int in_off, n_in;          /* into b->ins */
    int out_first, n_out;      /* value handles */
} ov_layer;

struct kn_ovb {
    FILE *bin;
    char *bin_path;
    uint64_t bin_off;
    ov_val *v;
    int nv, capv;
    ov_layer *l;
    int nl, capl;
    int *ins;
    int nins, capins;
    kn_buf heads;
    bool failed;
    kiln_error err;
};

static const struct {
    const char *name, *precision;
    int bits;
} ET[KN_OV_ET_COUNT] = {
    [KN_OV_F32] = {"f32", "FP32", 32}, [KN_OV_F16] = {"f16", "FP16", 16},
    [KN_OV_I64] = {"i64", "I64", 64},  [KN_OV_I32] = {"i32", "I32", 32},
    [KN_OV_I8] = {"i8", "I8", 8},      [KN_OV_U8] = {"u8", "U8", 8},
    [KN_OV_I4] = {"i4", "I4", 4},      [KN_OV_U4] = {"u4", "U4", 4},
    [KN_OV_BOOL] = {"boolean", "BOOL", 8},
};

static bool is_float(kn_ov_et et) { return et == KN_OV_F32 || et == KN_OV_F16; }

int kn_ovb_fail(kn_ovb *b, kiln_status code, const char *fmt, ...) {
    if (b->failed) return -1;
    b->failed = true;
    b->err.code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err.message, sizeof b->err.message, fmt, ap);
    va_end(ap);
    return -1;
}

kn_ovb *kn_ovb_new(FILE *bin, const char *bin_path, kiln_error *err) {
    kn_ovb *b = kn_calloc(1, sizeof *b);
    if (b) b->bin_path = kn_strdup(bin_path ? bin_path : "(bin)");
    if (!b || !b->bin_path) {
        kn_free(b);
        kn_fail(err, KILN_ERR_NOMEM, "openvino IR: out of memory");
        return NULL;
    }
    b->bin = bin;
    return b;
}

void kn_ovb_free(kn_ovb *b) {
    if (!b) return;
    for (int i = 0; i < b->nv; i++) kn_free(b->v[i].names);
    for (int i = 0; i < b->nl; i++) kn_free(b->l[i].extra);
    kn_free(b->v);
    kn_free(b->l);
    kn_free(b->ins);
    kn_buf_free(&b->heads);
    kn_free(b->bin_path);
    kn_free(b);
}

bool kn_ovb_ok(const kn_ovb *b) { return !b->failed; }

static bool valid(const kn_ovb *b, int v) { return v >= 0 && v < b->nv; }

int kn_ovb_shape(const kn_ovb *b, int v, int64_t *shape) {
    if (!valid(b, v)) return -1;
    if (shape && b->v[v].rank)
        memcpy(shape, b->v[v].shape, sizeof(int64_t) * (size_t)b->v[v].rank);
    return b->v[v].rank;
}

kn_ov_et kn_ovb_type(const kn_ovb *b, int v) { return valid(b, v) ? b->v[v].et : KN_OV_F32; }

static bool grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return true;
    int nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *q = kn_realloc(*p, (size_t)nc * elem);
    if (!q) return false;
    *p = q;
    *cap = nc;
    return true;
}

static bool check_inputs(kn_ovb *b, const int *ins, int n_in, const char *type) {
    if (b->failed) return false;
    for (int i = 0; i < n_in; i++)
        if (!valid(b, ins[i])) {
            kn_ovb_fail(b, KILN_ERR_INTERNAL, "openvino IR: %s input %d is not a value", type, i);
            return false;
        }
    return true;
}

/* Adds a layer whose n_out outputs all have type et and the shapes given (shapes[j] of
 * ranks[j]); data is the inner text of <data .../> or NULL. Returns the first output handle. */
static int add_layer(kn_ovb *b, const char *type, const char *version, const char *data,
                     const int *ins, int n_in, int n_out, kn_ov_et et, const int *ranks,
                     const int64_t (*shapes)[KN_OV_MAX_RANK]) {
    if (!check_inputs(b, ins, n_in, type)) return -1;
    if (!grow((void **)&b->l, &b->capl, b->nl + 1, sizeof *b->l) ||
        !grow((void **)&b->ins, &b->capins, b->nins + n_in, sizeof *b->ins) ||
        !grow((void **)&b->v, &b->capv, b->nv + n_out, sizeof *b->v))
        return kn_ovb_fail(b, KILN_ERR_NOMEM, "openvino IR: out of memory");
    ov_layer *L = &b->l[b->nl];
    memset(L, 0, sizeof *L);
    snprintf(L->type, sizeof L->type, "%s", type);
    snprintf(L->version, sizeof L->version, "%s", version);
    L->head_off = b->heads.len;
    if (data) kn_buf_printf(&b->heads, "<data %s />", data);
    if (b->heads.oom) return kn_ovb_fail(b, KILN_ERR_NOMEM, "openvino IR: out of memory");
    L->head_len = b->heads.len - L->head_off;
    L->in_off = b->nins;
    L->n_in = n_in;
    if (n_in) memcpy(b->ins + b->nins, ins, sizeof(int) * (size_t)n_in);
    b->nins += n_in;
    L->out_first = b->nv;
    L->n_out = n_out;
    for (int j = 0; j < n_out; j++) {
        ov_val *o = &b->v[b->nv++];
        memset(o, 0, sizeof *o);
        o->layer = b->nl;
        o->port = n_in + j;
        o->et = et;
        o->rank = ranks[j];
        if (ranks[j]) memcpy(o->shape, shapes[j], sizeof(int64_t) * (size_t)ranks[j]);
    }
    b->nl++;
    return L->out_first;
}

static int add1(kn_ovb *b, const char *type, const char *version, const char *data,
                const int *ins, int n_in, kn_ov_et et, int rank, const int64_t *shape) {
    int64_t s[1][KN_OV_MAX_RANK] = {{0}};
    if (rank < 0 || rank > KN_OV_MAX_RANK)
        return kn_ovb_fail(b, KILN_ERR_INTERNAL, "openvino IR: %s of rank %d", type, rank);
    if (rank) memcpy(s[0], shape, sizeof(int64_t) * (size_t)rank);
    return add_layer(b, type, version, data, ins, n_in, 1, et, &rank, s);
}

static uint64_t n_elems(int rank, const int64_t *shape) {
    uint64_t n = 1;
    for (int i = 0; i < rank; i++) n *= (uint64_t)shape[i];
    return n;
}

static void shape_str(char *dst, size_t n, int rank, const int64_t *shape) {
    size_t o = 0;
    dst[0] = 0;
    for (int i = 0; i < rank && o < n; i++)
        o += (size_t)snprintf(dst + o, n - o, "%s%lld", i ? "," : "", (long long)shape[i]);
}

int kn_ovb_param(kn_ovb *b, const char *name, kn_ov_et et, int rank, const int64_t *shape) {
    if (b->failed) return -1;
    for (int i = 0; i < rank; i++)
        if (shape[i] <= 0)
            return kn_ovb_fail(b, KILN_ERR_INVALID_ARG,
                               "openvino IR: input %s has a non-positive dimension", name);
    char s[160], data[256];
    shape_str(s, sizeof s, rank, shape);
    snprintf(data, sizeof data, "shape=\"%s\" element_type=\"%s\"", s, ET[et].name);
    int v = add1(b, "Parameter", "opset1", data, NULL, 0, et, rank, shape);
    if (v >= 0 && !(b->v[v].names = kn_strdup(name)))
        return kn_ovb_fail(b, KILN_ERR_NOMEM, "openvino IR: out of memory");
    return v;
}

int kn_ovb_const(kn_ovb *b, kn_ov_et et, int rank, const int64_t *shape, const void *data) {
    if (b->failed) return -1;
    uint64_t n = n_elems(rank, shape), nbytes = (n * (uint64_t)ET[et].bits + 7) / 8;
    static const uint8_t zeros[BIN_ALIGN];
    uint64_t pad = (BIN_ALIGN - b->bin_off % BIN_ALIGN) % BIN_ALIGN;
    if ((pad && fwrite(zeros, 1, (size_t)pad, b->bin) != pad) ||
        (nbytes && fwrite(data, 1, (size_t)nbytes, b->bin) != nbytes))
        return kn_ovb_fail(b, KILN_ERR_WRITE, "%s: write failed", b->bin_path);
    b->bin_off += pad;
    char s[160], attrs[320];
    shape_str(s, sizeof s, rank, shape);
    snprintf(attrs, sizeof attrs, "element_type=\"%s\" shape=\"%s\" offset=\"%llu\" size=\"%llu\"",
             ET[et].name, s, (unsigned long long)b->bin_off, (unsigned long long)nbytes);
    b->bin_off += nbytes;
    return add1(b, "Const", "opset1", attrs, NULL, 0, et, rank, shape);
}

int kn_ovb_const_f32(kn_ovb *b, float v) { return kn_ovb_const(b, KN_OV_F32, 0, NULL, &v); }
int kn_ovb_const_i32(kn_ovb *b, int32_t v) { return kn_ovb_const(b, KN_OV_I32, 0, NULL, &v); }
int kn_ovb_const_i64v(kn_ovb *b, int n, const int64_t *v) {
    int64_t s = n;
    return kn_ovb_const(b, KN_OV_I64, 1, &s, v);
}

static int broadcast(kn_ovb *b, const char *type, const ov_val *x, const ov_val *y,
                     int *rank, int64_t *out) {
    int r = x->rank > y->rank ? x->rank : y->rank;
    for (int i = 0; i < r; i++) {
        int ix = i - (r - x->rank), iy = i - (r - y->rank);
        int64_t a = ix >= 0 ? x->shape[ix] : 1, c = iy >= 0 ? y->shape[iy] : 1;
        if (a != c && a != 1 && c != 1)
            return kn_ovb_fail(b, KILN_ERR_INTERNAL,
                               "openvino IR: %s operands do not broadcast (dim %d: %lld vs %lld)",
                               type, i, (long long)a, (long long)c);
        out[i] = a == 1 ? c : a;
    }
    *rank = r;
    return 0;
}

/* Elementwise over two operands of one type; the result has type `out` (the operands' own
 * type when out < 0). */
static int elementwise(kn_ovb *b, const char *type, int x, int y, int out) {
    int ins[2] = {x, y};
    if (!check_inputs(b, ins, 2, type)) return -1;
    const ov_val *a = &b->v[x], *c = &b->v[y];
    if (a->et != c->et)
        return kn_ovb_fail(b, KILN_ERR_INTERNAL, "openvino IR: %s of %s and %s", type,
                           ET[a->et].name, ET[c->et].name);
    int r;
    int64_t s[KN_OV_MAX_RANK];
    if (broadcast(b, type, a, c, &r, s) < 0) return -1;
    return add1(b, type, "opset1", "auto_broadcast=\"numpy\"", ins, 2,
                out < 0 ? a->et : (kn_ov_et)out, r, s);
}

int kn_ovb_binary(kn_ovb *b, const char *type, int x, int y) {
    bool logical = strncmp(type, "Logical", 7) == 0;
    if (valid(b, x) && (b->v[x].et == KN_OV_BOOL) != logical)
        return kn_ovb_fail(b, KILN_ERR_INTERNAL, "openvino IR: %s of %s", type,
                           ET[b->v[x].et].name);
    return elementwise(b, type, x, y, -1);
}

int kn_ovb_compare(kn_ovb *b, const char *type, int x, int y) {
    return elementwise(b, type, x, y, KN_OV_BOOL);
}

int kn_ovb_select(kn_ovb *b, int cond, int x, int y) {
    int ins[3] = {cond, x, y};
    if (!check_inputs(b, ins, 3, "Select")) return -1;
    const ov_val *c = &b->v[cond], *a = &b->v[x], *e = &b->v[y];
    if (c->et != KN_OV_BOOL || a->et != e->et)
        return kn_ovb_fail(b, KILN_ERR_INTERNAL, "openvino IR: Select of %s ? %s : %s",
                           ET[c->et].name, ET[a->et].name, ET[e->et].name);
    ov_val ab = *a;
    if (broadcast(b, "Select", a, e, &ab.rank, ab.shape) < 0) return -1;
    int r;
    int64_t s[KN_OV_MAX_RANK];
    if (broadcast(b, "Select", c, &ab, &r, s) < 0) return -1;
    return add1(b, "Select", "opset1", "auto_broadcast=\"numpy\"", ins, 3, a->et, r, s);
}

int kn_ovb_unary(kn_ovb *b, const char *type, int x) {
    if (!check_inputs(b, &x, 1, type)) return -1;
    const ov_val *a = &b->v[x];
    if (!is_float(a->et))
        return kn_ovb_fail(b, KILN_ERR_INTERNAL, "openvino IR: %s of %s", type, ET[a->et].name);
    int64_t s[KN_OV_MAX_RANK];
    memcpy(s, a->shape, sizeof s);
    /* "GeluTanh": Gelu-7 with the tanh approximation (Gemma's gelu_pytorch_tanh) */
    if (strcmp(type, "GeluTanh") == 0)
        return add1(b, "Gelu", "opset7", "approximation_mode=\"tanh\"", &x, 1, a->et, a->rank,
                    s);
    return add1(b, type, strcmp(type, "Swish") == 0 ? "opset4" : "opset1", NULL, &x, 1, a->et,
                a->rank, s);
}

int kn_ovb_convert(kn_ovb *b, int x, kn_ov_et to) {
    if (!check_inputs(b, &x, 1, "Convert")) return -1;
    char data[64];
    snprintf(data, sizeof data, "destination_type=\"%s\"", ET[to].name);
    int64_t s[KN_OV_MAX_RANK];
    memcpy(s, b->v[x].shape, sizeof s);
    return add1(b, "Convert", "opset1", data, &x, 1, to, b->v[x].rank, s);
}

int kn_ovb_matmul(kn_ovb *b, int x, int y, bool ta, bool tb) {
    int ins[2] = {x, y};
    if (!check_inputs(b, ins, 2, "MatMul")) return -1;
    ov_val a = b->v[x], c = b->v[y];
    if (a.rank < 2 || c.rank < 2 || a.et != c.et)
        return kn_ovb_fail(b, KILN_ERR_INTERNAL, "openvino IR: MatMul of rank %d and %d", a.rank,
                           c.rank);
    int64_t m = a.shape[a.rank - (ta ? 1 : 2)], k1 = a.shape[a.rank - (ta ? 2 : 1)];
    int64_t k2 = c.shape[c.rank - (tb ? 1 : 2)], n = c.shape[c.rank - (tb ? 2 : 1)];
    if (k1 != k2)
        return kn_ovb_fail(b, KILN_ERR_INTERNAL, "openvino IR: MatMul inner dims %lld vs %lld",
                           (long long)k1, (long long)k2);
    a.rank -= 2;
    c.rank -= 2;
    int r;
    int64_t s[KN_OV_MAX_RANK];
    if (broadcast(b, "MatMul", &a, &c, &r, s) < 0) return -1;
    s[r] = m;
    s[r + 1] = n;
    char data[96];
    snprintf(data, sizeof data, "transpose_a=\"%s\" transpose_b=\"%s\"", ta ? "true" : "false",
             tb ? "true" : "false");
    return add1(b, "MatMul", "opset1", data, ins, 2, a.et, r + 2, s);
}

int kn_ovb_reshape(kn_ovb *b, int x, int rank, const int64_t *shape) {
    if (!check_inputs(b, &x, 1, "Reshape")) return -1;
    if (n_elems(rank, shape) != n_elems(b->v[x].rank, b->v[x].shape))
        return kn_ovb_fail(b, KILN_ERR_INTERNAL, "openvino IR: Reshape changes the element count");
    int t = kn_ovb_const_i64v(b, rank, shape);
    int ins[2] = {x, t};
    return add1(b, "Reshape", "opset1", "special_zero=\"false\"", ins, 2, b->v[x].et, rank, shape);
}

int kn_ovb_transpose(kn_ovb *b, int x, int rank, const int64_t *perm) {
    if (!check_inputs(b, &x, 1, "Transpose")) return -1;
    const ov_val *a = &b->v[x];
    if (rank != a->rank) return kn_ovb_fail(b, KILN_ERR_INTERNAL, "openvino IR: Transpose rank");
    int64_t s[KN_OV_MAX_RANK];
    for (int i = 0; i < rank; i++) {
        if (perm[i] < 0 || perm[i] >= rank)
            return kn_ovb_fail(b, KILN_ERR_INTERNAL, "openvino IR: Transpose perm");
        s[i] = a->shape[perm[i]];
    }
    int p = kn_ovb_const_i64v(b, rank, perm);
    int ins[2] = {x, p};
    kn_ov_et et = b->v[x].et;
    return add1(b, "Transpose", "opset1", NULL, ins, 2, et, rank, s);
}

int kn_ovb_concat(kn_ovb *b, int n, const int *xs, int axis) {
    if (n < 1 || !check_inputs(b, xs, n, "Concat")) return -1;
    const ov_val *a = &b->v[xs[0]];
    int64_t s[KN_OV_MAX_RANK];
    memcpy(s, a->shape, sizeof s);
    if (axis < 0 || axis >= a->rank) return kn_ovb_fail(b, KILN_ERR_INTERNAL, "Concat axis");
    for (int i = 1; i < n; i++) {
        const ov_val *c = &b->v[xs[i]];
        if (c->rank != a->rank || c->et != a->et)
            return kn_ovb_fail(b, KILN_ERR_INTERNAL, "openvino IR: Concat operands differ");
        for (int d = 0; d < a->rank; d++)
            if (d != axis && c->shape[d] != a->shape[d])
                return kn_ovb_fail(b, KILN_ERR_INTERNAL, "openvino IR: Concat dim %d differs", d);
        s[axis] += c->shape[axis];
    }
    char data[32];
    snprintf(data, sizeof data, "axis=\"%d\"", axis);
    return add1(b, "Concat", "opset1", data, xs, n, a->et, a->rank, s);
}

int kn_ovb_gather(kn_ovb *b, int data, int indices, int axis) {
    int ins0[2] = {data, indices};
    if (!check_inputs(b, ins0, 2, "Gather")) return -1;
    const ov_val d = b->v[data], ix = b->v[indices];
    if (axis < 0 || axis >= d.rank || d.rank + ix.rank - 1 > KN_OV_MAX_RANK ||
        (ix.et != KN_OV_I32 && ix.et != KN_OV_I64))
        return kn_ovb_fail(b, KILN_ERR_INTERNAL, "openvino IR: bad Gather");
    int64_t s[KN_OV_MAX_RANK];
    int r = 0;
    for (int i = 0; i < axis; i++) s[r++] = d.shape[i];
    for (int i = 0; i < ix.rank; i++) s[r++] = ix.shape[i];
    for (int i = axis + 1; i < d.rank; i++) s[r++] = d.shape[i];
    int64_t ax = axis;
    int a = kn_ovb_const(b, KN_OV_I64, 0, NULL, &ax);
    int ins[3] = {data, indices, a};
    return add1(b, "Gather", "opset8", "batch_dims=\"0\"", ins, 3, d.et, r, s);
}

int kn_ovb_reduce(kn_ovb *b, const char *type, int x, int axis, bool keep_dims) {
    if (!check_inputs(b, &x, 1, type)) return -1;
    const ov_val a = b->v[x];
    if (axis < 0 || axis >= a.rank)
        return kn_ovb_fail(b, KILN_ERR_INTERNAL, "openvino IR: %s axis", type);
    int64_t ax = axis, s[KN_OV_MAX_RANK];
    int r = 0;
    for (int i = 0; i < a.rank; i++)
        if (i != axis) s[r++] = a.shape[i];
        else if (keep_dims) s[r++] = 1;
    int c = kn_ovb_const_i64v(b, 1, &ax);
    int ins[2] = {x, c};
    return add1(b, type, "opset1", keep_dims ? "keep_dims=\"true\"" : "keep_dims=\"false\"",
                ins, 2, a.et, r, s);
}

int kn_ovb_reduce_mean(kn_ovb *b, int x, int axis) {
    return kn_ovb_reduce(b, "ReduceMean", x, axis, true);
}

int kn_ovb_softmax(kn_ovb *b, int x, int axis) {
    if (!check_inputs(b, &x, 1, "SoftMax")) return -1;
    const ov_val a = b->v[x];
    if (axis < 0 || axis >= a.rank) return kn_ovb_fail(b, KILN_ERR_INTERNAL, "SoftMax axis");
    char data[32];
    snprintf(data, sizeof data, "axis=\"%d\"", axis);
    return add1(b, "SoftMax", "opset8", data, &x, 1, a.et, a.rank, a.shape);
}

int kn_ovb_split(kn_ovb *b, int x, int axis, int n, int *out) {
    if (!check_inputs(b, &x, 1, "Split")) return -1;
    const ov_val a = b->v[x];
    if (axis < 0 || axis >= a.rank || n < 1 || n > 8 || a.shape[axis] % n)
        return kn_ovb_fail(b, KILN_ERR_INTERNAL, "openvino IR: bad Split");
    int64_t ax = axis;
    int c = kn_ovb_const(b, KN_OV_I64, 0, NULL, &ax);
    int ins[2] = {x, c};
    int ranks[8];
    int64_t shapes[8][KN_OV_MAX_RANK];
    for (int j = 0; j < n; j++) {
        ranks[j] = a.rank;
        memcpy(shapes[j], a.shape, sizeof shapes[j]);
        shapes[j][axis] = a.shape[axis] / n;
    }
    char data[32];
    snprintf(data, sizeof data, "num_splits=\"%d\"", n);
    int first = add_layer(b, "Split", "opset1", data, ins, 2, n, a.et, ranks,
                          (const int64_t(*)[KN_OV_MAX_RANK])shapes);
    if (first < 0) return -1;
    for (int j = 0; j < n; j++) out[j] = first + j;
    return 0;
}

int kn_ovb_result(kn_ovb *b, int x, const char *name) {
    if (!check_inputs(b, &x, 1, "Result")) return -1;
    if (b->v[x].names)
        return kn_ovb_fail(b, KILN_ERR_INTERNAL, "openvino IR: output %s already named", name);
    if (!(b->v[x].names = kn_strdup(name)))
        return kn_ovb_fail(b, KILN_ERR_NOMEM, "openvino IR: out of memory");
    if (add_layer(b, "Result", "opset1", NULL, &x, 1, 0, KN_OV_F32, NULL, NULL) < 0) return -1;
    ov_layer *L = &b->l[b->nl - 1];
    size_t n = strlen(name) + 24;
    if (!(L->extra = kn_malloc(n)))
        return kn_ovb_fail(b, KILN_ERR_NOMEM, "openvino IR: out of memory");
    snprintf(L->extra, n, " output_names=\"%s\"", name);
    return 0;
}

static void port_xml(kn_buf *o, int id, const ov_val *v, bool with_names) {
    kn_buf_printf(o, "\t\t\t\t<port id=\"%d\" precision=\"%s\"", id, ET[v->et].precision);
    if (with_names && v->names) kn_buf_printf(o, " names=\"%s\"", v->names);
    if (v->rank == 0) {
        kn_buf_printf(o, " />\n");
        return;
    }
    kn_buf_printf(o, ">\n");
    for (int i = 0; i < v->rank; i++)
        kn_buf_printf(o, "\t\t\t\t\t<dim>%lld</dim>\n", (long long)v->shape[i]);
    kn_buf_printf(o, "\t\t\t\t</port>\n");
}

kiln_status kn_ovb_finish(kn_ovb *b, FILE *xml, const char *net_name, kiln_error *err) {
    if (b->failed) {
        if (err) *err = b->err;
        return b->err.code;
    }
    kn_buf o = {0};
    kn_buf_printf(&o, "<?xml version=\"1.0\"?>\n<net name=\"%s\" version=\"11\">\n\t<layers>\n",
                  net_name);
    for (int i = 0; i < b->nl; i++) {
        const ov_layer *L = &b->l[i];
        kn_buf_printf(&o, "\t\t<layer id=\"%d\" name=\"%s_%d\" type=\"%s\" version=\"%s\"%s>\n", i,
                      L->type, i, L->type, L->version, L->extra ? L->extra : "");
        if (L->head_len) {
            kn_buf_printf(&o, "\t\t\t");
            kn_buf_append(&o, b->heads.data + L->head_off, L->head_len);
            kn_buf_printf(&o, "\n");
        }
        if (L->n_in) {
            kn_buf_printf(&o, "\t\t\t<input>\n");
            for (int j = 0; j < L->n_in; j++) port_xml(&o, j, &b->v[b->ins[L->in_off + j]], false);
            kn_buf_printf(&o, "\t\t\t</input>\n");
        }
        if (L->n_out) {
            kn_buf_printf(&o, "\t\t\t<output>\n");
            for (int j = 0; j < L->n_out; j++)
                port_xml(&o, L->n_in + j, &b->v[L->out_first + j], true);
            kn_buf_printf(&o, "\t\t\t</output>\n");
        }
        kn_buf_printf(&o, "\t\t</layer>\n");
    }
    kn_buf_printf(&o, "\t</layers>\n\t<edges>\n");
    for (int i = 0; i < b->nl; i++) {
        const ov_layer *L = &b->l[i];
        for (int j = 0; j < L->n_in; j++) {
            const ov_val *v = &b->v[b->ins[L->in_off + j]];
            kn_buf_printf(&o,
                          "\t\t<edge from-layer=\"%d\" from-port=\"%d\" to-layer=\"%d\" "
                          "to-port=\"%d\" />\n",
                          v->layer, v->port, i, j);
        }
    }
    kn_buf_printf(&o, "\t</edges>\n\t<rt_info />\n</net>\n");
    kiln_status s = KILN_OK;
    if (o.oom) s = kn_fail(err, KILN_ERR_NOMEM, "openvino IR: out of memory");
    else if (fwrite(o.data, 1, o.len, xml) != o.len)
        s = kn_fail(err, KILN_ERR_WRITE, "openvino IR: writing the XML failed");
    kn_buf_free(&o);
    return s;
}
