/* kn_quant_tool — runs kiln's reference quantizers on raw files, for tests/py/test_quant_oracle.py.
 *
 *   kn_quant_tool dequant TYPE IN.bin OUT.f32   raw blocks of TYPE -> little-endian float32
 *   kn_quant_tool quant   TYPE IN.f32 OUT.bin   little-endian float32 -> raw blocks of TYPE
 *
 * TYPE is GGUF's name ("Q4_0"). Bad input: one line on stderr, exit 2. Assumes a little-endian
 * host, as kiln does throughout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"

static int die(const char *msg, const char *arg) {
    fprintf(stderr, "kn_quant_tool: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    return 2;
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        unsigned char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    if (buf && ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = n;
    return buf;
}

static int write_all(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    if (fclose(f) != 0 || w != len) return -1;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5 || (strcmp(argv[1], "dequant") != 0 && strcmp(argv[1], "quant") != 0))
        return die("usage: kn_quant_tool dequant|quant TYPE IN OUT", NULL);
    int quant = strcmp(argv[1], "quant") == 0;
    int type = kn_type_from_name(argv[2]);
    const kn_type_traits *t = type < 0 ? NULL : kn_type_get((uint32_t)type);
    if (!t) return die("unknown type", argv[2]);

    size_t len = 0;
    unsigned char *in = read_all(argv[3], &len);
    if (!in) return die("cannot read", argv[3]);

    int rc = 0;
    void *out = NULL;
    size_t out_len = 0;
    if (quant) {
        /* Probe with one zero block: kn_quantize's 0 also means "nothing written" for n == 0. */
        static float zero[256];
        static unsigned char probe[512];
        if (t->block > 256 || t->block_bytes > 512 ||
            kn_quantize((uint32_t)type, zero, probe, t->block) == 0) {
            rc = die("no quantizer for", argv[2]);
            goto done;
        }
        if (len % sizeof(float) != 0) {
            rc = die("input is not a whole number of float32", argv[3]);
            goto done;
        }
        int64_t n = (int64_t)(len / sizeof(float));
        uint64_t bytes;
        if (!kn_row_bytes((uint32_t)type, n, &bytes)) {
            rc = die("input is not a whole number of blocks", argv[3]);
            goto done;
        }
        out = malloc(bytes ? bytes : 1);
        float *x = malloc(len ? len : 1);
        if (!out || !x) {
            free(x);
            rc = die("out of memory", NULL);
            goto done;
        }
        memcpy(x, in, len); /* the float32 view needs alignment the byte buffer may lack */
        out_len = kn_quantize((uint32_t)type, x, out, n);
        free(x);
        if (out_len != bytes) {
            rc = die("quantize failed for", argv[2]);
            goto done;
        }
    } else {
        if (!t->can_dequantize) {
            rc = die("no dequantizer for", argv[2]);
            goto done;
        }
        if (len % t->block_bytes != 0) {
            rc = die("input is not a whole number of blocks", argv[3]);
            goto done;
        }
        int64_t n = (int64_t)(len / t->block_bytes * t->block);
        out_len = (size_t)n * sizeof(float);
        out = malloc(out_len ? out_len : 1);
        if (!out) {
            rc = die("out of memory", NULL);
            goto done;
        }
        if (!kn_dequantize((uint32_t)type, in, out, n)) {
            rc = die("dequantize failed for", argv[2]);
            goto done;
        }
    }
    if (write_all(argv[4], out, out_len) != 0) rc = die("cannot write", argv[4]);
done:
    free(out);
    free(in);
    return rc;
}
