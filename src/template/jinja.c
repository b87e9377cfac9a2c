/* jinja.c — a Jinja subset, enough for the chat templates models ship (see jinja.h).
 *
 * Structure: the source is lexed into tokens (whitespace control, trim_blocks and lstrip_blocks
 * are applied here, mirroring jinja2's lexer rule for rule), parsed into a tree (so syntax
 * errors surface before any output, as with jinja2), then the tree is walked. Every value and
 * node lives in one arena freed after the render; errors unwind with longjmp, which is safe
 * because nothing outside the arena and the output buffer is owned mid-render. Output size,
 * arena size, loop iterations and nesting depth are capped so no template can exhaust memory,
 * spin forever or overflow the stack. */
#include "template/jinja.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include <utf8proc.h>

#include "base/limits.h"

/* The caps (base/limits.h): source size, output, loop iterations and evaluation steps bound
 * the work of one rendering; arena and depth bound memory and stack. */
#define MAX_SOURCE ((size_t)KN_MAX_TEMPLATE_BYTES)
#define MAX_OUTPUT ((size_t)KN_MAX_TEMPLATE_OUTPUT)
#define MAX_ARENA ((size_t)256 << 20)
#define MAX_ITERATIONS KN_MAX_TEMPLATE_LOOPS
#define MAX_STEPS KN_MAX_TEMPLATE_STEPS
#define MAX_DEPTH 200

/* ---------------------------------------------------------------- values */

typedef enum jt { JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_NS } jt;

typedef struct jlist jlist;
typedef struct jdict jdict;

typedef struct jv {
    jt t;
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *p;
            size_t n;
        } s;
        jlist *l;
        jdict *d; /* JV_DICT and JV_NS */
    } u;
} jv;

struct jlist {
    size_t n, cap;
    jv *v;
};

struct jdict {
    size_t n, cap;
    jv *k, *v;
};

/* ---------------------------------------------------------------- tokens and nodes */

typedef enum tt { T_EOF, T_DATA, T_VBEGIN, T_VEND, T_BBEGIN, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP } tt;

typedef struct tok {
    tt t;
    int line;
    const char *p; /* text (decoded for T_STR) */
    size_t n;
    int64_t i;
    double f;
} tok;

typedef enum nk {
    N_TEXT, N_PRINT, N_IF, N_FOR, N_SET, N_BREAK, N_CONTINUE, N_BLOCK,
    E_CONST, E_NAME, E_LIST, E_DICT, E_ATTR, E_ITEM, E_SLICE, E_CALL, E_FILTER, E_TEST,
    E_NEG, E_POS, E_NOT, E_AND, E_OR, E_BIN, E_CMP, E_COND, E_CONCAT
} nk;

enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FDIV, OP_MOD, OP_POW };
enum { C_EQ, C_NE, C_LT, C_GT, C_LE, C_GE, C_IN, C_NOTIN };

typedef struct node {
    nk k;
    int line;
    int op;
    bool neg;          /* E_TEST: "is not" */
    jv v;              /* E_CONST value; the name of E_NAME/E_ATTR/E_FILTER/E_TEST/N_SET/N_FOR */
    jv v2;             /* N_SET: attribute of ns.attr; N_FOR: second loop variable */
    struct node *a, *b, *c, *d;
    struct node **args; /* positional then keyword arguments; list/dict items; compare operands */
    size_t nargs, nkw;
    jv *kwnames;
    int *ops;          /* E_CMP operators */
    struct node *body, *els, *next;
} node;

/* ---------------------------------------------------------------- interpreter state */

typedef struct frame {
    struct frame *up;
    size_t n, cap;
    jv *names, *vals;
} frame;

typedef struct blk {
    struct blk *next;
    size_t used, cap;
    max_align_t data[];
} blk;

typedef struct R {
    jmp_buf jb;
    kiln_status code;
    char msg[512];
    blk *arena;
    size_t arena_total;
    kn_buf out;
    tok *toks;
    size_t ntok, captok, pos;
    const char *src;
    int depth;
    unsigned long iterations;
    unsigned long steps;      /* statements run and expressions evaluated */
    const char *line_p;       /* lexer: line_no is the line of line_p (advanced, never rescanned) */
    int line_no;
    frame *globals;
    cJSON *kwargs;            /* parsed kwargs_json, deleted on every way out */
} R;

static _Noreturn KN_PRINTF(3, 4) void fail(R *r, kiln_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
    r->code = code;
    longjmp(r->jb, 1);
}

static void *amalloc(R *r, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!n) n = 16;
    if (r->arena && r->arena->cap - r->arena->used >= n) {
        void *p = (char *)r->arena->data + r->arena->used;
        r->arena->used += n;
        return p;
    }
    size_t cap = n > (64u << 10) ? n : (64u << 10);
    if (cap > MAX_ARENA || r->arena_total + cap > MAX_ARENA)
        fail(r, KILN_ERR_INVALID_ARG, "chat template: uses more than %zu MiB of memory",
             MAX_ARENA >> 20);
    blk *b = kn_malloc(sizeof(blk) + cap);
    if (!b) fail(r, KILN_ERR_NOMEM, "chat template: out of memory");
    b->cap = cap;
    b->used = n;
    b->next = r->arena;
    r->arena = b;
    r->arena_total += cap;
    return b->data;
}

static void *acalloc(R *r, size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) fail(r, KILN_ERR_NOMEM, "chat template: out of memory");
    void *p = amalloc(r, count * size);
    memset(p, 0, count * size);
    return p;
}

/* Grows an arena array of elem-sized items from *cap to hold n+1; the old copy is abandoned
 * to the arena (freed with it). */
static void *agrow(R *r, void *p, size_t n, size_t *cap, size_t elem) {
    if (n < *cap) return p;
    size_t nc = *cap ? *cap * 2 : 4;
    void *q = acalloc(r, nc, elem);
    if (n) memcpy(q, p, n * elem);
    *cap = nc;
    return q;
}

/* Charges units of work (an evaluation, an item visited, 32 bytes scanned) against the
 * rendering's budget, so no template can make one turn cost minutes however it combines
 * loops, big strings and lookups. */
static void work(R *r, size_t units) {
    r->steps += units;
    if (r->steps > MAX_STEPS)
        fail(r, KILN_ERR_INVALID_ARG, "chat template: rendering takes more than %u steps",
             MAX_STEPS);
}

static void work_bytes(R *r, size_t n) { work(r, 1 + n / 32); }

static jv mk_undef(void) { jv v = {JV_UNDEF, {0}}; return v; }
static jv mk_none(void) { jv v = {JV_NONE, {0}}; return v; }
static jv mk_bool(bool b) { jv v = {JV_BOOL, {0}}; v.u.b = b; return v; }
static jv mk_int(int64_t i) { jv v = {JV_INT, {0}}; v.u.i = i; return v; }
static jv mk_float(double f) { jv v = {JV_FLOAT, {0}}; v.u.f = f; return v; }
static jv mk_str(const char *p, size_t n) { jv v = {JV_STR, {0}}; v.u.s.p = p; v.u.s.n = n; return v; }
static jv mk_cstr(const char *p) { return mk_str(p, strlen(p)); }

static jv mk_list(R *r) {
    jv v = {JV_LIST, {0}};
    v.u.l = acalloc(r, 1, sizeof(jlist));
    return v;
}

static void list_push(R *r, jlist *l, jv x) {
    l->v = agrow(r, l->v, l->n, &l->cap, sizeof(jv));
    l->v[l->n++] = x;
}

static jv mk_dict(R *r, jt t) {
    jv v = {t, {0}};
    v.u.d = acalloc(r, 1, sizeof(jdict));
    return v;
}

static bool str_eq(jv a, const char *s, size_t n) {
    return a.t == JV_STR && a.u.s.n == n && (n == 0 || memcmp(a.u.s.p, s, n) == 0);
}

static bool value_eq(R *r, jv a, jv b);

static jv *dict_find(R *r, jdict *d, jv k) {
    for (size_t i = 0; i < d->n; i++)
        if (value_eq(r, d->k[i], k)) return &d->v[i];
    return NULL;
}

static void dict_set(R *r, jdict *d, jv k, jv v) {
    jv *p = dict_find(r, d, k);
    if (p) {
        *p = v;
        return;
    }
    size_t kc = d->cap;
    d->k = agrow(r, d->k, d->n, &kc, sizeof(jv));
    d->v = agrow(r, d->v, d->n, &d->cap, sizeof(jv));
    d->k[d->n] = k;
    d->v[d->n++] = v;
}

static const char *type_name(jv v) {
    switch (v.t) {
    case JV_UNDEF: return "undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return "list";
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    }
    return "?";
}

static bool truthy(jv v) {
    switch (v.t) {
    case JV_UNDEF: case JV_NONE: return false;
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0;
    case JV_STR: return v.u.s.n > 0;
    case JV_LIST: return v.u.l->n > 0;
    case JV_DICT: return v.u.d->n > 0;
    case JV_NS: return true;
    }
    return false;
}

static bool is_num(jv v) { return v.t == JV_BOOL || v.t == JV_INT || v.t == JV_FLOAT; }
static double num_f(jv v) {
    return v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : (double)v.u.b;
}
static int64_t num_i(jv v) { return v.t == JV_INT ? v.u.i : (int64_t)v.u.b; }

static bool value_eq(R *r, jv a, jv b) {
    work(r, 1);
    if (a.t == JV_STR && b.t == JV_STR) work_bytes(r, a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n);
    if (is_num(a) && is_num(b)) {
        if (a.t == JV_FLOAT || b.t == JV_FLOAT) return num_f(a) == num_f(b);
        return num_i(a) == num_i(b);
    }
    if (a.t != b.t) return false;
    switch (a.t) {
    case JV_UNDEF: case JV_NONE: return true;
    case JV_STR: return str_eq(a, b.u.s.p, b.u.s.n);
    case JV_LIST:
        if (a.u.l->n != b.u.l->n) return false;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!value_eq(r, a.u.l->v[i], b.u.l->v[i])) return false;
        return true;
    case JV_DICT:
        if (a.u.d->n != b.u.d->n) return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            jv *o = dict_find(r, b.u.d, a.u.d->k[i]);
            if (!o || !value_eq(r, a.u.d->v[i], *o)) return false;
        }
        return true;
    case JV_NS: return a.u.d == b.u.d;
    default: return false;
    }
}

/* ---------------------------------------------------------------- text helpers */

static void emit(R *r, const char *s, size_t n) {
    if (!n) return;
    if (r->out.len + n > MAX_OUTPUT)
        fail(r, KILN_ERR_INVALID_ARG, "chat template: output exceeds %zu MiB", MAX_OUTPUT >> 20);
    kn_buf_append(&r->out, s, n);
    if (r->out.oom) fail(r, KILN_ERR_NOMEM, "chat template: out of memory");
}

/* Strings under construction grow inside the arena (old copies are abandoned to it), so an
 * error unwinding mid-build leaks nothing. */
typedef struct sb {
    char *p;
    size_t n, cap;
} sb;

