/* source.h — one view of a checkpoint, whatever its format.
 *
 * A source is a GGUF file, a Hugging Face model folder (config.json + model.safetensors or a
 * sharded model.safetensors.index.json, tokenizer.json, tokenizer_config.json,
 * generation_config.json), or an "ORG/NAME" id resolved in the local Hugging Face cache. Opening
 * one yields the hyperparameters and every tensor under its GGUF (llama.cpp) name with its type,
 * GGUF-order shape and bytes, so the bake never cares where a tensor came from. */
#ifndef KN_SOURCE_H
#define KN_SOURCE_H

#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "model/hparams.h"

typedef enum kn_source_kind {
    KN_SOURCE_GGUF = 0,
    KN_SOURCE_HF = 1
} kn_source_kind;

typedef struct kn_src_tensor {
    char name[96];            /* GGUF schema name */
    const char *orig_name;    /* name in the source file (points into the source) */
    const char *file;         /* path of the file holding it */
    uint32_t type;            /* kn_type */
    uint32_t n_dims;
    int64_t ne[4];            /* GGUF order: ne[0] is the row length */
    const uint8_t *data;
    uint64_t nbytes;
    /* Hugging Face Llama/Mistral checkpoints rotate halves of each head, GGUF "llama" rotates
     * adjacent pairs: rows of attn_q / attn_k are permuted on read for that many heads (0 =
     * none), exactly as llama.cpp's converter does. */
    int permute_heads;
    bool plus_one;            /* 1 is added to every element on read (Gemma's norms) */
} kn_src_tensor;

typedef struct kn_src_file {
    char *path;
    char sha256[65];
} kn_src_file;

typedef struct kn_source {
    kn_source_kind kind;
    char *path;               /* the GGUF file or the model folder */
    char *label;              /* what the user named (path or ORG/NAME) */
    kn_hparams hp;
    kn_gguf *gguf;            /* GGUF sources */
    kn_safetensors **shards;  /* HF sources */
    int n_shards;
    kn_src_tensor *tensors;
    int n_tensors;
    kn_name_ref *names;       /* [n_tensors] sorted by name once every tensor is in */
    char *name;               /* general.name or the folder name */
    /* HF only: raw JSON text of the side files (NULL when absent). */
    char *config_json, *tokenizer_json, *tokenizer_config_json, *generation_config_json;
    int bos_id, eos_id;       /* from config/generation_config; -1 if unknown */
    kn_src_file *files;       /* every file read, with its hash, for provenance */
    int n_files;
    bool quantized;           /* any matrix tensor already quantized (not F32/F16/BF16) */
    float *synth;             /* HF LongRoPE: the factors of config.json, the data of the
                                 rope_factors_{long,short} tensors the source adds */
} kn_source;

/* Opens a source. Checks structure, names and shapes; data is checked later by the bake. */
kiln_status kn_source_open(const char *what, kn_source **out, kiln_error *err);
void kn_source_close(kn_source *s);
const kn_src_tensor *kn_source_find(const kn_source *s, const char *name);

/* Copies tensor t to dst as raw bytes of its own type, applying the head permutation. dst must
 * hold t->nbytes. */
void kn_src_tensor_read_raw(const kn_src_tensor *t, uint8_t *dst); /* not plus_one ones */
/* Dequantizes rows [row0, row0 + nrows) of t to F32 (permutation applied). false if the type has
 * no dequantizer. */
bool kn_src_tensor_read_f32(const kn_src_tensor *t, int64_t row0, int64_t nrows, float *dst);

/* Resolves ORG/NAME in the local Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub or
 * ~/.cache/huggingface/hub): models--ORG--NAME/snapshots/REV, REV from refs/main if present.
 * On failure the message says where it looked. *dir is heap-allocated. */
kiln_status kn_hf_cache_resolve(const char *id, char **dir, kiln_error *err);

/* Hyperparameters from a Hugging Face config.json text. */
kiln_status kn_hparams_from_hf_config(const char *json, const char *label, kn_hparams *hp,
                                      int *bos_id, int *eos_id, kiln_error *err);

#endif
