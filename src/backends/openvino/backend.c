/* backend.c — placeholder until the OpenVINO runtime backend lands: reports the device as
 * unavailable so `auto` falls back and an explicit OpenVINO device exits with status 3. */
#include "backends/backend.h"

kiln_status kn_backend_openvino_new(const kn_model *m, const kn_backend_params *p,
                                    kn_backend **out, kiln_error *err) {
    (void)m;
    *out = NULL;
    return kn_fail(err, KILN_ERR_DEVICE, "%s: the OpenVINO backend is not in this build "
                   "(available: cpu)", p->ov_device ? p->ov_device : "openvino");
}

kiln_status kn_openvino_devices(const char *ov_lib, char **out, kiln_error *err) {
    (void)ov_lib;
    *out = NULL;
    return kn_fail(err, KILN_ERR_DEVICE, "the OpenVINO backend is not in this build");
}
