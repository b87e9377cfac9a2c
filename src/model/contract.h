/* contract.h — the static contract of an offering.
 *
 * Every graph a backend may be asked to run, each input and output with a dtype and a fixed
 * shape. Nothing in a contract is dynamic: kn_contract_validate refuses a zero or negative
 * dimension, and bake refuses to write a contract that does not validate.
 *
 * In model.gguf the contract is stored under kiln.* keys (docs/FORMAT.md):
 *   kiln.format_version u32, kiln.contract.window u32 (W), kiln.contract.chunk u32 (C),
 *   kiln.contract.batch u32 (1), kiln.contract.sink u32 (S), kiln.contract.kv_dtype string,
 *   kiln.contract.graphs string (the graphs as JSON, exactly as in manifest.json),
 *   kiln.quant string, kiln.provenance string (JSON), kiln.version string. */
#ifndef KN_CONTRACT_H
#define KN_CONTRACT_H

#include "model/hparams.h"

#define KN_MAX_GRAPHS 4
#define KN_MAX_IO 8
#define KN_MAX_RANK 5
#define KN_FORMAT_VERSION 1

typedef struct kn_io {
    const char *name;         /* static string */
    const char *dtype;        /* "i32", "f32", "f16" */
    int rank;
    int64_t shape[KN_MAX_RANK];
} kn_io;

typedef struct kn_graph {
    const char *name;         /* "prefill", "decode", "stateless" */
    int n_in, n_out;
    kn_io in[KN_MAX_IO];
    kn_io out[KN_MAX_IO];
} kn_graph;

typedef struct kn_contract {
    int window;               /* W */
    int chunk;                /* C */
    int batch;                /* always 1 */
    int sink;                 /* S, for --overflow slide */
    const char *kv_dtype;     /* "f32" */
    int n_graphs;
    kn_graph graphs[KN_MAX_GRAPHS];
} kn_contract;

/* Builds the contract of a model for window W, chunk C and sink S; validates it. */
kiln_status kn_contract_build(const kn_hparams *hp, int window, int chunk, int sink,
                              kn_contract *c, kiln_error *err);
/* Every dimension positive, C <= W, S < W. */
kiln_status kn_contract_validate(const kn_contract *c, kiln_error *err);
/* Reads W, C, S from an offering's kiln.* keys and rebuilds the contract. */
kiln_status kn_contract_from_gguf(const kn_gguf *g, const kn_hparams *hp, kn_contract *c,
                                  kiln_error *err);
void kn_contract_to_gguf(const kn_contract *c, kn_gguf_writer *w);

/* The KV slot a token at position pos (>= 0) occupies: slot pos while pos < W; past that the
 * first S "sink" slots stay and slots [S, W) form a ring, slot S + (pos - S) mod (W - S) — the
 * --overflow slide policy. Keys keep the rotation of their original position, so relative
 * distances stay true and positions simply keep growing. Every device follows this rule. */
int kn_contract_slot(int window, int sink, int64_t pos);
/* The graphs as a JSON array of {name, inputs:[{name,dtype,shape}], outputs:[...]}. */
void kn_contract_graphs_json(const kn_contract *c, kn_buf *b);

#endif