static void sb_put(R *r, sb *b, const char *s, size_t n) {
    if (n > MAX_ARENA - b->n)
        fail(r, KILN_ERR_INVALID_ARG, "chat template: a string exceeds %zu MiB", MAX_ARENA >> 20);
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 64;
        while (nc < b->n + n + 1) nc *= 2;
        char *q = amalloc(r, nc);
        if (b->n) memcpy(q, b->p, b->n);
        b->p = q;
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static jv sb_take(sb *b) { return b->p ? mk_str(b->p, b->n) : mk_str("", 0); }

/* Decodes one UTF-8 code point at s[i..n); invalid bytes decode as themselves, one byte. */
static size_t u8_next(const char *s, size_t n, size_t i, int32_t *cp) {
    utf8proc_int32_t c;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
    if (k <= 0) {
        *cp = (unsigned char)s[i];
        return 1;
    }
    *cp = c;
    return (size_t)k;
}

static size_t u8_count(R *r, const char *s, size_t n) {
    work_bytes(r, n);
    size_t c = 0;
    int32_t cp;
    for (size_t i = 0; i < n; c++) i += u8_next(s, n, i, &cp);
    return c;
}

/* Python's str.isspace(). */
static bool py_space(int32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

static bool py_cased(int32_t c) {
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT;
}

static void put_cp(R *r, sb *b, int32_t c) {
    utf8proc_uint8_t e[4];
    utf8proc_ssize_t k = utf8proc_encode_char(c, e);
    if (k <= 0) {
        e[0] = (utf8proc_uint8_t)c;
        k = 1;
    }
    sb_put(r, b, (const char *)e, (size_t)k);
}

/* mode: 'u' upper, 'l' lower, 't' Python title(), 'c' Python capitalize(). */
static jv str_case(R *r, jv s, char mode) {
    sb b = {0};
    bool prev_cased = false;
    size_t i = 0, idx = 0;
    while (i < s.u.s.n) {
        int32_t c;
        size_t k = u8_next(s.u.s.p, s.u.s.n, i, &c);
        bool valid = k > 1 || (unsigned char)s.u.s.p[i] < 0x80;
        if (!valid) {
            sb_put(r, &b, s.u.s.p + i, 1);
        } else {
            int32_t o = c;
            bool up = mode == 'u' || (mode == 't' && !prev_cased) || (mode == 'c' && idx == 0);
            /* the full (multi-character) mappings Python applies that utf8proc's simple ones lack */
            if (c == 0xdf && up) {
                sb_put(r, &b, mode == 'u' ? "SS" : "Ss", 2);
                prev_cased = true;
                i += k;
                idx++;
                continue;
            }
            if (c == 0x130 && !up) {
                sb_put(r, &b, "i\xcc\x87", 3);
                prev_cased = true;
                i += k;
                idx++;
                continue;
            }
            if (mode == 'u') o = utf8proc_toupper(c);
            else if (mode == 'l') o = utf8proc_tolower(c);
            else if (mode == 't') {
                o = prev_cased ? utf8proc_tolower(c) : utf8proc_totitle(c);
                prev_cased = py_cased(c);
            } else {
                o = idx == 0 ? utf8proc_totitle(c) : utf8proc_tolower(c);
            }
            put_cp(r, &b, o);
        }
        i += k;
        idx++;
    }
    return sb_take(&b);
}

static bool in_chars(int32_t c, jv chars) {
    if (chars.t != JV_STR) return py_space(c);
    int32_t d;
    for (size_t i = 0; i < chars.u.s.n;) {
        i += u8_next(chars.u.s.p, chars.u.s.n, i, &d);
        if (d == c) return true;
    }
    return false;
}

/* Python str.strip/lstrip/rstrip with optional chars (a non-string means whitespace). */
static jv str_strip(R *r, jv s, jv chars, bool left, bool right) {
    /* each character is looked up in chars: charge for the worst case up front */
    work_bytes(r, s.u.s.n * (chars.t == JV_STR ? chars.u.s.n + 1 : 1));
    const char *p = s.u.s.p;
    size_t a = 0, e = s.u.s.n;
    int32_t c;
    while (left && a < e) {
        size_t k = u8_next(p, e, a, &c);
        if (!in_chars(c, chars)) break;
        a += k;
    }
    while (right && e > a) {
        size_t st = e - 1;
        while (st > a && ((unsigned char)p[st] & 0xc0) == 0x80 && e - st < 4) st--;
        size_t k = u8_next(p, e, st, &c);
        if (st + k != e) { st = e - 1; c = (unsigned char)p[st]; }
        if (!in_chars(c, chars)) break;
        e = st;
    }
    return mk_str(p + a, e - a);
}

static void repr_str(R *r, sb *b, jv s) {
    bool sq = memchr(s.u.s.p, '\'', s.u.s.n) != NULL, dq = memchr(s.u.s.p, '"', s.u.s.n) != NULL;
    char q = sq && !dq ? '"' : '\'';
    sb_put(r, b, &q, 1);
    for (size_t i = 0; i < s.u.s.n; i++) {
        unsigned char c = (unsigned char)s.u.s.p[i];
        char tmp[8];
        if (c == '\\' || c == (unsigned char)q) {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            sb_put(r, b, tmp, 2);
        } else if (c == '\n') sb_put(r, b, "\\n", 2);
        else if (c == '\r') sb_put(r, b, "\\r", 2);
        else if (c == '\t') sb_put(r, b, "\\t", 2);
        else if (c < 0x20 || c == 0x7f) {
            snprintf(tmp, sizeof tmp, "\\x%02x", c);
            sb_put(r, b, tmp, 4);
        } else sb_put(r, b, (const char *)&c, 1);
    }
    sb_put(r, b, &q, 1);
}

/* Python's repr(float): the shortest digits that read back, in Python's layout. */
static void fmt_float(R *r, sb *b, double f) {
    char t[64];
    if (isnan(f)) { sb_put(r, b, "nan", 3); return; }
    if (isinf(f)) { sb_put(r, b, f < 0 ? "-inf" : "inf", f < 0 ? 4 : 3); return; }
    int prec = 1;
    for (; prec <= 17; prec++) {
        snprintf(t, sizeof t, "%.*e", prec - 1, f);
        if (strtod(t, NULL) == f) break;
    }
    /* t = d.ddde[+-]XX */
    char *e = strchr(t, 'e');
    int exp = atoi(e + 1);
    *e = 0;
    char digits[32];
    size_t nd = 0;
    bool neg = t[0] == '-';
    for (char *p = t; *p; p++)
        if (*p >= '0' && *p <= '9') digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    sb o = {0};
    if (neg) sb_put(r, &o, "-", 1);
    if (exp >= 16 || exp < -4) {
        sb_put(r, &o, digits, 1);
        if (nd > 1) {
            sb_put(r, &o, ".", 1);
            sb_put(r, &o, digits + 1, nd - 1);
        }
        snprintf(t, sizeof t, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
        sb_put(r, &o, t, strlen(t));
    } else if (exp < 0) {
        sb_put(r, &o, "0.", 2);
        for (int i = -1; i > exp; i--) sb_put(r, &o, "0", 1);
        sb_put(r, &o, digits, nd);
    } else {
        for (int i = 0; i <= exp; i++) sb_put(r, &o, (size_t)i < nd ? &digits[i] : "0", 1);
        sb_put(r, &o, ".", 1);
        if ((size_t)exp + 1 < nd) sb_put(r, &o, digits + exp + 1, nd - (size_t)exp - 1);
        else sb_put(r, &o, "0", 1);
    }
    sb_put(r, b, o.p, o.n);
}

static void put_str(R *r, sb *b, jv v, bool repr);

static void put_str(R *r, sb *b, jv v, bool repr) {
    char t[32];
    switch (v.t) {
    case JV_UNDEF: break;
    case JV_NONE: sb_put(r, b, "None", 4); break;
    case JV_BOOL: sb_put(r, b, v.u.b ? "True" : "False", v.u.b ? 4 : 5); break;
    case JV_INT:
        snprintf(t, sizeof t, "%lld", (long long)v.u.i);
        sb_put(r, b, t, strlen(t));
        break;
    case JV_FLOAT: fmt_float(r, b, v.u.f); break;
    case JV_STR:
        if (repr) repr_str(r, b, v);
        else sb_put(r, b, v.u.s.p, v.u.s.n);
        break;
    case JV_LIST:
        sb_put(r, b, "[", 1);
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) sb_put(r, b, ", ", 2);
            put_str(r, b, v.u.l->v[i], true);
        }
        sb_put(r, b, "]", 1);
        break;
    case JV_DICT:
        sb_put(r, b, "{", 1);
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i) sb_put(r, b, ", ", 2);
            put_str(r, b, v.u.d->k[i], true);
            sb_put(r, b, ": ", 2);
            put_str(r, b, v.u.d->v[i], true);
        }
        sb_put(r, b, "}", 1);
        break;
    case JV_NS: sb_put(r, b, "<Namespace>", 11); break;
    }
}

static jv to_str(R *r, jv v) {
    if (v.t == JV_STR) return v;
    sb b = {0};
    put_str(r, &b, v, false);
    return sb_take(&b);
}

/* transformers' tojson: json.dumps(x, ensure_ascii=False, indent=indent). */
static void put_json(R *r, sb *b, jv v, int64_t indent, int level) {
    char t[16];
    switch (v.t) {
    case JV_NONE: sb_put(r, b, "null", 4); return;
    case JV_BOOL: sb_put(r, b, v.u.b ? "true" : "false", v.u.b ? 4 : 5); return;
    case JV_INT: case JV_FLOAT:
        if (v.t == JV_FLOAT && isnan(v.u.f)) sb_put(r, b, "NaN", 3);
        else if (v.t == JV_FLOAT && isinf(v.u.f)) sb_put(r, b, v.u.f < 0 ? "-Infinity" : "Infinity", v.u.f < 0 ? 9 : 8);
        else put_str(r, b, v, false);
        return;
    case JV_STR:
        sb_put(r, b, "\"", 1);
        for (size_t i = 0; i < v.u.s.n; i++) {
            unsigned char c = (unsigned char)v.u.s.p[i];
            const char *esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r"
                            : c == '\t' ? "\\t" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
            if (esc) sb_put(r, b, esc, 2);
            else if (c < 0x20) {
                snprintf(t, sizeof t, "\\u%04x", c);
                sb_put(r, b, t, 6);
            } else sb_put(r, b, (const char *)&c, 1);
        }
        sb_put(r, b, "\"", 1);
        return;
    case JV_LIST: case JV_DICT: {
        bool list = v.t == JV_LIST;
        size_t n = list ? v.u.l->n : v.u.d->n;
        if (level > MAX_DEPTH) fail(r, KILN_ERR_INVALID_ARG, "chat template: tojson: nesting too deep");
        sb_put(r, b, list ? "[" : "{", 1);
        if (n == 0) {
            sb_put(r, b, list ? "]" : "}", 1);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            if (i) sb_put(r, b, indent >= 0 ? "," : ", ", indent >= 0 ? 1 : 2);
            if (indent >= 0) {
                sb_put(r, b, "\n", 1);
                for (int64_t k = 0; k < indent * (level + 1); k++) sb_put(r, b, " ", 1);
            }
            if (!list) {
                jv k = v.u.d->k[i];
                if (k.t != JV_STR) k = to_str(r, k);
                put_json(r, b, k, indent, level + 1);
                sb_put(r, b, ": ", 2);
            }
            put_json(r, b, list ? v.u.l->v[i] : v.u.d->v[i], indent, level + 1);
        }
        if (indent >= 0) {
            sb_put(r, b, "\n", 1);
            for (int64_t k = 0; k < indent * level; k++) sb_put(r, b, " ", 1);
        }
        sb_put(r, b, list ? "]" : "}", 1);
        return;
    }
    default:
        fail(r, KILN_ERR_INVALID_ARG, "chat template: tojson: Object of type %s is not JSON serializable",
             type_name(v));
    }
}

/* ---------------------------------------------------------------- lexer */

static void push_tok(R *r, tok t) {
    r->toks = agrow(r, r->toks, r->ntok, &r->captok, sizeof(tok));
    r->toks[r->ntok++] = t;
}

/* The line of p. The lexer asks in increasing order, so counting on from the last answer keeps
 * lexing linear in the template size (counting from the start each time was quadratic). */
static int line_at(R *r, const char *p) {
    if (!r->line_p || p < r->line_p) {
        r->line_p = r->src;
        r->line_no = 1;
    }
    for (; r->line_p < p; r->line_p++) r->line_no += *r->line_p == '\n';
    return r->line_no;
}

static bool ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Python's unicode-escape decoding of a string literal body, as jinja2's lexer applies it. */
static jv unescape(R *r, const char *p, size_t n, int line) {
    sb b = {0};
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c != '\\' || i + 1 >= n) {
            sb_put(r, &b, &c, 1);
            continue;
        }
        char e = p[++i];
        const char *simple = strchr("\\'\"abfnrtv\n", e);
        if (simple && e) {
            static const char map[] = "\\'\"\a\b\f\n\r\t\v";
            if (e != '\n') sb_put(r, &b, &map[simple - "\\'\"abfnrtv\n"], 1);
            continue;
        }
        if (e >= '0' && e <= '7') {
            int v = 0, k = 0;
            while (k < 3 && i < n && p[i] >= '0' && p[i] <= '7') v = v * 8 + (p[i++] - '0'), k++;
            i--;
            put_cp(r, &b, v);
            continue;
        }
        int len = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
        if (len) {
            int32_t v = 0;
            if (i + (size_t)len >= n) len = -1;
            for (int k = 1; len > 0 && k <= len; k++) {
                int h = i + (size_t)k < n ? hexval(p[i + (size_t)k]) : -1;
                if (h < 0) len = -1;
                else v = v * 16 + h;
            }
            if (len < 0 || v > 0x10ffff)
                fail(r, KILN_ERR_FORMAT, "chat template line %d: bad \\%c escape in a string", line, e);
            put_cp(r, &b, v);
            i += (size_t)len;
            continue;
        }
        sb_put(r, &b, p + i - 1, 2); /* unknown escapes stay as written */
    }
    return sb_take(&b);
}

