/* chat.c — kiln_chat: a conversation above a session. Each turn renders every message with the
 * chat template and generates with prefix reuse, so the session's cache keeps the conversation
 * and a turn prefills only what differs from it: the new message, plus any tail the template
 * re-tokenized differently from the ids that were generated. */
#include <string.h>

#include "runtime/runtime.h"

struct kiln_chat {
    kiln_session *s;
    kn_chat_msg *msgs;
    char **owned;             /* message texts we copied */
    int n_msgs, cap_msgs;
};

kiln_status kiln_chat_new(kiln_session *session, kiln_chat **out, kiln_error *err) {
    kn_error_clear(err);
    *out = kn_calloc(1, sizeof **out);
    if (!*out) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    (*out)->s = session;
    return KILN_OK;
}

static void clear_msgs(kiln_chat *c) {
    for (int i = 0; i < c->n_msgs; i++) kn_free(c->owned[i]);
    c->n_msgs = 0;
}

void kiln_chat_free(kiln_chat *c) {
    if (!c) return;
    clear_msgs(c);
    kn_free(c->msgs);
    kn_free(c->owned);
    kn_free(c);
}

void kiln_chat_reset(kiln_chat *c) {
    clear_msgs(c);
    kiln_session_reset(c->s);
}

static kiln_status add_msg(kiln_chat *c, const char *role, const char *text, size_t len,
                           kiln_error *err) {
    if (c->n_msgs == c->cap_msgs) {
        int cap = c->cap_msgs ? c->cap_msgs * 2 : 8;
        kn_chat_msg *m = kn_realloc(c->msgs, (size_t)cap * sizeof *m);
        if (!m) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        c->msgs = m;
        char **o = kn_realloc(c->owned, (size_t)cap * sizeof *o);
        if (!o) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
        c->owned = o;
        c->cap_msgs = cap;
    }
    char *copy = kn_strndup(text, len);
    if (!copy) return kn_fail(err, KILN_ERR_NOMEM, "out of memory");
    c->owned[c->n_msgs] = copy;
    c->msgs[c->n_msgs].role = role;
    c->msgs[c->n_msgs].content = copy;
    c->n_msgs++;
    return KILN_OK;
}

static void drop_last(kiln_chat *c, int keep) {
    while (c->n_msgs > keep) kn_free(c->owned[--c->n_msgs]);
}

kiln_status kiln_chat_turn(kiln_chat *c, const char *user_text,
                           const kiln_generate_params *params, kiln_result *out,
                           kiln_error *err) {
    kn_error_clear(err);
    memset(out, 0, sizeof *out);
    kiln_generate_params dp = kiln_generate_default_params();
    const kiln_generate_params *p = params ? params : &dp;
    if (!user_text || !*user_text) return kn_fail(err, KILN_ERR_INVALID_ARG, "empty message");
    kiln_status s = kn_check_text_size("the message", user_text, err);
    if (!s && p->system) s = kn_check_text_size("the system message", p->system, err);
    if (s) return s;
    const int before = c->n_msgs;
    if (c->n_msgs == 0 && p->system && *p->system)
        s = add_msg(c, "system", p->system, strlen(p->system), err);
    if (!s) s = add_msg(c, "user", user_text, strlen(user_text), err);
    kn_tokens ids = {0};
    const kiln_model *km = c->s->model;
    if (!s)
        s = kn_chat_tokens(km->tok, p->chat_template, p->chat_template_kwargs, c->msgs,
                           (size_t)c->n_msgs, &ids, err);
    const int W = km->contract.window;
    if (!s && (int)ids.n >= W && c->s->p.overflow == KILN_OVERFLOW_STOP)
        s = kn_fail(err, KILN_ERR_INVALID_ARG,
                    "the conversation is %zu tokens and the window holds %d: /reset to start "
                    "over, or chat with --overflow slide", ids.n, W);
    if (!s) {
        kiln_generate_params gp = *p;
        gp.reuse_prefix = 1;
        s = kiln_generate_ids(c->s, ids.ids, (int)ids.n, &gp, out, err);
    }
    kn_tokens_free(&ids);
    if (!s) s = add_msg(c, "assistant", out->text, out->text_len, err);
    if (s) {
        /* a turn that failed leaves the conversation as it was */
        drop_last(c, before);
        kiln_result_free(out);
    }
    return s;
}
