/* ov_api.c — finds libopenvino_c and resolves the C API kiln uses (see ov_api.h). */
#include <dlfcn.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/openvino/ov_api.h"

/* The wheel's folder, asked of python3 without importing the package: find_spec only locates
 * it, where `import openvino` would load the whole runtime (a second or so) just to print a
 * path. No python3 or no wheel: an empty result, and the search goes on. */
static bool wheel_lib(char *out, size_t n) {
    FILE *f = popen("python3 -c \"import importlib.util as u, os; s = u.find_spec('openvino'); "
                    "print(os.path.dirname(s.origin) if s and s.origin else '')\" 2>/dev/null",
                    "r");
    if (!f) return false;
    char dir[1024] = {0};
    bool got = fgets(dir, sizeof dir, f) != NULL;
    pclose(f);
    if (!got) return false;
    dir[strcspn(dir, "\r\n")] = 0;
    if (!dir[0]) return false;
    char pattern[1100];
    snprintf(pattern, sizeof pattern, "%s/libs/libopenvino_c.so*", dir);
    glob_t g;
    bool found = false;
    if (glob(pattern, 0, NULL, &g) == 0 && g.gl_pathc > 0) {
        /* sorted: the plain name, if the wheel has one, before the versioned ones */
        snprintf(out, n, "%s", g.gl_pathv[0]);
        found = true;
    }
    globfree(&g);
    return found;
}

typedef struct sym {
    const char *name;
    void *dest;          /* address of a function-pointer field */
    bool optional;
} sym;

/* POSIX guarantees dlsym's object pointer converts to a function pointer; copying the bytes
 * says so without the cast ISO C frowns on. */
static bool resolve(void *lib, const sym *t, int n, const char **missing) {
    for (int i = 0; i < n; i++) {
        void *p = dlsym(lib, t[i].name);
        if (!p && !t[i].optional) {
            *missing = t[i].name;
            return false;
        }
        memcpy(t[i].dest, &p, sizeof p);
    }
    return true;
}

static kiln_status try_open(const char *path, kn_ov_api *api, char *why, size_t n) {
    /* RTLD_LOCAL: OpenVINO's symbols stay out of the global namespace, so its bundled TBB and
     * friends cannot shadow anything the host process links. */
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *e = dlerror();
        snprintf(why, n, "%s", e ? e : path);
        return KILN_ERR_DEVICE;
    }
    const sym t[] = {
        {"ov_core_create", &api->core_create, false},
        {"ov_core_free", &api->core_free, false},
        {"ov_core_get_available_devices", &api->core_get_available_devices, false},
        {"ov_available_devices_free", &api->available_devices_free, false},
        {"ov_core_compile_model_from_file", &api->core_compile_model_from_file, false},
        {"ov_compiled_model_free", &api->compiled_model_free, false},
        {"ov_compiled_model_input_by_name", &api->compiled_model_input_by_name, false},
        {"ov_compiled_model_output_by_name", &api->compiled_model_output_by_name, false},
        {"ov_compiled_model_create_infer_request", &api->compiled_model_create_infer_request,
         false},
        {"ov_const_port_get_shape", &api->const_port_get_shape, false},
        {"ov_port_get_element_type", &api->port_get_element_type, false},
        {"ov_output_const_port_free", &api->output_const_port_free, false},
        {"ov_infer_request_set_tensor", &api->infer_request_set_tensor, false},
        {"ov_infer_request_infer", &api->infer_request_infer, false},
        {"ov_infer_request_free", &api->infer_request_free, false},
        {"ov_tensor_create_from_host_ptr", &api->tensor_create_from_host_ptr, false},
        {"ov_tensor_free", &api->tensor_free, false},
        {"ov_shape_free", &api->shape_free, false},
        {"ov_get_error_info", &api->get_error_info, false},
        {"ov_get_last_err_msg", &api->get_last_err_msg, true},
        {"ov_free", &api->free_str, true},
        {"ov_get_openvino_version", &api->get_openvino_version, true},
        {"ov_version_free", &api->version_free, true},
    };
    const char *missing = NULL;
    if (!resolve(lib, t, (int)(sizeof t / sizeof t[0]), &missing)) {
        snprintf(why, n, "%s lacks %s (OpenVINO too old?)", path, missing);
        dlclose(lib);
        return KILN_ERR_DEVICE;
    }
    if (!api->free_str) api->get_last_err_msg = NULL; /* cannot release its result */
    /* Never dlclose a loaded runtime: OpenVINO keeps worker threads (TBB) and plugin libraries
     * alive past the last handle, and unloading the code under them crashes at exit. The
     * loader's reference count makes a second dlopen of the same file cheap. */
    api->lib = lib;
    snprintf(api->path, sizeof api->path, "%s", path);
    return KILN_OK;
}