static void lex(R *r) {
    const char *s = r->src;
    size_t n = strlen(s), pos = 0;
    while (pos < n) {
        /* the next tag opener */
        size_t k = pos;
        while (k + 1 < n && !(s[k] == '{' && (s[k + 1] == '{' || s[k + 1] == '%' || s[k + 1] == '#'))) k++;
        if (k + 1 >= n) {
            tok t = {T_DATA, line_at(r, s + pos), s + pos, n - pos, 0, 0};
            push_tok(r, t);
            break;
        }
        char kind = s[k + 1];
        char sign = k + 2 < n && (s[k + 2] == '-' || s[k + 2] == '+') ? s[k + 2] : 0;
        size_t tlen = k - pos;
        if (sign == '-') {
            while (tlen && ws(s[pos + tlen - 1])) tlen--;
        } else if (sign != '+' && kind != '{') {
            /* lstrip_blocks: only spaces/tabs between the line start and a block/comment tag */
            size_t l = tlen;
            while (l && s[pos + l - 1] != '\n') l--;
            bool line_starting = pos == 0 || s[pos - 1] == '\n';
            if (l > 0 || line_starting) {
                bool all = l < tlen;
                for (size_t i = l; i < tlen; i++)
                    if (!ws(s[pos + i]) || s[pos + i] == '\n') all = false;
                if (all) tlen = l;
            }
        }
        if (tlen) {
            tok t = {T_DATA, line_at(r, s + pos), s + pos, tlen, 0, 0};
            push_tok(r, t);
        }
        size_t p = k + 2 + (sign ? 1 : 0);
        int line = line_at(r, s + k);
        if (kind == '#') {
            const char *e = strstr(s + p, "#}");
            if (!e) fail(r, KILN_ERR_FORMAT, "chat template line %d: missing end of comment tag", line);
            size_t j = (size_t)(e - s);
            char esign = j > p && (s[j - 1] == '-' || s[j - 1] == '+') ? s[j - 1] : 0;
            pos = j + 2;
            if (esign == '-') while (pos < n && ws(s[pos])) pos++;
            else if (!esign && pos < n && s[pos] == '\n') pos++;
            continue;
        }
        tok b = {kind == '{' ? T_VBEGIN : T_BBEGIN, line, s + k, p - k, 0, 0};
        push_tok(r, b);
        int balance = 0;
        for (;;) {
            while (p < n && ws(s[p])) p++;
            if (p >= n)
                fail(r, KILN_ERR_FORMAT, "chat template line %d: unexpected end of template inside a %s tag",
                     line, kind == '{' ? "{{ }}" : "{% %}");
            const char *c = s + p;
            int tl = line_at(r, c);
            if (balance == 0) {
                size_t end = 0;
                bool strip = false, trim = false;
                if (kind == '{') {
                    if (!strncmp(c, "-}}", 3)) end = 3, strip = true;
                    else if (!strncmp(c, "}}", 2)) end = 2;
                } else {
                    if (!strncmp(c, "+%}", 3)) end = 3;
                    else if (!strncmp(c, "-%}", 3)) end = 3, strip = true;
                    else if (!strncmp(c, "%}", 2)) end = 2, trim = true;
                }
                if (end) {
                    tok t = {kind == '{' ? T_VEND : T_BEND, tl, c, end, 0, 0};
                    push_tok(r, t);
                    p += end;
                    if (strip) while (p < n && ws(s[p])) p++;
                    else if (trim && p < n && s[p] == '\n') p++;
                    break;
                }
            }
            if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '_') {
                size_t q = p;
                while (q < n && ((s[q] >= 'a' && s[q] <= 'z') || (s[q] >= 'A' && s[q] <= 'Z') || s[q] == '_' ||
                                 (s[q] >= '0' && s[q] <= '9')))
                    q++;
                tok t = {T_NAME, tl, c, q - p, 0, 0};
                push_tok(r, t);
                p = q;
            } else if (*c >= '0' && *c <= '9') {
                size_t q = p;
                bool flt = false;
                while (q < n && ((s[q] >= '0' && s[q] <= '9') || s[q] == '_')) q++;
                if (q + 1 < n && s[q] == '.' && s[q + 1] >= '0' && s[q + 1] <= '9') {
                    flt = true;
                    q++;
                    while (q < n && ((s[q] >= '0' && s[q] <= '9') || s[q] == '_')) q++;
                }
                if (q < n && (s[q] == 'e' || s[q] == 'E')) {
                    size_t e = q + 1;
                    if (e < n && (s[e] == '+' || s[e] == '-')) e++;
                    if (e < n && s[e] >= '0' && s[e] <= '9') {
                        flt = true;
                        q = e;
                        while (q < n && s[q] >= '0' && s[q] <= '9') q++;
                    }
                }
                char num[64];
                size_t m = 0;
                for (size_t i = p; i < q && m + 1 < sizeof num; i++)
                    if (s[i] != '_') num[m++] = s[i];
                num[m] = 0;
                tok t = {flt ? T_FLOAT : T_INT, tl, c, q - p, 0, 0};
                if (flt) t.f = strtod(num, NULL);
                else {
                    char *endp;
                    unsigned long long v = strtoull(num, &endp, 10);
                    if (m > 18 || v > (unsigned long long)INT64_MAX)
                        fail(r, KILN_ERR_UNSUPPORTED, "chat template line %d: integer %s too large", tl, num);
                    t.i = (int64_t)v;
                }
                push_tok(r, t);
                p = q;
            } else if (*c == '\'' || *c == '"') {
                size_t q = p + 1;
                while (q < n && s[q] != *c) q += s[q] == '\\' ? 2 : 1;
                if (q >= n) fail(r, KILN_ERR_FORMAT, "chat template line %d: unterminated string", tl);
                jv u = unescape(r, s + p + 1, q - p - 1, tl);
                tok t = {T_STR, tl, u.u.s.p, u.u.s.n, 0, 0};
                push_tok(r, t);
                p = q + 1;
            } else {
                static const char *const ops2[] = {"//", "**", "==", "!=", "<=", ">="};
                size_t len = 0;
                for (size_t i = 0; i < sizeof ops2 / sizeof ops2[0]; i++)
                    if (!strncmp(c, ops2[i], 2)) len = 2;
                if (!len && strchr("+-/*%~[](){}<>=.:|,;", *c)) len = 1;
                if (!len)
                    fail(r, KILN_ERR_FORMAT, "chat template line %d: unexpected character '%c'", tl, *c);
                if (len == 1 && strchr("([{", *c)) balance++;
                if (len == 1 && strchr(")]}", *c)) {
                    if (balance == 0) fail(r, KILN_ERR_FORMAT, "chat template line %d: unexpected '%c'", tl, *c);
                    balance--;
                }
                tok t = {T_OP, tl, c, len, 0, 0};
                push_tok(r, t);
                p += len;
            }
        }
        pos = p;
    }
    tok e = {T_EOF, line_at(r, s + n), s + n, 0, 0, 0};
    push_tok(r, e);
}

/* ---------------------------------------------------------------- parser */

static tok *cur(R *r) { return &r->toks[r->pos]; }
static tok *peek(R *r, size_t k) {
    size_t i = r->pos + k;
    return &r->toks[i < r->ntok ? i : r->ntok - 1];
}
static bool tok_is(tok *t, tt type, const char *s) {
    return t->t == type && t->n == strlen(s) && !memcmp(t->p, s, t->n);
}
static bool is_op(R *r, const char *s) { return tok_is(cur(r), T_OP, s); }
static bool is_name(R *r, const char *s) { return tok_is(cur(r), T_NAME, s); }

static const char *tok_desc(tok *t, char *buf, size_t cap) {
    switch (t->t) {
    case T_EOF: return "end of template";
    case T_DATA: return "template data";
    case T_VBEGIN: return "'{{'";
    case T_BBEGIN: return "'{%'";
    case T_VEND: return "end of print statement";
    case T_BEND: return "end of statement block";
    case T_STR: return "string";
    default:
        snprintf(buf, cap, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->p);
        return buf;
    }
}

static _Noreturn void syntax(R *r, const char *expected) {
    char b[64];
    tok *t = cur(r);
    fail(r, KILN_ERR_FORMAT, "chat template line %d: expected %s, got %s", t->line, expected,
         tok_desc(t, b, sizeof b));
}

static void expect_op(R *r, const char *s) {
    if (!is_op(r, s)) {
        char e[16];
        snprintf(e, sizeof e, "'%s'", s);
        syntax(r, e);
    }
    r->pos++;
}

static node *mk_node(R *r, nk k) {
    node *x = acalloc(r, 1, sizeof(node));
    x->k = k;
    x->line = cur(r)->line;
    return x;
}

static jv tok_str(tok *t) { return mk_str(t->p, t->n); }

static node *parse_expr(R *r);
static node *parse_or(R *r);
static node *parse_unary(R *r, bool with_filter);

static void enter(R *r) {
    if (++r->depth > MAX_DEPTH)
        fail(r, KILN_ERR_FORMAT, "chat template line %d: nesting deeper than %d", cur(r)->line, MAX_DEPTH);
}

/* (args) after the '(' : positional and name=value arguments. */
static void parse_args(R *r, node *x) {
    node *items[64];
    jv names[64];
    size_t n = 0, nkw = 0;
    while (!is_op(r, ")")) {
        if (n) expect_op(r, ",");
        if (is_op(r, ")")) break;
        if (n >= 64) fail(r, KILN_ERR_UNSUPPORTED, "chat template line %d: too many arguments", cur(r)->line);
        if (cur(r)->t == T_NAME && tok_is(peek(r, 1), T_OP, "=")) {
            names[nkw++] = tok_str(cur(r));
            r->pos += 2;
            items[n++] = parse_expr(r);
        } else {
            if (nkw) fail(r, KILN_ERR_FORMAT, "chat template line %d: positional argument after keyword",
                          cur(r)->line);
            items[n++] = parse_expr(r);
        }
    }
    r->pos++;
    x->args = acalloc(r, n ? n : 1, sizeof(node *));
    memcpy(x->args, items, n * sizeof(node *));
    x->nargs = n;
    x->nkw = nkw;
    x->kwnames = acalloc(r, nkw ? nkw : 1, sizeof(jv));
    memcpy(x->kwnames, names, nkw * sizeof(jv));
}

static node *parse_primary(R *r) {
    tok *t = cur(r);
    node *x;
    enter(r);
    if (t->t == T_NAME) {
        r->pos++;
        x = mk_node(r, E_CONST);
        if (tok_is(t, T_NAME, "true") || tok_is(t, T_NAME, "True")) x->v = mk_bool(true);
        else if (tok_is(t, T_NAME, "false") || tok_is(t, T_NAME, "False")) x->v = mk_bool(false);
        else if (tok_is(t, T_NAME, "none") || tok_is(t, T_NAME, "None")) x->v = mk_none();
        else {
            x->k = E_NAME;
            x->v = tok_str(t);
        }
    } else if (t->t == T_STR) {
        /* adjacent literals concatenate, as in Python */
        sb b = {0};
        while (cur(r)->t == T_STR) {
            sb_put(r, &b, cur(r)->p, cur(r)->n);
            r->pos++;
        }
        x = mk_node(r, E_CONST);
        x->v = sb_take(&b);
    } else if (t->t == T_INT || t->t == T_FLOAT) {
        r->pos++;
        x = mk_node(r, E_CONST);
        x->v = t->t == T_INT ? mk_int(t->i) : mk_float(t->f);
    } else if (is_op(r, "(")) {
        r->pos++;
        if (is_op(r, ")")) {
            r->pos++;
            x = mk_node(r, E_LIST);
        } else {
            x = parse_expr(r);
            if (is_op(r, ",")) { /* a tuple: behaves as a list here */
                node *l = mk_node(r, E_LIST);
                node *items[256];
                size_t n = 0;
                items[n++] = x;
                while (is_op(r, ",")) {
                    r->pos++;
                    if (is_op(r, ")")) break;
                    if (n >= 256) fail(r, KILN_ERR_UNSUPPORTED, "chat template: tuple too long");
                    items[n++] = parse_expr(r);
                }
                l->args = acalloc(r, n, sizeof(node *));
                memcpy(l->args, items, n * sizeof(node *));
                l->nargs = n;
                x = l;
            }
            expect_op(r, ")");
        }
    } else if (is_op(r, "[") || is_op(r, "{")) {
        bool dict = is_op(r, "{");
        r->pos++;
        x = mk_node(r, dict ? E_DICT : E_LIST);
        size_t cap = 0;
        while (!is_op(r, dict ? "}" : "]")) {
            if (x->nargs) expect_op(r, ",");
            if (is_op(r, dict ? "}" : "]")) break;
            size_t need = dict ? 2 : 1;
            for (size_t i = 0; i < need; i++) {
                x->args = agrow(r, x->args, x->nargs, &cap, sizeof(node *));
                x->args[x->nargs++] = parse_expr(r);
                if (dict && i == 0) expect_op(r, ":");
            }
        }
        r->pos++;
    } else {
        syntax(r, "an expression");
    }
    r->depth--;
    return x;
}

