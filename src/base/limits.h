/* limits.h — every cap kiln puts on untrusted input, in one place (README "Limits" lists them).
 * Each is far beyond any real model and turns an absurd file or request into a one-line error
 * before it can cost memory or time. */
#ifndef KN_LIMITS_H
#define KN_LIMITS_H

/* GGUF */
#define KN_MAX_TENSORS 65536            /* tensors in one GGUF or safetensors file */
#define KN_MAX_KV 65536                 /* metadata keys in one GGUF */
#define KN_MAX_NAME_LEN 65535           /* bytes of a metadata key or a tensor name */
/* Hugging Face side files (config.json, tokenizer.json, tokenizer_config.json,
 * generation_config.json, model.safetensors.index.json) and manifest.json */
#define KN_MAX_JSON_BYTES (64u << 20)
#define KN_MAX_SAFETENSORS_HEADER (100u << 20)
/* tokenizers */
#define KN_MAX_VOCAB (1 << 24)          /* tokens in a vocabulary (= the hparams' vocab cap) */
#define KN_MAX_TOKEN_BYTES (1u << 20)   /* bytes of one token's text */
/* chat templates: source size, and the work one rendering may do */
#define KN_MAX_TEMPLATE_BYTES (1u << 20)
#define KN_MAX_TEMPLATE_OUTPUT (16u << 20)
#define KN_MAX_TEMPLATE_STEPS 20000000u /* expression evaluations and statements */
#define KN_MAX_TEMPLATE_LOOPS 1000000u  /* loop iterations */
/* prompts: kiln_generate / kiln_chat_turn text, and one line of `kiln chat` input
 * (KILN_MAX_PROMPT_BYTES in kiln.h, which the CLI sees) */
#define KN_MAX_PROMPT_BYTES KILN_MAX_PROMPT_BYTES

#endif
