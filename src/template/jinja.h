/* jinja.h — kiln's Jinja-subset interpreter for chat templates (tokenizer.chat_template).
 *
 * It renders the way Hugging Face's apply_chat_template does: jinja2's
 * ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the loopcontrols
 * extension, a raise_exception() global and transformers' own tojson filter (ensure_ascii off).
 * The variables are messages (role/content dicts), add_generation_prompt, bos_token, eos_token,
 * and tools/documents set to None, as transformers passes them, plus the members of an optional
 * JSON object (apply_chat_template's extra keyword arguments, e.g. Qwen3's enable_thinking:
 * llama-server's and vLLM's chat_template_kwargs).
 *
 * Work is bounded whatever the template: the source is lexed in linear time and is at most
 * KN_MAX_TEMPLATE_BYTES (1 MiB); a rendering may produce KN_MAX_TEMPLATE_OUTPUT bytes, run
 * KN_MAX_TEMPLATE_LOOPS loop iterations and KN_MAX_TEMPLATE_STEPS units of work (a statement, an
 * evaluation, an item visited, 32 bytes scanned; substring searches are linear), and use 256 MiB
 * of arena (base/limits.h).
 *
 * Errors: KILN_ERR_FORMAT for a template that does not parse; KILN_ERR_UNSUPPORTED for valid
 * Jinja that kiln does not implement (the caller may then fall back to a built-in format);
 * KILN_ERR_INVALID_ARG for raise_exception() (its message) and for render-time errors (a type
 * error, an undefined value used, a limit exceeded); KILN_ERR_NOMEM. */
#ifndef KN_JINJA_H
#define KN_JINJA_H

#include <stdbool.h>
#include <stddef.h>

#include "base/base.h"

/* One message of a conversation (the chat templates' `messages`). */
typedef struct kn_chat_msg {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
} kn_chat_msg;

typedef struct kn_jinja_vars {
    const kn_chat_msg *msgs;
    size_t n;
    bool add_generation_prompt;
    const char *bos_token; /* NULL: undefined */
    const char *eos_token;
    /* NULL, or a JSON object whose members become variables (a string, number, bool, null,
     * list or dict each); it may not rebind messages or add_generation_prompt. A malformed one
     * is KILN_ERR_INVALID_ARG. */
    const char *kwargs_json;
} kn_jinja_vars;

/* Renders tmpl; *out is NUL-terminated, freed with kn_free (NULL on failure). */
kiln_status kn_jinja_render(const char *tmpl, const kn_jinja_vars *vars, char **out,
                            kiln_error *err);

#endif