static node *parse_postfix(R *r, node *x) {
    for (;;) {
        if (is_op(r, ".")) {
            r->pos++;
            tok *t = cur(r);
            if (t->t != T_NAME && t->t != T_INT) syntax(r, "an attribute name");
            node *a = mk_node(r, E_ATTR);
            a->a = x;
            if (t->t == T_INT) {
                a->k = E_ITEM;
                a->b = mk_node(r, E_CONST);
                a->b->v = mk_int(t->i);
            } else a->v = tok_str(t);
            r->pos++;
            x = a;
        } else if (is_op(r, "[")) {
            r->pos++;
            node *parts[3] = {NULL, NULL, NULL};
            bool slice = false;
            for (int i = 0; i < 3; i++) {
                if (!is_op(r, ":") && !is_op(r, "]")) parts[i] = parse_expr(r);
                if (i < 2 && is_op(r, ":")) {
                    slice = true;
                    r->pos++;
                } else break;
            }
            expect_op(r, "]");
            node *a = mk_node(r, slice ? E_SLICE : E_ITEM);
            a->a = x;
            if (!slice && !parts[0]) syntax(r, "a subscript");
            a->b = parts[0];
            a->c = parts[1];
            a->d = parts[2];
            x = a;
        } else if (is_op(r, "(")) {
            r->pos++;
            node *c = mk_node(r, E_CALL);
            c->a = x;
            parse_args(r, c);
            x = c;
        } else return x;
    }
}

static node *parse_filters_tests(R *r, node *x) {
    for (;;) {
        if (is_op(r, "|")) {
            r->pos++;
            if (cur(r)->t != T_NAME) syntax(r, "a filter name");
            node *f = mk_node(r, E_FILTER);
            f->v = tok_str(cur(r));
            r->pos++;
            /* dotted filter names do not occur in chat templates */
            if (is_op(r, "(")) {
                r->pos++;
                parse_args(r, f);
            }
            f->a = x;
            x = f;
        } else if (is_name(r, "is")) {
            r->pos++;
            node *t = mk_node(r, E_TEST);
            if (is_name(r, "not")) {
                t->neg = true;
                r->pos++;
            }
            if (cur(r)->t != T_NAME) syntax(r, "a test name");
            t->v = tok_str(cur(r));
            r->pos++;
            t->a = x;
            tok *c = cur(r);
            if (is_op(r, "(")) {
                r->pos++;
                parse_args(r, t);
            } else if ((c->t == T_NAME || c->t == T_STR || c->t == T_INT || c->t == T_FLOAT ||
                        is_op(r, "[") || is_op(r, "{")) &&
                       !(is_name(r, "else") || is_name(r, "or") || is_name(r, "and") || is_name(r, "if") ||
                         is_name(r, "is") || is_name(r, "in") || is_name(r, "not"))) {
                node *arg = parse_postfix(r, parse_primary(r));
                t->args = acalloc(r, 1, sizeof(node *));
                t->args[0] = arg;
                t->nargs = 1;
            }
            x = t;
        } else if (is_op(r, "(")) {
            x = parse_postfix(r, x);
        } else return x;
    }
}

static node *parse_unary(R *r, bool with_filter) {
    node *x;
    enter(r);
    if (is_op(r, "-") || is_op(r, "+")) {
        x = mk_node(r, is_op(r, "-") ? E_NEG : E_POS);
        r->pos++;
        x->a = parse_unary(r, false);
    } else {
        x = parse_primary(r);
    }
    x = parse_postfix(r, x);
    if (with_filter) x = parse_filters_tests(r, x);
    r->depth--;
    return x;
}

static node *bin(R *r, int op, node *a, node *b) {
    node *x = mk_node(r, E_BIN);
    x->op = op;
    x->a = a;
    x->b = b;
    return x;
}

static node *parse_pow(R *r) {
    node *x = parse_unary(r, true);
    while (is_op(r, "**")) {
        r->pos++;
        x = bin(r, OP_POW, x, parse_unary(r, true));
    }
    return x;
}

static node *parse_math2(R *r) {
    node *x = parse_pow(r);
    for (;;) {
        int op = is_op(r, "*") ? OP_MUL : is_op(r, "/") ? OP_DIV : is_op(r, "//") ? OP_FDIV
               : is_op(r, "%") ? OP_MOD : -1;
        if (op < 0) return x;
        r->pos++;
        x = bin(r, op, x, parse_pow(r));
    }
}

static node *parse_concat(R *r) {
    node *x = parse_math2(r);
    if (!is_op(r, "~")) return x;
    node *c = mk_node(r, E_CONCAT);
    size_t cap = 0;
    c->args = agrow(r, c->args, c->nargs, &cap, sizeof(node *));
    c->args[c->nargs++] = x;
    while (is_op(r, "~")) {
        r->pos++;
        c->args = agrow(r, c->args, c->nargs, &cap, sizeof(node *));
        c->args[c->nargs++] = parse_math2(r);
    }
    return c;
}

static node *parse_math1(R *r) {
    node *x = parse_concat(r);
    for (;;) {
        int op = is_op(r, "+") ? OP_ADD : is_op(r, "-") ? OP_SUB : -1;
        if (op < 0) return x;
        r->pos++;
        x = bin(r, op, x, parse_concat(r));
    }
}

static node *parse_compare(R *r) {
    node *x = parse_math1(r);
    node *c = NULL;
    size_t cap = 0, ocap = 0;
    for (;;) {
        int op = is_op(r, "==") ? C_EQ : is_op(r, "!=") ? C_NE : is_op(r, "<") ? C_LT : is_op(r, ">") ? C_GT
               : is_op(r, "<=") ? C_LE : is_op(r, ">=") ? C_GE : is_name(r, "in") ? C_IN : -1;
        if (op < 0 && is_name(r, "not") && tok_is(peek(r, 1), T_NAME, "in")) {
            op = C_NOTIN;
            r->pos++;
        }
        if (op < 0) break;
        r->pos++;
        if (!c) {
            c = mk_node(r, E_CMP);
            c->a = x;
        }
        c->args = agrow(r, c->args, c->nargs, &cap, sizeof(node *));
        c->ops = agrow(r, c->ops, c->nargs, &ocap, sizeof(int));
        c->ops[c->nargs] = op;
        c->args[c->nargs++] = parse_math1(r);
    }
    return c ? c : x;
}

static node *parse_not(R *r) {
    if (is_name(r, "not")) {
        enter(r);
        node *x = mk_node(r, E_NOT);
        r->pos++;
        x->a = parse_not(r);
        r->depth--;
        return x;
    }
    return parse_compare(r);
}

static node *parse_and(R *r) {
    node *x = parse_not(r);
    while (is_name(r, "and")) {
        r->pos++;
        node *a = mk_node(r, E_AND);
        a->a = x;
        a->b = parse_not(r);
        x = a;
    }
    return x;
}

static node *parse_or(R *r) {
    node *x = parse_and(r);
    while (is_name(r, "or")) {
        r->pos++;
        node *o = mk_node(r, E_OR);
        o->a = x;
        o->b = parse_and(r);
        x = o;
    }
    return x;
}

static node *parse_expr(R *r) {
    enter(r);
    node *x = parse_or(r);
    while (is_name(r, "if")) {
        r->pos++;
        node *c = mk_node(r, E_COND);
        c->b = x;
        c->a = parse_or(r);
        if (is_name(r, "else")) {
            r->pos++;
            c->c = parse_expr(r);
        }
        x = c;
    }
    r->depth--;
    return x;
}

static void expect_bend(R *r) {
    if (cur(r)->t != T_BEND) syntax(r, "end of statement block");
    r->pos++;
}

static node *parse_body(R *r, const char *const *stops, const char **which);

static bool in_list(tok *t, const char *const *names) {
    for (; names && *names; names++)
        if (tok_is(t, T_NAME, *names)) return true;
    return false;
}

static node *parse_if(R *r) {
    static const char *const stops[] = {"elif", "else", "endif", NULL};
    node *x = mk_node(r, N_IF);
    x->a = parse_expr(r);
    expect_bend(r);
    const char *which;
    x->body = parse_body(r, stops, &which);
    if (!strcmp(which, "elif")) {
        x->els = parse_if(r);
        return x;
    }
    if (!strcmp(which, "else")) {
        expect_bend(r);
        static const char *const endonly[] = {"endif", NULL};
        x->els = parse_body(r, endonly, &which);
    }
    expect_bend(r);
    return x;
}

static node *parse_stmt(R *r) {
    tok *t = cur(r);
    int line = t->line;
    if (t->t != T_NAME) syntax(r, "a statement name");
    r->pos++;
    if (tok_is(t, T_NAME, "if")) return parse_if(r);
    if (tok_is(t, T_NAME, "for")) {
        static const char *const stops[] = {"else", "endfor", NULL};
        node *x = mk_node(r, N_FOR);
        if (cur(r)->t != T_NAME) syntax(r, "a loop variable");
        x->v = tok_str(cur(r));
        r->pos++;
        if (is_op(r, ",")) {
            r->pos++;
            if (cur(r)->t != T_NAME) syntax(r, "a loop variable");
            x->v2 = tok_str(cur(r));
            r->pos++;
        }
        if (!is_name(r, "in")) syntax(r, "'in'");
        r->pos++;
        x->a = parse_or(r); /* as jinja2: no conditional expression, "if" filters */
        if (is_name(r, "if")) {
            r->pos++;
            x->b = parse_expr(r);
        }
        if (is_name(r, "recursive"))
            fail(r, KILN_ERR_UNSUPPORTED, "chat template line %d: recursive loops are not supported", line);
        expect_bend(r);
        const char *which;
        x->body = parse_body(r, stops, &which);
        if (!strcmp(which, "else")) {
            expect_bend(r);
            static const char *const endonly[] = {"endfor", NULL};
            x->els = parse_body(r, endonly, &which);
        }
        expect_bend(r);
        return x;
    }
    if (tok_is(t, T_NAME, "set")) {
        node *x = mk_node(r, N_SET);
        if (cur(r)->t != T_NAME) syntax(r, "a variable name");
        x->v = tok_str(cur(r));
        r->pos++;
        if (is_op(r, ".")) {
            r->pos++;
            if (cur(r)->t != T_NAME) syntax(r, "an attribute name");
            x->v2 = tok_str(cur(r));
            r->pos++;
        }
        if (is_op(r, ","))
            fail(r, KILN_ERR_UNSUPPORTED, "chat template line %d: tuple assignment is not supported", line);
        if (cur(r)->t == T_BEND)
            fail(r, KILN_ERR_UNSUPPORTED, "chat template line %d: block set is not supported", line);
        expect_op(r, "=");
        x->a = parse_expr(r);
        expect_bend(r);
        return x;
    }
    if (tok_is(t, T_NAME, "break") || tok_is(t, T_NAME, "continue")) {
        node *x = mk_node(r, tok_is(t, T_NAME, "break") ? N_BREAK : N_CONTINUE);
        expect_bend(r);
        return x;
    }
    if (tok_is(t, T_NAME, "generation")) { /* transformers' AssistantTracker: renders its body */
        static const char *const stops[] = {"endgeneration", NULL};
        node *x = mk_node(r, N_BLOCK);
        expect_bend(r);
        const char *which;
        x->body = parse_body(r, stops, &which);
        expect_bend(r);
        return x;
    }
    static const char *const known[] = {"macro", "call", "filter", "block", "extends", "include", "import",
                                        "from", "with", "autoescape", "raw", "do", "trans", NULL};
    if (in_list(t, known))
        fail(r, KILN_ERR_UNSUPPORTED, "chat template line %d: the '%.*s' tag is not supported", line,
             (int)t->n, t->p);
    fail(r, KILN_ERR_FORMAT, "chat template line %d: unknown tag '%.*s'", line, (int)(t->n > 40 ? 40 : t->n), t->p);
}

