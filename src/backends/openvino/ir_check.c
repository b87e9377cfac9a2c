/* ir_check.c — is this file an OpenVINO IR whose weights are all there? Checked before an IR
 * is handed to OpenVINO (which otherwise tries its other frontends on a garbled file and
 * prints their noise before failing), by inspect, and by --from-ir. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backends/openvino/ir_check.h"

/* The unsigned decimal value of attribute name="..." inside [p, end), or false. */
static bool attr_u64(const char *p, const char *end, const char *name, uint64_t *out) {
    size_t nl = strlen(name);
    for (const char *q = p; q + nl + 2 < end; q++) {
        if (memcmp(q, name, nl) != 0 || q[nl] != '=' || q[nl + 1] != '"') continue;
        if (q > p && q[-1] != ' ' && q[-1] != '\t' && q[-1] != '\n') continue;
        const char *v = q + nl + 2;
        uint64_t x = 0;
        if (v >= end || *v < '0' || *v > '9') return false;
        for (; v < end && *v >= '0' && *v <= '9'; v++) {
            if (x > (UINT64_MAX - 9) / 10) return false;
            x = x * 10 + (uint64_t)(*v - '0');
        }
        if (v >= end || *v != '"') return false;
        *out = x;
        return true;
    }
    return false;
}

kiln_status kn_ov_ir_check(const char *xml_path, kiln_error *err) {
    char *text = NULL;
    size_t len = 0;
    kiln_status s = kn_read_text(xml_path, KN_OV_IR_MAX, &text, &len, err);
    if (s) return s;
    const char *net = strstr(text, "<net");
    if (!net || !strstr(net, "<layers>") || !strstr(net, "</net>")) {
        kn_free(text);
        return kn_fail(err, KILN_ERR_FORMAT, "%s: not an OpenVINO IR (no complete <net> with "
                       "<layers>)", xml_path);
    }
    /* The weights: every <data ... offset="N" size="M"> must lie inside the .bin. */
    uint64_t need = 0;
    const char *end = text + len;
    const char *d = strstr(net, "<data");
    while (d) {
        const char *close = memchr(d, '>', (size_t)(end - d));
        if (!close) break;
        uint64_t off, size, e;
        if (attr_u64(d, close, "offset", &off) && attr_u64(d, close, "size", &size)) {
            if (!kn_add_ok(off, size, &e)) e = UINT64_MAX;
            if (e > need) need = e;
        }
        d = strstr(close, "<data"); /* on from the end of this element: linear overall */
    }
    kn_free(text);
    if (!need) return KILN_OK;
    size_t xl = strlen(xml_path);
    char *bin = kn_malloc(xl + 5);
    if (!bin) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    memcpy(bin, xml_path, xl + 1);
    if (xl > 4 && strcmp(bin + xl - 4, ".xml") == 0) memcpy(bin + xl - 4, ".bin", 5);
    else memcpy(bin + xl, ".bin", 5);
    struct stat st;
    if (stat(bin, &st) != 0 || !S_ISREG(st.st_mode))
        s = kn_fail(err, KILN_ERR_FORMAT, "%s: missing (the weights of %s)", bin, xml_path);
    else if ((uint64_t)st.st_size < need)
        s = kn_fail(err, KILN_ERR_FORMAT, "%s: truncated: the IR reads %llu bytes of weights, "
                    "the file has %llu", bin, (unsigned long long)need,
                    (unsigned long long)st.st_size);
    kn_free(bin);
    return s;
}