kiln_status kn_ov_load(const char *explicit_path, kn_ov_api *api, kiln_error *err) {
    memset(api, 0, sizeof *api);
    char why[600] = "";
    const char *env = getenv("KILN_OPENVINO_LIB");
    if (explicit_path && *explicit_path) {
        if (try_open(explicit_path, api, why, sizeof why) == KILN_OK) return KILN_OK;
        return kn_fail(err, KILN_ERR_DEVICE, "OpenVINO not loadable (--openvino-lib): %s", why);
    }
    if (env && *env) {
        if (try_open(env, api, why, sizeof why) == KILN_OK) return KILN_OK;
        return kn_fail(err, KILN_ERR_DEVICE, "OpenVINO not loadable (KILN_OPENVINO_LIB): %s",
                       why);
    }
    char wheel[1100];
    if (wheel_lib(wheel, sizeof wheel) && try_open(wheel, api, why, sizeof why) == KILN_OK)
        return KILN_OK;
    char why_sys[600] = "";
    if (try_open("libopenvino_c.so", api, why_sys, sizeof why_sys) == KILN_OK) return KILN_OK;
    return kn_fail(err, KILN_ERR_DEVICE,
                   "OpenVINO not found (no --openvino-lib, no KILN_OPENVINO_LIB, %s, %s)",
                   why[0] ? why : "no openvino wheel for python3", why_sys);
}

const char *kn_ov_error(const kn_ov_api *api, ov_status st, char *buf, size_t n) {
    const char *name = api->get_error_info ? api->get_error_info(st) : NULL;
    const char *msg = api->get_last_err_msg ? api->get_last_err_msg() : NULL;
    if (msg && *msg) {
        /* OpenVINO's exception texts span lines (check location, then the reason): keep them
         * on one line for a one-line kiln error */
        size_t j = 0;
        bool space = false;
        for (const char *c = msg; *c && j + 1 < n; c++) {
            bool ws = *c == '\n' || *c == '\r' || *c == '\t' || *c == ' ';
            if (ws) {
                space = j > 0;
                continue;
            }
            if (space && j + 2 < n) buf[j++] = ' ';
            space = false;
            buf[j++] = *c;
        }
        buf[j] = 0;
    } else {
        snprintf(buf, n, "%s (status %d)", name ? name : "error", st);
    }
    if (msg) api->free_str(msg);
    return buf;
}

kiln_status kn_ov_devices_str(const kn_ov_api *api, const ov_core *core, char *buf, size_t n,
                              kiln_error *err) {
    ov_devices d = {0};
    ov_status st = api->core_get_available_devices(core, &d);
    if (st) {
        char e[400];
        return kn_fail(err, KILN_ERR_DEVICE, "OpenVINO cannot list devices: %s",
                       kn_ov_error(api, st, e, sizeof e));
    }
    size_t len = 0;
    buf[0] = 0;
    for (size_t i = 0; i < d.size && len + 1 < n; i++) {
        int w = snprintf(buf + len, n - len, "%s%s", i ? " " : "", d.devices[i]);
        if (w < 0) break;
        len += (size_t)w < n - len ? (size_t)w : n - len - 1;
    }
    if (!d.size) snprintf(buf, n, "none");
    api->available_devices_free(&d);
    return KILN_OK;
}