/* Statements until one of stops (left unconsumed after its name) or the end of the template. */
static node *parse_body(R *r, const char *const *stops, const char **which) {
    node *head = NULL, **tail = &head;
    enter(r);
    for (;;) {
        tok *t = cur(r);
        node *x = NULL;
        if (t->t == T_EOF) {
            if (stops) {
                const char *const *last = stops;
                while (last[1]) last++;
                fail(r, KILN_ERR_FORMAT, "chat template: unexpected end of template, expected '%s'", *last);
            }
            break;
        } else if (t->t == T_DATA) {
            x = mk_node(r, N_TEXT);
            x->v = mk_str(t->p, t->n);
            r->pos++;
        } else if (t->t == T_VBEGIN) {
            r->pos++;
            x = mk_node(r, N_PRINT);
            x->a = parse_expr(r);
            if (cur(r)->t != T_VEND) syntax(r, "end of print statement");
            r->pos++;
        } else if (t->t == T_BBEGIN) {
            tok *name = peek(r, 1);
            if (stops && in_list(name, stops)) {
                *which = stops[0];
                for (const char *const *s = stops; *s; s++)
                    if (tok_is(name, T_NAME, *s)) *which = *s;
                r->pos += 2;
                break;
            }
            static const char *const enders[] = {"endif", "endfor", "elif", "else", "endgeneration", NULL};
            if (in_list(name, enders)) {
                char b[64];
                fail(r, KILN_ERR_FORMAT, "chat template line %d: unexpected %s", name->line,
                     tok_desc(name, b, sizeof b));
            }
            r->pos++;
            x = parse_stmt(r);
        } else {
            syntax(r, "template data or a tag");
        }
        *tail = x;
        tail = &x->next;
    }
    r->depth--;
    return head;
}

/* ---------------------------------------------------------------- evaluation */

static jv lookup(R *r, frame *f, jv name) {
    for (; f; f = f->up)
        for (size_t i = f->n; i-- > 0;)
            if (str_eq(f->names[i], name.u.s.p, name.u.s.n)) return f->vals[i];
    (void)r;
    return mk_undef();
}

static void bind(R *r, frame *f, jv name, jv v) {
    for (size_t i = 0; i < f->n; i++)
        if (str_eq(f->names[i], name.u.s.p, name.u.s.n)) {
            f->vals[i] = v;
            return;
        }
    size_t nc = f->cap;
    f->names = agrow(r, f->names, f->n, &nc, sizeof(jv));
    f->vals = agrow(r, f->vals, f->n, &f->cap, sizeof(jv));
    f->names[f->n] = name;
    f->vals[f->n++] = v;
}

static jv eval(R *r, frame *f, node *x);

static _Noreturn void undefined_err(R *r, node *x) {
    if (x->k == E_NAME)
        fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: '%.*s' is undefined", x->line,
             (int)x->v.u.s.n, x->v.u.s.p);
    fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: an undefined value was used", x->line);
}

static jv getattr_v(R *r, jv o, jv key) {
    if ((o.t == JV_DICT || o.t == JV_NS)) {
        jv *p = dict_find(r, o.u.d, key);
        if (p) return *p;
    }
    return mk_undef();
}

/* Code point index -> byte offset (clamped). */
static size_t cp_offset(R *r, const char *s, size_t n, int64_t idx) {
    work_bytes(r, n);
    size_t i = 0;
    int32_t c;
    while (idx > 0 && i < n) {
        i += u8_next(s, n, i, &c);
        idx--;
    }
    return i;
}

static jv getitem_v(R *r, jv o, jv key) {
    if (o.t == JV_DICT || o.t == JV_NS) return getattr_v(r, o, key);
    if ((o.t == JV_LIST || o.t == JV_STR) && (key.t == JV_INT || key.t == JV_BOOL)) {
        int64_t len = o.t == JV_LIST ? (int64_t)o.u.l->n : (int64_t)u8_count(r, o.u.s.p, o.u.s.n);
        int64_t i = num_i(key);
        if (i < 0) i += len;
        if (i < 0 || i >= len) return mk_undef();
        if (o.t == JV_LIST) return o.u.l->v[i];
        size_t a = cp_offset(r, o.u.s.p, o.u.s.n, i);
        int32_t c;
        size_t k = u8_next(o.u.s.p, o.u.s.n, a, &c);
        return mk_str(o.u.s.p + a, k);
    }
    (void)r;
    return mk_undef();
}

/* Python slice semantics over a list or a string's code points. */
static jv slice_v(R *r, node *x, jv o, jv a, jv b, jv c) {
    if (o.t != JV_LIST && o.t != JV_STR)
        fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: cannot slice a %s", x->line, type_name(o));
    jv parts[3] = {a, b, c};
    for (int i = 0; i < 3; i++)
        if (parts[i].t != JV_UNDEF && parts[i].t != JV_NONE && parts[i].t != JV_INT && parts[i].t != JV_BOOL)
            fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: slice indices must be integers", x->line);
    int64_t len = o.t == JV_LIST ? (int64_t)o.u.l->n : (int64_t)u8_count(r, o.u.s.p, o.u.s.n);
    int64_t step = (c.t == JV_INT || c.t == JV_BOOL) ? num_i(c) : 1;
    if (step == 0) fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: slice step cannot be zero", x->line);
    int64_t lo, hi;
    bool has_a = a.t == JV_INT || a.t == JV_BOOL, has_b = b.t == JV_INT || b.t == JV_BOOL;
    if (step > 0) {
        lo = has_a ? num_i(a) : 0;
        hi = has_b ? num_i(b) : len;
        if (lo < 0) lo += len;
        if (lo < 0) lo = 0;
        if (lo > len) lo = len;
        if (hi < 0) hi += len;
        if (hi < 0) hi = 0;
        if (hi > len) hi = len;
    } else {
        lo = has_a ? num_i(a) : len - 1;
        hi = has_b ? num_i(b) : -1 - len;
        if (lo < 0) lo += len;
        if (lo < -1) lo = -1;
        if (lo >= len) lo = len - 1;
        if (hi < 0) hi += len;
        if (hi < -1) hi = -1;
        if (hi >= len) hi = len - 1;
    }
    if (o.t == JV_LIST) {
        jv l = mk_list(r);
        for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) list_push(r, l.u.l, o.u.l->v[i]);
        return l;
    }
    if (step == 1) {
        if (hi < lo) hi = lo;
        size_t pa = cp_offset(r, o.u.s.p, o.u.s.n, lo), pb = cp_offset(r, o.u.s.p, o.u.s.n, hi);
        return mk_str(o.u.s.p + pa, pb - pa);
    }
    sb bb = {0};
    for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) {
        size_t p = cp_offset(r, o.u.s.p, o.u.s.n, i);
        int32_t ch;
        size_t k = u8_next(o.u.s.p, o.u.s.n, p, &ch);
        sb_put(r, &bb, o.u.s.p + p, k);
    }
    return sb_take(&bb);
}

static int cmp_order(R *r, node *x, jv a, jv b) {
    if (is_num(a) && is_num(b)) {
        if (a.t == JV_FLOAT || b.t == JV_FLOAT) {
            double p = num_f(a), q = num_f(b);
            return p < q ? -1 : p > q ? 1 : 0;
        }
        int64_t p = num_i(a), q = num_i(b);
        return p < q ? -1 : p > q ? 1 : 0;
    }
    if (a.t == JV_STR && b.t == JV_STR) {
        size_t n = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
        int c = n ? memcmp(a.u.s.p, b.u.s.p, n) : 0;
        if (c) return c < 0 ? -1 : 1;
        return a.u.s.n < b.u.s.n ? -1 : a.u.s.n > b.u.s.n ? 1 : 0;
    }
    fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: cannot order %s and %s", x->line, type_name(a),
         type_name(b));
}

/* The first occurrence of nd in h at or after from, or SIZE_MAX: Knuth-Morris-Pratt, so a
 * search costs O(|h| + |nd|) whatever the strings (a naive scan is O(|h| * |nd|)). */
static size_t str_find(R *r, const char *h, size_t hn, size_t from, const char *nd, size_t nn) {
    if (from > hn || nn > hn - from) return SIZE_MAX;
    if (nn == 0) return from;
    size_t at = SIZE_MAX;
    if (nn == 1) {
        const char *p = memchr(h + from, nd[0], hn - from);
        if (p) at = (size_t)(p - h);
    } else {
        size_t *fail_at = amalloc(r, nn * sizeof *fail_at);
        fail_at[0] = 0;
        for (size_t i = 1, k = 0; i < nn; i++) {
            while (k && nd[i] != nd[k]) k = fail_at[k - 1];
            if (nd[i] == nd[k]) k++;
            fail_at[i] = k;
        }
        for (size_t i = from, k = 0; i < hn && at == SIZE_MAX; i++) {
            while (k && h[i] != nd[k]) k = fail_at[k - 1];
            if (h[i] == nd[k]) k++;
            if (k == nn) at = i + 1 - nn;
        }
    }
    /* charged for what was scanned, so counting many matches stays linear in the budget too */
    work_bytes(r, (at == SIZE_MAX ? hn : at + nn) - from + nn);
    return at;
}

static bool contains(R *r, node *x, jv hay, jv needle) {
    if (hay.t == JV_STR) {
        if (needle.t != JV_STR)
            fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: 'in <string>' requires a string, not %s",
                 x->line, type_name(needle));
        return str_find(r, hay.u.s.p, hay.u.s.n, 0, needle.u.s.p, needle.u.s.n) != SIZE_MAX;
    }
    if (hay.t == JV_LIST) {
        for (size_t i = 0; i < hay.u.l->n; i++)
            if (value_eq(r, hay.u.l->v[i], needle)) return true;
        return false;
    }
    if (hay.t == JV_DICT || hay.t == JV_NS) return dict_find(r, hay.u.d, needle) != NULL;
    if (hay.t == JV_UNDEF) return false;
    fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: argument of type '%s' is not iterable", x->line,
         type_name(hay));
}

static jv concat_str(R *r, jv a, jv b) {
    char *p = amalloc(r, a.u.s.n + b.u.s.n + 1);
    if (a.u.s.n) memcpy(p, a.u.s.p, a.u.s.n);
    if (b.u.s.n) memcpy(p + a.u.s.n, b.u.s.p, b.u.s.n);
    p[a.u.s.n + b.u.s.n] = 0;
    return mk_str(p, a.u.s.n + b.u.s.n);
}

static int64_t floordiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

static jv binop(R *r, node *x, jv a, jv b) {
    if (a.t == JV_UNDEF || b.t == JV_UNDEF) undefined_err(r, a.t == JV_UNDEF ? x->a : x->b);
    int op = x->op;
    if (op == OP_ADD && a.t == JV_STR && b.t == JV_STR) return concat_str(r, a, b);
    if (op == OP_ADD && a.t == JV_LIST && b.t == JV_LIST) {
        jv l = mk_list(r);
        for (size_t i = 0; i < a.u.l->n; i++) list_push(r, l.u.l, a.u.l->v[i]);
        for (size_t i = 0; i < b.u.l->n; i++) list_push(r, l.u.l, b.u.l->v[i]);
        return l;
    }
    if (op == OP_MUL && ((a.t == JV_STR && (b.t == JV_INT || b.t == JV_BOOL)) ||
                         (b.t == JV_STR && (a.t == JV_INT || a.t == JV_BOOL)))) {
        jv s = a.t == JV_STR ? a : b;
        int64_t k = a.t == JV_STR ? num_i(b) : num_i(a);
        if (k <= 0 || s.u.s.n == 0) return mk_str("", 0);
        if ((uint64_t)k > MAX_ARENA / s.u.s.n)
            fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: string repetition too large", x->line);
        char *p = amalloc(r, s.u.s.n * (size_t)k + 1);
        for (int64_t i = 0; i < k; i++) memcpy(p + (size_t)i * s.u.s.n, s.u.s.p, s.u.s.n);
        p[s.u.s.n * (size_t)k] = 0;
        return mk_str(p, s.u.s.n * (size_t)k);
    }
    if (!is_num(a) || !is_num(b))
        fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: unsupported operand types for %s: '%s' and '%s'",
             x->line, (const char *[]){"+", "-", "*", "/", "//", "%", "**"}[op], type_name(a), type_name(b));
    bool fl = a.t == JV_FLOAT || b.t == JV_FLOAT || op == OP_DIV;
    if (fl) {
        double p = num_f(a), q = num_f(b);
        if ((op == OP_DIV || op == OP_FDIV || op == OP_MOD) && q == 0)
            fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: division by zero", x->line);
        switch (op) {
        case OP_ADD: return mk_float(p + q);
        case OP_SUB: return mk_float(p - q);
        case OP_MUL: return mk_float(p * q);
        case OP_DIV: return mk_float(p / q);
        case OP_FDIV: return mk_float(floor(p / q));
        case OP_MOD: { double m = fmod(p, q); if (m != 0 && ((m < 0) != (q < 0))) m += q; return mk_float(m); }
        default: return mk_float(pow(p, q));
        }
    }
    int64_t p = num_i(a), q = num_i(b), res;
    switch (op) {
    case OP_ADD: if (__builtin_add_overflow(p, q, &res)) goto ovf; return mk_int(res);
    case OP_SUB: if (__builtin_sub_overflow(p, q, &res)) goto ovf; return mk_int(res);
    case OP_MUL: if (__builtin_mul_overflow(p, q, &res)) goto ovf; return mk_int(res);
    case OP_FDIV: case OP_MOD:
        if (q == 0) fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: division by zero", x->line);
        if (p == INT64_MIN && q == -1) goto ovf;
        return op == OP_FDIV ? mk_int(floordiv(p, q)) : mk_int(p - floordiv(p, q) * q);
    default:
        if (q < 0) return mk_float(pow((double)p, (double)q));
        res = 1;
        for (int64_t i = 0; i < q; i++) {
            if (__builtin_mul_overflow(res, p, &res)) goto ovf;
            if (res == 0 || res == 1) break;
        }
        return mk_int(res);
    }
