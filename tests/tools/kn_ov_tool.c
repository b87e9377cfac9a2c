/* kn_ov_tool — drives the OpenVINO IR writer for tests/py/test_openvino_ir.py.
 *
 *   kn_ov_tool write OFFERING [GROUP]
 *       writes openvino_model.xml/.bin (prefill graph), openvino_decode.xml/.bin (decode
 *       graph) and openvino_stateless.xml/.bin (stateless graph) into the offering; GROUP is
 *       the Q4_0 group size (0 = the offering's, -1 = channel-wise).
 *   kn_ov_tool native OFFERING N_GEN ID...
 *       the native CPU engine as the oracle: feeds the prompt ids, prints the logits of the last
 *       prompt token on a line "LOGITS v0 v1 ..." and N_GEN greedy ids on a line "IDS ...".
 *   kn_ov_tool teacher OFFERING OUT N_PROMPT ID...
 *       teacher forcing: the first N_PROMPT ids are the prompt (prefilled in chunks), the rest a
 *       continuation fed one decode step at a time whatever the engine would have chosen; writes
 *       to OUT the float32 logits [n_cont][V] that predict each continuation id. The kernel
 *       table is the engine's choice, so KILN_KERNELS selects it.
 * The native sessions keep an f16 KV cache unless KN_OV_TOOL_KV=f32. KN_OV_TOOL_DEVICE names
 * another device for teacher and native (openvino:CPU: the offering's IR through kiln's
 * OpenVINO backend, which fills the graphs' masks from its slot table).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bake/openvino/ir.h"
#include "base/base.h"
#include "kiln.h"

static int fail(const kiln_error *err) {
    fprintf(stderr, "kn_ov_tool: %s\n", err->message);
    return 1;
}

static int cmd_write(const char *dir, int group) {
    kiln_error err = {0};
    char *path = kn_path_join(dir, "model.gguf");
    kn_gguf *g = NULL;
    kn_hparams hp;
    kn_contract c;
    kiln_status s = path ? kn_gguf_open(path, &g, &err) : KILN_ERR_NOMEM;
    kn_free(path);
    if (s == KILN_OK) s = kn_hparams_from_gguf(g, &hp, &err);
    if (s == KILN_OK) s = kn_contract_from_gguf(g, &hp, &c, &err);
    static const char *names[3][3] = {
        {"prefill", "openvino_model.xml", "openvino_model.bin"},
        {"decode", "openvino_decode.xml", "openvino_decode.bin"},
        {"stateless", "openvino_stateless.xml", "openvino_stateless.bin"}};
    for (int i = 0; i < 3 && s == KILN_OK; i++) {
        char *xml = kn_path_join(dir, names[i][1]), *bin = kn_path_join(dir, names[i][2]);
        s = xml && bin ? kn_ov_write_ir_graph(g, &hp, &c, names[i][0], group, xml, bin, &err)
                       : KILN_ERR_NOMEM;
        kn_free(xml);
        kn_free(bin);
    }
    kn_gguf_close(g);
    return s == KILN_OK ? 0 : fail(&err);
}

/* A native CPU session on the offering, through the public API (kiln.h). */
static kiln_status open_native(const char *dir, kiln_model **m, kiln_session **ss,
                               kiln_error *err) {
    kiln_session_params sp = kiln_session_default_params();
    const char *dev = getenv("KN_OV_TOOL_DEVICE");
    sp.device = dev && *dev ? dev : "cpu";
    /* KN_OV_TOOL_KV=f32: an f32 KV cache (the f16 default rounds K and V); q8_0: Q8_0 rows */
    const char *kv = getenv("KN_OV_TOOL_KV");
    if (kv && strcmp(kv, "f32") == 0) sp.kv = KILN_KV_F32;
    if (kv && strcmp(kv, "q8_0") == 0) sp.kv = KILN_KV_Q8_0;
    kiln_status s = kiln_model_open(dir, NULL, m, err);
    if (s == KILN_OK) s = kiln_session_new(*m, &sp, ss, err);
    return s;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int cmd_native(const char *dir, int n_gen, int n, char **argv) {
    kiln_error err = {0};
    int32_t ids[512];
    if (n < 1 || n > 512) {
        fprintf(stderr, "kn_ov_tool: 1..512 prompt ids\n");
        return 2;
    }
    for (int i = 0; i < n; i++) ids[i] = (int32_t)atoi(argv[i]);
    kiln_model *m = NULL;
    kiln_session *ss = NULL;
    const float *logits = NULL;
    kiln_status s = open_native(dir, &m, &ss, &err);
    if (s == KILN_OK) s = kiln_session_feed(ss, ids, n, 0, &logits, &err);
    if (s == KILN_OK) {
        int V = kiln_model_n_vocab(m);
        printf("LOGITS");
        for (int i = 0; i < V; i++) printf(" %.9g", logits[i]);
        printf("\nIDS");
        for (int i = 0; i < n_gen && s == KILN_OK; i++) {
            int32_t next = argmax(logits, V);
            printf(" %d", (int)next);
            s = kiln_session_feed(ss, &next, 1, n + i, &logits, &err);
        }
        printf("\n");
    }
    kiln_session_free(ss);
    kiln_model_free(m);
    return s == KILN_OK ? 0 : fail(&err);
}

static int cmd_teacher(const char *dir, const char *out, int n_prompt, int n, char **argv) {
    kiln_error err = {0};
    int32_t ids[1024];
    if (n_prompt < 1 || n <= n_prompt || n > 1024) {
        fprintf(stderr, "kn_ov_tool: teacher wants 1 <= N_PROMPT < number of ids <= 1024\n");
        return 2;
    }
    for (int i = 0; i < n; i++) ids[i] = (int32_t)atoi(argv[i]);
    kiln_model *m = NULL;
    kiln_session *ss = NULL;
    const float *logits = NULL;
    FILE *f = NULL;
    kiln_status s = open_native(dir, &m, &ss, &err);
    if (s == KILN_OK && !(f = fopen(out, "wb")))
        s = kn_fail(&err, KILN_ERR_IO, "%s: cannot write", out);
    if (s == KILN_OK) s = kiln_session_feed(ss, ids, n_prompt, 0, &logits, &err);
    size_t V = s == KILN_OK ? (size_t)kiln_model_n_vocab(m) : 0;
    for (int i = n_prompt; s == KILN_OK; i++) {
        if (fwrite(logits, sizeof(float), V, f) != V)
            s = kn_fail(&err, KILN_ERR_IO, "%s: write failed", out);
        if (i + 1 >= n) break;
        if (s == KILN_OK) s = kiln_session_feed(ss, &ids[i], 1, i, &logits, &err);
    }
    if (f && fclose(f) != 0 && s == KILN_OK) s = kn_fail(&err, KILN_ERR_IO, "%s: write failed", out);
    kiln_session_free(ss);
    kiln_model_free(m);
    return s == KILN_OK ? 0 : fail(&err);
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "write") == 0)
        return cmd_write(argv[2], argc >= 4 ? atoi(argv[3]) : 0);
    if (argc >= 5 && strcmp(argv[1], "native") == 0)
        return cmd_native(argv[2], atoi(argv[3]), argc - 4, argv + 4);
    if (argc >= 6 && strcmp(argv[1], "teacher") == 0)
        return cmd_teacher(argv[2], argv[3], atoi(argv[4]), argc - 5, argv + 5);
    fprintf(stderr, "usage: kn_ov_tool write OFFERING [GROUP] | native OFFERING N_GEN ID... | "
                    "teacher OFFERING OUT N_PROMPT ID...\n");
    return 2;
}
