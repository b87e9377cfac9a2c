/* bake.h — internal pieces of the bake shared with describe. */
#ifndef KN_BAKE_H
#define KN_BAKE_H

#include "model/source.h"
#include "model/contract.h"

/* Tensor classes reported per quantization scheme. */
const char *kn_tensor_class(const char *name);

/* The offering description (manifest.json / kiln inspect) of an opened offering model.gguf.
 * Runs the validation checks (schema, contract, finite weights) and reports their verdict in
 * the description; returns an error only when the file cannot be described at all. */
kiln_status kn_describe_offering(const char *model_path, kiln_describe_format fmt, kn_buf *out,
                                 bool *valid, kiln_error *err);

/* Description of a source that is not an offering: what a default bake would produce, with
 * the checks a bake makes before writing (*valid false when one fails). */
kiln_status kn_describe_source(kn_source *src, kiln_describe_format fmt, kn_buf *out,
                               bool *valid, kiln_error *err);

/* The description of an offering baked --from-ir from its manifest.json text (label names it;
 * ir_xml, if given, is the IR to check): the contract must be integers in range and every input
 * static. *valid reports the checks; KILN_ERR_FORMAT only for text that is not a JSON object. */
kiln_status kn_manifest_describe(const char *text, size_t len, const char *label,
                                 const char *ir_xml, kiln_describe_format fmt, kn_buf *out,
                                 bool *valid, kiln_error *err);

/* Output type of a tensor under a scheme (KN_TYPE_* id); *group gets the int4_sym group. */
uint32_t kn_bake_out_type(const kn_src_tensor *t, kiln_quant quant, int *group);



/* Writes the tokenizer of a Hugging Face source (tokenizer.json, tokenizer_config.json) as GGUF
 * tokenizer.* keys, plus its chat template, after checking it against the model (ids against
 * the embedding rows, padded as llama.cpp's converter pads; config BOS/EOS ids in range).
 * w NULL: the checks only. */
kiln_status kn_bake_hf_tokenizer(const kn_source *src, kn_gguf_writer *w, kiln_error *err);
/* An offering written atomically (staging.c): begin sweeps the staging of killed bakes and
 * makes (and locks) the staging directory tmp beside out_dir, or refuses while another bake
 * writes out_dir; commit swaps it into place in one step, replacing an existing offering;
 * end removes whatever was not committed and drops the lock. */
typedef struct kn_stage {
    const char *out_dir;
    char *tmp;      /* the staging directory, "" once committed */
    char *old;      /* where an existing offering waits when the swap takes two renames */
    char *parent, *base; /* out_dir split */
    int lock_fd;    /* flock on tmp while the bake runs (when locked) */
    bool locked;
    bool exists;    /* out_dir existed at begin */
} kn_stage;

kiln_status kn_stage_begin(kn_stage *st, const char *out_dir, kiln_error *err);
kiln_status kn_stage_commit(kn_stage *st, kiln_error *err);
void kn_stage_end(kn_stage *st);
/* Writes a whole file and syncs it. */
kiln_status kn_write_file(const char *path, const char *data, size_t n, kiln_error *err);

/* `kiln bake --from-ir`: an OpenVINO IR with dynamic inputs locked to window W / chunk C
 * (see from_ir.c for the rules), written as an offering with its manifest. */
kiln_status kn_bake_from_ir(const char *xml, const char *out_dir, const kiln_bake_params *p,
                            kiln_error *err);
#endif