ovf:
    fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: integer overflow", x->line);
}

/* Evaluated call arguments: positional in pos[], keywords looked up by name. */
typedef struct args {
    jv pos[16];
    size_t npos;
    jv kw[16];
    jv kwnames[16];
    size_t nkw;
} args;

static void eval_args(R *r, frame *f, node *x, args *a) {
    memset(a, 0, sizeof *a);
    size_t npos = x->nargs - x->nkw;
    if (npos > 16 || x->nkw > 16)
        fail(r, KILN_ERR_UNSUPPORTED, "chat template line %d: too many arguments", x->line);
    for (size_t i = 0; i < npos; i++) a->pos[a->npos++] = eval(r, f, x->args[i]);
    for (size_t i = 0; i < x->nkw; i++) {
        a->kwnames[i] = x->kwnames[i];
        a->kw[a->nkw++] = eval(r, f, x->args[npos + i]);
    }
}

/* Argument i, or keyword name, or undefined. */
static jv arg(args *a, size_t i, const char *name) {
    if (i < a->npos && i < sizeof a->pos / sizeof a->pos[0]) return a->pos[i];
    for (size_t k = 0; k < a->nkw; k++)
        if (name && str_eq(a->kwnames[k], name, strlen(name))) return a->kw[k];
    return mk_undef();
}

static jv need_str(R *r, node *x, jv v, const char *what) {
    if (v.t != JV_STR)
        fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: %s expects a string, got %s", x->line, what,
             type_name(v));
    return v;
}

static jv str_replace(R *r, jv s, jv old, jv neu, int64_t count) {
    sb b = {0};
    size_t i = 0;
    int64_t done = 0;
    if (old.u.s.n == 0) { /* Python inserts between every character */
        int32_t c;
        while (count < 0 || done < count) {
            sb_put(r, &b, neu.u.s.p, neu.u.s.n);
            done++;
            if (i >= s.u.s.n) break;
            size_t k = u8_next(s.u.s.p, s.u.s.n, i, &c);
            sb_put(r, &b, s.u.s.p + i, k);
            i += k;
        }
        sb_put(r, &b, s.u.s.p + i, s.u.s.n - i);
        return sb_take(&b);
    }
    while (i < s.u.s.n && (count < 0 || done < count)) {
        size_t at = str_find(r, s.u.s.p, s.u.s.n, i, old.u.s.p, old.u.s.n);
        if (at == SIZE_MAX) break;
        sb_put(r, &b, s.u.s.p + i, at - i);
        sb_put(r, &b, neu.u.s.p, neu.u.s.n);
        i = at + old.u.s.n;
        done++;
    }
    sb_put(r, &b, s.u.s.p + i, s.u.s.n - i);
    return sb_take(&b);
}

static jv str_split(R *r, node *x, jv s, jv sep, int64_t maxsplit) {
    jv l = mk_list(r);
    const char *p = s.u.s.p;
    size_t n = s.u.s.n, i = 0;
    if (sep.t == JV_UNDEF || sep.t == JV_NONE) {
        int64_t splits = 0;
        int32_t c;
        for (;;) {
            while (i < n) {
                size_t k = u8_next(p, n, i, &c);
                if (!py_space(c)) break;
                i += k;
            }
            if (i >= n) break;
            if (maxsplit >= 0 && splits >= maxsplit) {
                jv rest = str_strip(r, mk_str(p + i, n - i), mk_undef(), false, true);
                list_push(r, l.u.l, rest);
                break;
            }
            size_t st = i;
            while (i < n) {
                size_t k = u8_next(p, n, i, &c);
                if (py_space(c)) break;
                i += k;
            }
            list_push(r, l.u.l, mk_str(p + st, i - st));
            splits++;
        }
        return l;
    }
    need_str(r, x, sep, "split()");
    if (sep.u.s.n == 0) fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: empty separator", x->line);
    int64_t splits = 0;
    while (maxsplit < 0 || splits < maxsplit) {
        size_t at = str_find(r, p, n, i, sep.u.s.p, sep.u.s.n);
        if (at == SIZE_MAX) break;
        list_push(r, l.u.l, mk_str(p + i, at - i));
        i = at + sep.u.s.n;
        splits++;
    }
    list_push(r, l.u.l, mk_str(p + i, n - i));
    return l;
}

static bool starts_ends(R *r, node *x, jv s, jv pre, bool end) {
    if (pre.t == JV_LIST) {
        for (size_t i = 0; i < pre.u.l->n; i++)
            if (starts_ends(r, x, s, pre.u.l->v[i], end)) return true;
        return false;
    }
    need_str(r, x, pre, end ? "endswith()" : "startswith()");
    if (pre.u.s.n > s.u.s.n) return false;
    return !memcmp(s.u.s.p + (end ? s.u.s.n - pre.u.s.n : 0), pre.u.s.p, pre.u.s.n);
}

static int64_t opt_int(R *r, node *x, jv v, int64_t dflt) {
    if (v.t == JV_UNDEF || v.t == JV_NONE) return dflt;
    if (v.t != JV_INT && v.t != JV_BOOL)
        fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: expected an integer, got %s", x->line, type_name(v));
    return num_i(v);
}

static jv call_method(R *r, frame *f, node *x) {
    node *an = x->a;
    jv o = eval(r, f, an->a);
    jv m = an->v;
    args a;
    eval_args(r, f, x, &a);
#define M(name) str_eq(m, name, sizeof name - 1)
    if (o.t == JV_UNDEF) undefined_err(r, an->a);
    if (o.t == JV_STR) {
        if (M("strip") || M("lstrip") || M("rstrip"))
            return str_strip(r, o, arg(&a, 0, "chars"), !M("rstrip"), !M("lstrip"));
        if (M("upper")) return str_case(r, o, 'u');
        if (M("lower")) return str_case(r, o, 'l');
        if (M("title")) return str_case(r, o, 't');
        if (M("capitalize")) return str_case(r, o, 'c');
        if (M("startswith") || M("endswith")) return mk_bool(starts_ends(r, x, o, arg(&a, 0, NULL), M("endswith")));
        if (M("split")) return str_split(r, x, o, arg(&a, 0, "sep"), opt_int(r, x, arg(&a, 1, "maxsplit"), -1));
        if (M("replace"))
            return str_replace(r, o, need_str(r, x, arg(&a, 0, NULL), "replace()"),
                               need_str(r, x, arg(&a, 1, NULL), "replace()"), opt_int(r, x, arg(&a, 2, "count"), -1));
        if (M("find") || M("count")) {
            jv nd = need_str(r, x, arg(&a, 0, NULL), "find()");
            if (M("find")) {
                size_t at = str_find(r, o.u.s.p, o.u.s.n, 0, nd.u.s.p, nd.u.s.n);
                return mk_int(at == SIZE_MAX ? -1 : (int64_t)u8_count(r, o.u.s.p, at));
            }
            if (nd.u.s.n == 0) return mk_int((int64_t)u8_count(r, o.u.s.p, o.u.s.n) + 1);
            int64_t cnt = 0;
            for (size_t i = 0, at; (at = str_find(r, o.u.s.p, o.u.s.n, i, nd.u.s.p, nd.u.s.n)) !=
                                   SIZE_MAX; i = at + nd.u.s.n)
                cnt++;
            return mk_int(cnt);
        }
    } else if (o.t == JV_DICT) {
        if (M("items") || M("keys") || M("values")) {
            jv l = mk_list(r);
            for (size_t i = 0; i < o.u.d->n; i++) {
                if (M("items")) {
                    jv pair = mk_list(r);
                    list_push(r, pair.u.l, o.u.d->k[i]);
                    list_push(r, pair.u.l, o.u.d->v[i]);
                    list_push(r, l.u.l, pair);
                } else list_push(r, l.u.l, M("keys") ? o.u.d->k[i] : o.u.d->v[i]);
            }
            return l;
        }
        if (M("get")) {
            jv *p = dict_find(r, o.u.d, arg(&a, 0, NULL));
            if (p) return *p;
            jv d = arg(&a, 1, "default");
            return d.t == JV_UNDEF ? mk_none() : d;
        }
    }
#undef M
    fail(r, KILN_ERR_UNSUPPORTED, "chat template line %d: method %s.%.*s() is not supported", x->line,
         type_name(o), (int)m.u.s.n, m.u.s.p);
}

static jv call(R *r, frame *f, node *x) {
    if (x->a->k == E_ATTR) return call_method(r, f, x);
    if (x->a->k != E_NAME)
        fail(r, KILN_ERR_UNSUPPORTED, "chat template line %d: calling this expression is not supported", x->line);
    jv name = x->a->v;
    jv bound = lookup(r, f, name);
    if (bound.t != JV_UNDEF)
        fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: '%.*s' is not callable", x->line,
             (int)name.u.s.n, name.u.s.p);
    args a;
    eval_args(r, f, x, &a);
    if (str_eq(name, "raise_exception", 15)) {
        jv m = to_str(r, arg(&a, 0, NULL));
        fail(r, KILN_ERR_INVALID_ARG, "%.*s", (int)(m.u.s.n > 400 ? 400 : m.u.s.n), m.u.s.p);
    }
    if (str_eq(name, "namespace", 9)) {
        jv ns = mk_dict(r, JV_NS);
        for (size_t i = 0; i < a.npos; i++) {
            if (a.pos[i].t != JV_DICT)
                fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: namespace() takes a dict or keywords", x->line);
            for (size_t k = 0; k < a.pos[i].u.d->n; k++) dict_set(r, ns.u.d, a.pos[i].u.d->k[k], a.pos[i].u.d->v[k]);
        }
        for (size_t i = 0; i < a.nkw; i++) dict_set(r, ns.u.d, a.kwnames[i], a.kw[i]);
        return ns;
    }
    if (str_eq(name, "range", 5)) {
        int64_t lo = 0, hi, st = 1;
        if (a.npos == 1) hi = opt_int(r, x, a.pos[0], 0);
        else if (a.npos == 2 || a.npos == 3) {
            lo = opt_int(r, x, a.pos[0], 0);
            hi = opt_int(r, x, a.pos[1], 0);
            if (a.npos == 3) st = opt_int(r, x, a.pos[2], 1);
        } else fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: range() takes 1 to 3 arguments", x->line);
        if (st == 0) fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: range() step is zero", x->line);
        jv l = mk_list(r);
        for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st) {
            if (l.u.l->n >= MAX_ITERATIONS)
                fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: range too large", x->line);
            list_push(r, l.u.l, mk_int(i));
            if (st > 0 ? i > INT64_MAX - st : i < INT64_MIN - st) break; /* the next would wrap */
        }
        return l;
    }
    if (str_eq(name, "dict", 4)) {
        jv d = mk_dict(r, JV_DICT);
        for (size_t i = 0; i < a.nkw; i++) dict_set(r, d.u.d, a.kwnames[i], a.kw[i]);
        return d;
    }
    fail(r, KILN_ERR_UNSUPPORTED, "chat template line %d: function '%.*s' is not supported", x->line,
         (int)name.u.s.n, name.u.s.p);
}

static bool run_test(R *r, node *x, jv v, jv name, args *a);

