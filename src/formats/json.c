/* json.c — range-checked JSON numbers (see json.h). */
#include "formats/json.h"

#include <stdio.h>
#include <stdlib.h>

bool kn_json_i64(const cJSON *v, int64_t lo, int64_t hi, int64_t *out) {
    return cJSON_IsNumber(v) && kn_f64_to_i64(v->valuedouble, lo, hi, out);
}

/* The value as written, for messages: numbers in full, other JSON types by name. */
static void describe(const cJSON *v, char *buf, size_t n) {
    if (cJSON_IsNumber(v)) {
        /* the shortest digits that read back: 1e+300, not 1.0000000000000001e+300 */
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(buf, n, "%.*g", prec, v->valuedouble);
            if (strtod(buf, NULL) == v->valuedouble) break;
        }
    }
    else if (cJSON_IsString(v)) snprintf(buf, n, "(a string)");
    else if (cJSON_IsBool(v)) snprintf(buf, n, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else if (cJSON_IsArray(v)) snprintf(buf, n, "(an array)");
    else snprintf(buf, n, "(an object)");
}

kiln_status kn_json_get_int(const cJSON *o, const char *key, int64_t lo, int64_t hi,
                            int64_t dflt, int64_t *out, const char *label, kiln_error *err) {
    const cJSON *v = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    if (!v || cJSON_IsNull(v)) {
        *out = dflt;
        return KILN_OK;
    }
    if (kn_json_i64(v, lo, hi, out)) return KILN_OK;
    char val[64];
    describe(v, val, sizeof val);
    return kn_fail(err, KILN_ERR_FORMAT, "%s: %s %s is not an integer in [%lld, %lld]", label,
                   key, val, (long long)lo, (long long)hi);
}

kiln_status kn_json_get_i32(const cJSON *o, const char *key, int lo, int hi, int dflt, int *out,
                            const char *label, kiln_error *err) {
    int64_t v = dflt;
    kiln_status s = kn_json_get_int(o, key, lo, hi, dflt, &v, label, err);
    if (!s) *out = (int)v;
    return s;
}

kiln_status kn_json_get_f32(const cJSON *o, const char *key, float dflt, float *out,
                            const char *label, kiln_error *err) {
    const cJSON *v = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    if (!v || cJSON_IsNull(v)) {
        *out = dflt;
        return KILN_OK;
    }
    if (cJSON_IsNumber(v) && kn_f64_to_f32(v->valuedouble, out)) return KILN_OK;
    char val[64];
    describe(v, val, sizeof val);
    return kn_fail(err, KILN_ERR_FORMAT, "%s: %s %s is not a number a float can hold", label,
                   key, val);
}
