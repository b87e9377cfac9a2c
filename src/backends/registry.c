/* registry.c — device names and the auto policy (see registry.h). */
#include "backends/registry.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "backends/driver.h"

static void say(const kn_device_params *p, kiln_log_level level, const char *fmt, const char *a,
                const char *b) {
    if (!p->log) return;
    char msg[900];
    snprintf(msg, sizeof msg, fmt, a, b);
    p->log(level, msg, p->log_user);
}

static void add_fallback(char *fallback, const char *what) {
    size_t n = strlen(fallback);
    snprintf(fallback + n, 64 - n, "%s%s", n ? "," : "", what);
}

/* The first prefill chunk of the same short prompt through both devices. */
static kiln_status first_logits(kn_device *dev, const kn_device_params *p, const int32_t *ids,
                                int n, float *out, kiln_error *err) {
    kn_session_cfg cfg = {p->stateless, KILN_KV_F16};
    kn_backend *b = NULL;
    kn_driver drv = {0};
    const float *lg = NULL;
    kiln_status s = dev->ops->open(dev, &cfg, &b, err);
    if (!s) s = kn_driver_init(&drv, b, p->contract, p->hp->n_vocab, p->stateless, false, err);
    if (!s) s = kn_driver_feed(&drv, ids, n, 0, &lg, err);
    if (!s) memcpy(out, lg, sizeof(float) * (size_t)p->hp->n_vocab);
    kn_driver_free(&drv);
    if (b) b->ops->free(b);
    return s;
}

/* --verify: the same short prompt through the device and the native one. The tolerance allows
 * what int4 weights with 8-bit activations (native) against f32 activations (OpenVINO) differ
 * by — about 1 logit on SmolLM2 — as 10% of the logit range, and requires the same top token
 * unless the native top two are closer than that. Garbled output (wrong weights, a broken
 * compile) is off by the whole range. */
static kiln_status verify(kn_device *dev, const kn_device_params *p, int32_t bos,
                          kiln_error *err) {
    const int V = p->hp->n_vocab;
    int n = p->contract->chunk < 8 ? p->contract->chunk : 8;
    int32_t ids[8];
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)((i == 0 && bos >= 0) ? bos : (1000 + 7 * i) % V);
    float *a = kn_malloc(sizeof(float) * (size_t)V), *b = kn_malloc(sizeof(float) * (size_t)V);
    kn_device *cpu = NULL;
    kiln_status s = a && b ? KILN_OK : kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    if (!s) s = kn_device_cpu_open(p, &cpu, err);
    if (!s) s = first_logits(cpu, p, ids, n, a, err);
    if (!s) s = first_logits(dev, p, ids, n, b, err);
    double e = 0, tol = 0;
    if (!s) {
        int top_a = 0, top_b = 0, second = -1;
        float lo = a[0], hi = a[0];
        for (int i = 0; i < V; i++) {
            if (a[i] < lo) lo = a[i];
            if (a[i] > hi) hi = a[i];
            double d = fabs((double)a[i] - b[i]);
            if (!(d <= e)) e = d; /* NaN counts as divergence */
            if (a[i] > a[top_a]) top_a = i;
            if (b[i] > b[top_b]) top_b = i;
        }
        for (int i = 0; i < V; i++)
            if (i != top_a && (second < 0 || a[i] > a[second])) second = i;
        tol = 0.1 * (hi - lo);
        bool near_tie = second >= 0 && a[top_a] - a[second] < tol;
        if (!(e <= tol) || (top_a != top_b && !near_tie))
            s = kn_fail(err, KILN_ERR_DEVICE, "%s: --verify failed: max |logit difference| %.3g "
                        "against the native cpu (tolerance %.3g), top token %d vs %d",
                        dev->name, e, tol, top_b, top_a);
    }
    if (!s && p->log) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s: --verify ok (max |logit difference| %.3g against the "
                 "native cpu, tolerance %.3g)", dev->name, e, tol);
        p->log(KILN_LOG_INFO, msg, p->log_user);
    }
    if (cpu) cpu->ops->free(cpu);
    kn_free(a);
    kn_free(b);
    return s;
}

/* An accelerator passed --verify, or was not asked to. */
static kiln_status checked(kn_device *dev, const kn_device_params *p, const kn_device_choice *c,
                           kiln_error *err) {
    return c->verify ? verify(dev, p, c->verify_bos, err) : KILN_OK;
}

kiln_status kn_device_choose(const kn_device_params *p, const kn_device_choice *c,
                             kn_device **out, char *fallback, kiln_error *err) {
    *out = NULL;
    fallback[0] = 0;
    const char *dev = c->device && *c->device ? c->device : "auto";
    if (strcmp(dev, "cpu") == 0) return kn_device_cpu_open(p, out, err);
    kn_device_params q = *p;
    const char *ov = NULL;
    if (strcmp(dev, "npu") == 0) ov = "NPU";
    else if (strcmp(dev, "gpu") == 0) ov = "GPU";
    else if (strncmp(dev, "openvino:", 9) == 0 && dev[9]) ov = dev + 9;
    if (ov) {
        q.ov_device = ov;
        kiln_status s = kn_device_openvino_open(&q, out, err);
        if (!s && (s = checked(*out, &q, c, err))) {
            (*out)->ops->free(*out);
            *out = NULL;
        }
        return s;
    }
    if (strcmp(dev, "auto") != 0)
        return kn_fail(err, KILN_ERR_INVALID_ARG,
                       "--device: '%s' is not auto, cpu, npu, gpu or openvino:DEVICE", dev);
    /* An offering without the IR of the graphs this mode uses can only run natively: nothing
     * to try, nothing to say. */
    char *xml = p->offering_dir ? kn_path_join(p->offering_dir, p->stateless
                                                                     ? "openvino_stateless.xml"
                                                                     : "openvino_model.xml")
                                : NULL;
    bool has_ir = xml && kn_is_file(xml);
    kn_free(xml);
    if (!has_ir) return kn_device_cpu_open(p, out, err);
    char *devices = NULL;
    kiln_error e;
    if (kn_openvino_devices(p->ov_lib, &devices, &e) != KILN_OK) {
        if (c->no_fallback)
            return kn_fail(err, KILN_ERR_DEVICE, "%s (--no-fallback)", e.message);
        add_fallback(fallback, "npu");
        add_fallback(fallback, "gpu");
        say(p, KILN_LOG_WARN, "%s; falling back to %s", e.message, "the native cpu");
        return kn_device_cpu_open(p, out, err);
    }
    kn_free(devices);
    static const char *order[2][2] = {{"NPU", "npu"}, {"GPU", "gpu"}};
    for (int i = 0; i < 2; i++) {
        q.ov_device = order[i][0];
        kiln_status s = kn_device_openvino_open(&q, out, &e);
        if (!s && (s = checked(*out, &q, c, &e))) {
            /* a device that runs but computes something else is not one to fall back from
             * silently either: say so, and skip it */
            (*out)->ops->free(*out);
            *out = NULL;
        }
        if (!s) return KILN_OK;
        /* auto falls back on any failure of a device (absent, or its compiler refusing the
         * graph); out of memory is not a device problem */
        if (s == KILN_ERR_NOMEM) return kn_fail(err, s, "%s", e.message);
        if (i == 0 && c->no_fallback)
            return kn_fail(err, KILN_ERR_DEVICE, "%s (--no-fallback)", e.message);
        add_fallback(fallback, order[i][1]);
        say(p, KILN_LOG_WARN, "%s; falling back to %s", e.message,
            i == 0 ? "gpu" : "the native cpu");
    }
    return kn_device_cpu_open(p, out, err);
}