static jv filter(R *r, frame *f, node *x) {
    jv v = eval(r, f, x->a);
    jv m = x->v;
    args a;
    eval_args(r, f, x, &a);
#define F(name) str_eq(m, name, sizeof name - 1)
    if (F("default") || F("d")) {
        bool boolean = truthy(arg(&a, 1, "boolean"));
        if (v.t == JV_UNDEF || (boolean && !truthy(v))) {
            jv d = arg(&a, 0, "default_value");
            return d.t == JV_UNDEF ? mk_str("", 0) : d;
        }
        return v;
    }
    if (F("length") || F("count")) {
        if (v.t == JV_STR) return mk_int((int64_t)u8_count(r, v.u.s.p, v.u.s.n));
        if (v.t == JV_LIST) return mk_int((int64_t)v.u.l->n);
        if (v.t == JV_DICT || v.t == JV_NS) return mk_int((int64_t)v.u.d->n);
        if (v.t == JV_UNDEF) return mk_int(0);
        fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: object of type '%s' has no len()", x->line, type_name(v));
    }
    if (F("tojson")) {
        sb b = {0};
        jv ind = arg(&a, 0, "indent");
        put_json(r, &b, v, ind.t == JV_INT ? ind.u.i : -1, 0);
        return sb_take(&b);
    }
    if (F("safe")) return v;
    if (F("string")) return to_str(r, v);
    if (F("trim")) return str_strip(r, to_str(r, v), arg(&a, 0, "chars"), true, true);
    if (F("upper")) return str_case(r, to_str(r, v), 'u');
    if (F("lower")) return str_case(r, to_str(r, v), 'l');
    if (F("capitalize")) return str_case(r, to_str(r, v), 'c');
    if (F("title")) return str_case(r, to_str(r, v), 't'); /* jinja2's title differs only on quotes */
    if (F("replace")) {
        jv s = to_str(r, v);
        return str_replace(r, s, to_str(r, arg(&a, 0, "old")), to_str(r, arg(&a, 1, "new")),
                           opt_int(r, x, arg(&a, 2, "count"), -1));
    }
    if (F("first") || F("last")) {
        if (v.t == JV_LIST) {
            if (!v.u.l->n) return mk_undef();
            return v.u.l->v[F("first") ? 0 : v.u.l->n - 1];
        }
        if (v.t == JV_STR) {
            if (!v.u.s.n) return mk_undef();
            int64_t len = (int64_t)u8_count(r, v.u.s.p, v.u.s.n);
            return getitem_v(r, v, mk_int(F("first") ? 0 : len - 1));
        }
        fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: first/last of a %s", x->line, type_name(v));
    }
    if (F("join")) {
        if (v.t != JV_LIST) fail(r, KILN_ERR_UNSUPPORTED, "chat template line %d: join of a %s", x->line, type_name(v));
        jv sep = arg(&a, 0, "d");
        jv attr = arg(&a, 1, "attribute");
        sb b = {0};
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i && sep.t == JV_STR) sb_put(r, &b, sep.u.s.p, sep.u.s.n);
            jv it = v.u.l->v[i];
            if (attr.t != JV_UNDEF) it = getitem_v(r, it, attr);
            put_str(r, &b, it, false);
        }
        return sb_take(&b);
    }
    if (F("list")) {
        if (v.t == JV_LIST) return v;
        jv l = mk_list(r);
        if (v.t == JV_STR) {
            int32_t c;
            for (size_t i = 0; i < v.u.s.n;) {
                size_t k = u8_next(v.u.s.p, v.u.s.n, i, &c);
                list_push(r, l.u.l, mk_str(v.u.s.p + i, k));
                i += k;
            }
        } else if (v.t == JV_DICT) {
            for (size_t i = 0; i < v.u.d->n; i++) list_push(r, l.u.l, v.u.d->k[i]);
        } else if (v.t != JV_UNDEF)
            fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: %s is not iterable", x->line, type_name(v));
        return l;
    }
    if (F("reverse")) {
        if (v.t == JV_STR) return slice_v(r, x, v, mk_undef(), mk_undef(), mk_int(-1));
        if (v.t == JV_LIST) return slice_v(r, x, v, mk_undef(), mk_undef(), mk_int(-1));
    }
    if (F("int")) {
        if (v.t == JV_INT) return v;
        if (v.t == JV_BOOL) return mk_int(v.u.b);
        if (v.t == JV_FLOAT && fabs(v.u.f) < 9e18) return mk_int((int64_t)v.u.f);
        if (v.t == JV_STR) {
            char buf[32];
            jv t = str_strip(r, v, mk_undef(), true, true);
            if (t.u.s.n && t.u.s.n < sizeof buf) {
                memcpy(buf, t.u.s.p, t.u.s.n);
                buf[t.u.s.n] = 0;
                char *e;
                long long k = strtoll(buf, &e, 10);
                if (!*e) return mk_int(k);
            }
        }
        jv d = arg(&a, 0, "default");
        return d.t == JV_UNDEF ? mk_int(0) : d;
    }
    if (F("abs") && is_num(v)) {
        if (v.t == JV_FLOAT) return mk_float(fabs(v.u.f));
        if (num_i(v) == INT64_MIN) fail(r, KILN_ERR_INVALID_ARG, "chat template: integer overflow");
        return mk_int(num_i(v) < 0 ? -num_i(v) : num_i(v));
    }
    if (F("items") && v.t == JV_DICT) {
        jv l = mk_list(r);
        for (size_t i = 0; i < v.u.d->n; i++) {
            jv pair = mk_list(r);
            list_push(r, pair.u.l, v.u.d->k[i]);
            list_push(r, pair.u.l, v.u.d->v[i]);
            list_push(r, l.u.l, pair);
        }
        return l;
    }
    if ((F("selectattr") || F("rejectattr") || F("select") || F("reject")) ) {
        bool attr = F("selectattr") || F("rejectattr"), want = F("selectattr") || F("select");
        jv l = mk_list(r);
        if (v.t == JV_UNDEF) return l;
        if (v.t != JV_LIST) fail(r, KILN_ERR_UNSUPPORTED, "chat template line %d: %.*s over a %s", x->line,
                                 (int)m.u.s.n, m.u.s.p, type_name(v));
        size_t base = attr ? 1 : 0;
        args ta;
        memset(&ta, 0, sizeof ta);
        for (size_t i = base + 1; i < a.npos; i++) ta.pos[ta.npos++] = a.pos[i];
        jv tname = base < a.npos ? a.pos[base] : mk_undef();
        if (tname.t != JV_UNDEF) need_str(r, x, tname, "a test name");
        for (size_t i = 0; i < v.u.l->n; i++) {
            jv it = v.u.l->v[i];
            if (attr) it = getitem_v(r, it, need_str(r, x, arg(&a, 0, NULL), "selectattr()"));
            bool ok = tname.t == JV_UNDEF ? truthy(it) : run_test(r, x, it, tname, &ta);
            if (ok == want) list_push(r, l.u.l, v.u.l->v[i]);
        }
        return l;
    }
    if (F("map")) {
        jv at = arg(&a, 99, "attribute");
        if (v.t == JV_LIST && at.t != JV_UNDEF) {
            jv l = mk_list(r);
            for (size_t i = 0; i < v.u.l->n; i++) {
                jv it = getitem_v(r, v.u.l->v[i], at);
                if (it.t == JV_UNDEF) it = arg(&a, 99, "default");
                list_push(r, l.u.l, it);
            }
            return l;
        }
    }
#undef F
    fail(r, KILN_ERR_UNSUPPORTED, "chat template line %d: filter '%.*s' is not supported here", x->line,
         (int)m.u.s.n, m.u.s.p);
}

static bool run_test(R *r, node *x, jv v, jv name, args *a) {
#define T(s) str_eq(name, s, sizeof s - 1)
    if (T("defined")) return v.t != JV_UNDEF;
    if (T("undefined")) return v.t == JV_UNDEF;
    if (T("none")) return v.t == JV_NONE;
    if (T("string")) return v.t == JV_STR;
    if (T("number")) return is_num(v);
    if (T("integer")) return v.t == JV_INT;
    if (T("float")) return v.t == JV_FLOAT;
    if (T("boolean")) return v.t == JV_BOOL;
    if (T("true")) return v.t == JV_BOOL && v.u.b;
    if (T("false")) return v.t == JV_BOOL && !v.u.b;
    if (T("mapping")) return v.t == JV_DICT;
    if (T("iterable")) return v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF;
    if (T("sequence")) return v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF;
    if (T("callable")) return false;
    if (T("lower") || T("upper")) {
        if (v.t != JV_STR) return false;
        jv c = str_case(r, v, T("lower") ? 'l' : 'u');
        return str_eq(c, v.u.s.p, v.u.s.n);
    }
    if (T("even") || T("odd")) {
        if (v.t != JV_INT && v.t != JV_BOOL)
            fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: even/odd of a %s", x->line, type_name(v));
        return (num_i(v) % 2 == 0) == T("even");
    }
    jv o = arg(a, 0, NULL);
    if (T("divisibleby")) {
        int64_t d = opt_int(r, x, o, 1);
        if (d == 0 || (v.t != JV_INT && v.t != JV_BOOL))
            fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: bad divisibleby", x->line);
        return num_i(v) % d == 0;
    }
    if (T("eq") || T("equalto") || T("==")) return value_eq(r, v, o);
    if (T("ne") || T("!=")) return !value_eq(r, v, o);
    if (T("sameas")) return value_eq(r, v, o) && v.t == o.t;
    if (T("lt") || T("lessthan")) return cmp_order(r, x, v, o) < 0;
    if (T("gt") || T("greaterthan")) return cmp_order(r, x, v, o) > 0;
    if (T("le")) return cmp_order(r, x, v, o) <= 0;
    if (T("ge")) return cmp_order(r, x, v, o) >= 0;
    if (T("in")) return contains(r, x, o, v);
#undef T
    fail(r, KILN_ERR_UNSUPPORTED, "chat template line %d: test '%.*s' is not supported", x->line,
         (int)name.u.s.n, name.u.s.p);
}

static jv eval(R *r, frame *f, node *x) {
    if (++r->depth > MAX_DEPTH * 4)
        fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: expression too deep", x->line);
    work(r, 1);
    jv res;
    switch (x->k) {
    case E_CONST: res = x->v; break;
    case E_NAME: res = lookup(r, f, x->v); break;
    case E_LIST: {
        res = mk_list(r);
        for (size_t i = 0; i < x->nargs; i++) list_push(r, res.u.l, eval(r, f, x->args[i]));
        break;
    }
    case E_DICT: {
        res = mk_dict(r, JV_DICT);
        for (size_t i = 0; i + 1 < x->nargs; i += 2) {
            jv k = eval(r, f, x->args[i]);
            dict_set(r, res.u.d, k, eval(r, f, x->args[i + 1]));
        }
        break;
    }
    case E_ATTR: {
        jv o = eval(r, f, x->a);
        if (o.t == JV_UNDEF) undefined_err(r, x->a);
        res = getattr_v(r, o, x->v);
        break;
    }
    case E_ITEM: {
        jv o = eval(r, f, x->a);
        if (o.t == JV_UNDEF) undefined_err(r, x->a);
        res = getitem_v(r, o, eval(r, f, x->b));
        break;
    }
    case E_SLICE: {
        jv o = eval(r, f, x->a);
        if (o.t == JV_UNDEF) undefined_err(r, x->a);
        jv a = x->b ? eval(r, f, x->b) : mk_undef(), b = x->c ? eval(r, f, x->c) : mk_undef(),
           c = x->d ? eval(r, f, x->d) : mk_undef();
        res = slice_v(r, x, o, a, b, c);
        break;
    }
    case E_CALL: res = call(r, f, x); break;
    case E_FILTER: res = filter(r, f, x); break;
    case E_TEST: {
        jv v = eval(r, f, x->a);
        args a;
        eval_args(r, f, x, &a);
        res = mk_bool(run_test(r, x, v, x->v, &a) != x->neg);
        break;
    }
    case E_NEG: case E_POS: {
        jv v = eval(r, f, x->a);
        if (v.t == JV_UNDEF) undefined_err(r, x->a);
        if (!is_num(v)) fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: bad operand type for unary -: '%s'",
                             x->line, type_name(v));
        if (x->k == E_POS) res = v.t == JV_BOOL ? mk_int(v.u.b) : v;
        else if (v.t == JV_FLOAT) res = mk_float(-v.u.f);
        else if (num_i(v) == INT64_MIN) fail(r, KILN_ERR_INVALID_ARG, "chat template: integer overflow");
        else res = mk_int(-num_i(v));
        break;
    }
    case E_NOT: res = mk_bool(!truthy(eval(r, f, x->a))); break;
    case E_AND: {
        jv a = eval(r, f, x->a);
        res = truthy(a) ? eval(r, f, x->b) : a;
        break;
    }
    case E_OR: {
        jv a = eval(r, f, x->a);
        res = truthy(a) ? a : eval(r, f, x->b);
        break;
    }
    case E_BIN: res = binop(r, x, eval(r, f, x->a), eval(r, f, x->b)); break;
    case E_CMP: {
        jv a = eval(r, f, x->a);
        res = mk_bool(true);
        for (size_t i = 0; i < x->nargs; i++) {
            jv b = eval(r, f, x->args[i]);
            bool ok;
            switch (x->ops[i]) {
            case C_EQ: ok = value_eq(r, a, b); break;
            case C_NE: ok = !value_eq(r, a, b); break;
            case C_LT: ok = cmp_order(r, x, a, b) < 0; break;
            case C_GT: ok = cmp_order(r, x, a, b) > 0; break;
            case C_LE: ok = cmp_order(r, x, a, b) <= 0; break;
            case C_GE: ok = cmp_order(r, x, a, b) >= 0; break;
            case C_IN: ok = contains(r, x, b, a); break;
            default: ok = !contains(r, x, b, a); break;
            }
            if (!ok) {
                res = mk_bool(false);
                break;
            }
            a = b;
        }
        break;
    }
    case E_COND:
        res = truthy(eval(r, f, x->a)) ? eval(r, f, x->b) : x->c ? eval(r, f, x->c) : mk_undef();
        break;
    case E_CONCAT: {
        sb b = {0};
        for (size_t i = 0; i < x->nargs; i++) {
            jv v = eval(r, f, x->args[i]);
            jv s = to_str(r, v);
            sb_put(r, &b, s.u.s.p, s.u.s.n);
        }
        res = sb_take(&b);
        break;
    }
    default:
        fail(r, KILN_ERR_INTERNAL, "chat template: bad expression node");
    }
    r->depth--;
    return res;
}

