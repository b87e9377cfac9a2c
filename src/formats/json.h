/* json.h — numbers from JSON files, range-checked. Every number kiln reads from config.json,
 * generation_config.json, tokenizer.json, tokenizer_config.json, safetensors headers and
 * manifest.json goes through these, so none is ever cast out of range (undefined behaviour in
 * C: 1e300 to int or float) and a bad one is a one-line error naming the file and the key. */
#ifndef KN_JSON_H
#define KN_JSON_H

#include <cjson/cJSON.h>

#include "base/base.h"

/* v is a number that is a whole integer in [lo, hi]. */
bool kn_json_i64(const cJSON *v, int64_t lo, int64_t hi, int64_t *out);

/* o[key] as an integer in [lo, hi]: absent or null gives dflt; anything else is
 * KILN_ERR_FORMAT "LABEL: KEY VALUE is not an integer in [LO, HI]". */
kiln_status kn_json_get_int(const cJSON *o, const char *key, int64_t lo, int64_t hi,
                            int64_t dflt, int64_t *out, const char *label, kiln_error *err);
/* The same for an int-sized field. */
kiln_status kn_json_get_i32(const cJSON *o, const char *key, int lo, int hi, int dflt, int *out,
                            const char *label, kiln_error *err);
/* o[key] as a finite number that fits a float: absent or null gives dflt. */
kiln_status kn_json_get_f32(const cJSON *o, const char *key, float dflt, float *out,
                            const char *label, kiln_error *err);

#endif