enum { X_OK, X_BREAK, X_CONTINUE };

static int exec(R *r, frame *f, node *x, bool in_loop);

static int exec_list(R *r, frame *f, node *x, bool in_loop) {
    for (; x; x = x->next) {
        int st = exec(r, f, x, in_loop);
        if (st != X_OK) return st;
    }
    return X_OK;
}

static int exec(R *r, frame *f, node *x, bool in_loop) {
    work(r, 1);
    switch (x->k) {
    case N_TEXT: emit(r, x->v.u.s.p, x->v.u.s.n); return X_OK;
    case N_PRINT: {
        jv v = eval(r, f, x->a);
        r->depth = 0;
        sb t = {0};
        put_str(r, &t, v, false);
        emit(r, t.p, t.n);
        return X_OK;
    }
    case N_IF: {
        bool c = truthy(eval(r, f, x->a));
        r->depth = 0;
        return exec_list(r, f, c ? x->body : x->els, in_loop);
    }
    case N_BLOCK: return exec_list(r, f, x->body, in_loop);
    case N_SET: {
        jv v = eval(r, f, x->a);
        r->depth = 0;
        if (x->v2.t == JV_STR) {
            jv ns = lookup(r, f, x->v);
            if (ns.t != JV_NS)
                fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: cannot assign attribute on non-namespace object",
                     x->line);
            dict_set(r, ns.u.d, x->v2, v);
        } else bind(r, f, x->v, v);
        return X_OK;
    }
    case N_BREAK: case N_CONTINUE:
        if (!in_loop) fail(r, KILN_ERR_FORMAT, "chat template line %d: break/continue outside a loop", x->line);
        return x->k == N_BREAK ? X_BREAK : X_CONTINUE;
    case N_FOR: {
        jv it = eval(r, f, x->a);
        r->depth = 0;
        jv items = mk_list(r);
        if (it.t == JV_LIST) items = it;
        else if (it.t == JV_DICT) {
            for (size_t i = 0; i < it.u.d->n; i++) list_push(r, items.u.l, it.u.d->k[i]);
        } else if (it.t == JV_STR) {
            int32_t c;
            for (size_t i = 0; i < it.u.s.n;) {
                size_t k = u8_next(it.u.s.p, it.u.s.n, i, &c);
                list_push(r, items.u.l, mk_str(it.u.s.p + i, k));
                i += k;
            }
        } else if (it.t != JV_UNDEF)
            fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: '%s' object is not iterable", x->line,
                 type_name(it));
        /* each iteration gets a fresh scope over the enclosing one: a set inside the body is
         * gone at the next iteration and after the loop, as in jinja2 */
        frame scratch = {f, 0, 0, NULL, NULL};
        if (x->b) { /* the loop filter runs before loop.* is computed */
            jv kept = mk_list(r);
            for (size_t i = 0; i < items.u.l->n; i++) {
                if (++r->iterations > MAX_ITERATIONS)
                    fail(r, KILN_ERR_INVALID_ARG, "chat template: more than %u loop iterations", MAX_ITERATIONS);
                scratch.n = 0;
                bind(r, &scratch, x->v, items.u.l->v[i]);
                if (truthy(eval(r, &scratch, x->b))) list_push(r, kept.u.l, items.u.l->v[i]);
                r->depth = 0;
            }
            items = kept;
        }
        size_t n = items.u.l->n;
        if (n == 0) return exec_list(r, f, x->els, in_loop);
        jv loop = mk_dict(r, JV_DICT);
        static const char *const keys[] = {"index", "index0", "revindex", "revindex0", "first", "last",
                                           "length", "previtem", "nextitem"};
        for (size_t k = 0; k < 9; k++) dict_set(r, loop.u.d, mk_cstr(keys[k]), mk_undef());
        for (size_t i = 0; i < n; i++) {
            if (++r->iterations > MAX_ITERATIONS)
                fail(r, KILN_ERR_INVALID_ARG, "chat template: more than %u loop iterations", MAX_ITERATIONS);
            jv *lv = loop.u.d->v;
            lv[0] = mk_int((int64_t)i + 1);
            lv[1] = mk_int((int64_t)i);
            lv[2] = mk_int((int64_t)(n - i));
            lv[3] = mk_int((int64_t)(n - i - 1));
            lv[4] = mk_bool(i == 0);
            lv[5] = mk_bool(i + 1 == n);
            lv[6] = mk_int((int64_t)n);
            lv[7] = i ? items.u.l->v[i - 1] : mk_undef();
            lv[8] = i + 1 < n ? items.u.l->v[i + 1] : mk_undef();
            frame fr = {f, 0, 0, NULL, NULL};
            jv item = items.u.l->v[i];
            if (x->v2.t == JV_STR) {
                if (item.t != JV_LIST || item.u.l->n != 2)
                    fail(r, KILN_ERR_INVALID_ARG, "chat template line %d: cannot unpack a %s into two variables",
                         x->line, type_name(item));
                bind(r, &fr, x->v, item.u.l->v[0]);
                bind(r, &fr, x->v2, item.u.l->v[1]);
            } else bind(r, &fr, x->v, item);
            bind(r, &fr, mk_cstr("loop"), loop);
            int st = exec_list(r, &fr, x->body, true);
            if (st == X_BREAK) break;
        }
        return X_OK;
    }
    default:
        fail(r, KILN_ERR_INTERNAL, "chat template: bad statement node");
    }
}

/* ---------------------------------------------------------------- entry */

static jv arena_str(R *r, const char *s) {
    size_t n = strlen(s);
    char *p = amalloc(r, n + 1);
    memcpy(p, s, n + 1);
    return mk_str(p, n);
}

/* A JSON value as a template value; strings are copied into the arena. */
static jv from_json(R *r, const cJSON *j, int depth) {
    if (depth > 64) fail(r, KILN_ERR_INVALID_ARG, "chat template kwargs: nested deeper than 64");
    work(r, 1);
    if (cJSON_IsNull(j)) return mk_none();
    if (cJSON_IsBool(j)) return mk_bool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        /* JSON has one number type; a whole one is an int to the template, as json.loads
         * gives Python (a literal with a fraction or exponent stays a float only in
         * Python, which cJSON cannot tell apart: 2.0 becomes 2) */
        if (d == floor(d) && fabs(d) < 9007199254740992.0) return mk_int((int64_t)d);
        return mk_float(d);
    }
    if (cJSON_IsString(j)) return arena_str(r, j->valuestring);
    if (cJSON_IsArray(j)) {
        jv l = mk_list(r);
        const cJSON *e;
        cJSON_ArrayForEach(e, j) list_push(r, l.u.l, from_json(r, e, depth + 1));
        return l;
    }
    if (cJSON_IsObject(j)) {
        jv d = mk_dict(r, JV_DICT);
        const cJSON *e;
        cJSON_ArrayForEach(e, j) dict_set(r, d.u.d, arena_str(r, e->string), from_json(r, e, depth + 1));
        return d;
    }
    fail(r, KILN_ERR_INVALID_ARG, "chat template kwargs: a value of no JSON type");
}

static void bind_kwargs(R *r, frame *g, const char *json) {
    r->kwargs = cJSON_Parse(json);
    if (!cJSON_IsObject(r->kwargs))
        fail(r, KILN_ERR_INVALID_ARG, "chat template kwargs: not a JSON object: %.60s%s", json,
             strlen(json) > 60 ? "..." : "");
    const cJSON *e;
    cJSON_ArrayForEach(e, r->kwargs) {
        if (!strcmp(e->string, "messages") || !strcmp(e->string, "add_generation_prompt"))
            fail(r, KILN_ERR_INVALID_ARG, "chat template kwargs: '%s' is set by kiln itself",
                 e->string);
        bind(r, g, arena_str(r, e->string), from_json(r, e, 0));
    }
    cJSON_Delete(r->kwargs);
    r->kwargs = NULL;
}

static void free_arena(R *r) {
    while (r->arena) {
        blk *n = r->arena->next;
        kn_free(r->arena);
        r->arena = n;
    }
}

kiln_status kn_jinja_render(const char *tmpl, const kn_jinja_vars *vars, char **out, kiln_error *err) {
    *out = NULL;
    if (!tmpl) return kn_fail(err, KILN_ERR_INVALID_ARG, "no chat template");
    R *r = kn_calloc(1, sizeof(R));
    if (!r) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    if (setjmp(r->jb)) {
        kiln_status code = r->code;
        kn_fail(err, code, "%s", r->msg);
        cJSON_Delete(r->kwargs);
        kn_buf_free(&r->out);
        free_arena(r);
        kn_free(r);
        return code;
    }
    /* jinja2 reads the source with universal newlines and drops one trailing newline */
    size_t n = strlen(tmpl);
    if (n > MAX_SOURCE)
        fail(r, KILN_ERR_FORMAT, "chat template: %zu bytes, more than the %zu KiB kiln reads", n,
             MAX_SOURCE >> 10);
    char *src = amalloc(r, n + 1);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (tmpl[i] == '\r') {
            src[m++] = '\n';
            if (i + 1 < n && tmpl[i + 1] == '\n') i++;
        } else src[m++] = tmpl[i];
    }
    if (m && src[m - 1] == '\n') m--;
    src[m] = 0;
    r->src = src;
    lex(r);
    r->pos = 0;
    node *body = parse_body(r, NULL, NULL);

    frame *g = acalloc(r, 1, sizeof(frame));
    jv msgs = mk_list(r);
    for (size_t i = 0; i < vars->n; i++) {
        if (!vars->msgs[i].role || !vars->msgs[i].content)
            fail(r, KILN_ERR_INVALID_ARG, "chat message %zu has no role or content", i);
        jv d = mk_dict(r, JV_DICT);
        dict_set(r, d.u.d, mk_cstr("role"), mk_cstr(vars->msgs[i].role));
        dict_set(r, d.u.d, mk_cstr("content"), mk_cstr(vars->msgs[i].content));
        list_push(r, msgs.u.l, d);
    }
    bind(r, g, mk_cstr("messages"), msgs);
    bind(r, g, mk_cstr("add_generation_prompt"), mk_bool(vars->add_generation_prompt));
    bind(r, g, mk_cstr("tools"), mk_none());
    bind(r, g, mk_cstr("documents"), mk_none());
    if (vars->bos_token) bind(r, g, mk_cstr("bos_token"), mk_cstr(vars->bos_token));
    if (vars->eos_token) bind(r, g, mk_cstr("eos_token"), mk_cstr(vars->eos_token));
    if (vars->kwargs_json) bind_kwargs(r, g, vars->kwargs_json);
    frame *top = acalloc(r, 1, sizeof(frame));
    top->up = g;
    r->globals = g;
    r->depth = 0;
    exec_list(r, top, body, false);

    if (!r->out.data) {
        r->out.data = kn_malloc(1);
        if (!r->out.data) fail(r, KILN_ERR_NOMEM, "out of memory");
        r->out.data[0] = 0;
    }
    char *res = r->out.data;
    r->out.data = NULL;
    free_arena(r);
    kn_free(r);
    *out = res;
    return KILN_OK;
}
