/* test_jinja.c — kiln's Jinja-subset chat template interpreter (src/template/jinja.c): hand
 * cases for the semantics chat templates lean on, and for failing cleanly on bad templates.
 * The byte-for-byte comparison against Python jinja2 is tests/py/test_chat_templates.py. */
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "kt.h"
#include "template/jinja.h"
#include "tokenizer/tokenizer.h"

static const kn_chat_msg k_msgs[] = {
    {"system", "Be brief."}, {"user", "Hi"}, {"assistant", " Hello! "}, {"user", "Bye"}};

/* Renders tmpl over k_msgs[0..n); returns the status, the output in *out (kn_free it). */
static kiln_status render(const char *tmpl, size_t n, bool gen, char **out, kiln_error *err) {
    kn_jinja_vars v = {k_msgs, n, gen, "<s>", "</s>", NULL};
    kn_error_clear(err);
    return kn_jinja_render(tmpl, &v, out, err);
}

static bool renders(const char *tmpl, const char *want) {
    char *out = NULL;
    kiln_error err;
    kiln_status st = render(tmpl, 4, true, &out, &err);
    bool ok = st == KILN_OK && out && !strcmp(out, want);
    if (!ok)
        fprintf(stderr, "    template %s\n    status %d (%s), got [%s], want [%s]\n", tmpl, (int)st,
                err.message, out ? out : "(null)", want);
    kn_free(out);
    return ok;
}

static bool fails(const char *tmpl, kiln_status code, const char *needle) {
    char *out = NULL;
    kiln_error err;
    kiln_status st = render(tmpl, 4, true, &out, &err);
    bool ok = st == code && out == NULL && (!needle || strstr(err.message, needle));
    if (!ok)
        fprintf(stderr, "    template %s\n    status %d (%s), want %d with '%s'\n", tmpl, (int)st,
                err.message, (int)code, needle ? needle : "");
    kn_free(out);
    return ok;
}

TEST(jinja_basics) {
    CHECK(renders("plain text", "plain text"));
    CHECK(renders("", ""));
    CHECK(renders("{{ 'a\\nb' }}{{ \"q'\" }}{{ 1 + 2 * 3 }}{{ true }}{{ none }}", "a\nbq'7TrueNone"));
    CHECK(renders("{{ bos_token }}{{ eos_token }}{{ add_generation_prompt }}", "<s></s>True"));
    CHECK(renders("{{ messages[0]['role'] }}|{{ messages[1].content }}|{{ messages[-1].role }}|"
                  "{{ messages | length }}|{{ messages[1:] | length }}",
                  "system|Hi|user|4|3"));
    CHECK(renders("{{ 'a' ~ 1 ~ none }}{{ 'x' if false else 'y' }}{{ 'n' if false }}{{ 7 // 2 }}"
                  "{{ -7 % 3 }}{{ 4 / 2 }}",
                  "a1Noney322.0"));
    CHECK(renders("{# comment #}{{ tools is none }}{{ documents is defined }}{{ zz is defined }}",
                  "TrueTrueFalse"));
}

TEST(jinja_loops_and_scope) {
    CHECK(renders("{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}"
                  "{{ loop.last }}{{ loop.length }},{% endfor %}",
                  "10TrueFalse4,21FalseFalse4,32FalseFalse4,43FalseTrue4,"));
    /* a set inside a loop does not leak, not even to the next iteration ... */
    CHECK(renders("{% set x = 0 %}{% for i in [1,2] %}[{{ x }}{% set x = x + 1 %}{{ x }}]"
                  "{% endfor %}{{ x }}",
                  "[01][01]0"));
    /* ... unless it goes through a namespace */
    CHECK(renders("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
                  "{% endfor %}{{ ns.n }}",
                  "4"));
    CHECK(renders("{% if true %}{% set y = 5 %}{% endif %}{{ y }}", "5"));
    CHECK(renders("{% for m in messages if m.role == 'user' %}{{ loop.index }}{{ m.content }}"
                  "{% endfor %}{% for x in [] %}x{% else %}empty{% endfor %}",
                  "1Hi2Byeempty"));
    CHECK(renders("{% for i in range(10) %}{% if i == 3 %}{% break %}{% endif %}"
                  "{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}",
                  "02"));
}

TEST(jinja_whitespace) {
    /* trim_blocks and lstrip_blocks, as transformers configures jinja2 */
    CHECK(renders("a\n  {% if true %}\n  b\n  {% endif %}\nc", "a\n  b\nc"));
    CHECK(renders("a  {%- if true -%}  b  {%- endif -%}  c", "abc"));
    CHECK(renders("x {{- ' y ' -}} z", "x y z"));
    CHECK(renders("a {% if true %}b{% endif %}\n", "a b"));   /* one trailing newline dropped */
    CHECK(renders("a\n  {%+ if true %}b{% endif +%}\n", "a\n  b"));
    CHECK(renders("  {# c #}\nx", "x"));
}

TEST(jinja_strings_and_filters) {
    CHECK(renders("{{ '  a  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ 'a b  c'.split() }}|"
                  "{{ 'a,b'.split(',') }}|{{ 'user'.title() }}|{{ 'Ab'.upper() }}{{ 'Ab'.lower() }}|"
                  "{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith('x') }}",
                  "a|a|['a', 'b', 'c']|['a', 'b']|User|ABab|TrueFalse"));
    CHECK(renders("{{ ' t ' | trim }}|{{ [1,2] | first }}{{ [1,2] | last }}|{{ zz | default('d') }}|"
                  "{{ 'a-b' | replace('-', '+') }}|{{ 'é' | length }}|{{ 'ÿé' | upper }}",
                  "t|12|d|a+b|1|ŸÉ"));
    CHECK(renders("{{ messages[0] | tojson }}|{{ 'é\"\\n' | tojson }}",
                  "{\"role\": \"system\", \"content\": \"Be brief.\"}|\"é\\\"\\n\""));
    CHECK(renders("{{ 'héllo'[1:] }}{{ 'héllo'[::-1] }}{{ [1,2,3][-1] }}", "élloolléh3"));
    CHECK(renders("{{ 'a' in 'cat' }}{{ 'z' not in 'cat' }}{{ 1 < 2 < 3 }}{{ 1 == 1.0 }}",
                  "TrueTrueTrueTrue"));
}

TEST(jinja_errors) {
    CHECK(fails("{{ raise_exception('Roles must alternate') }}", KILN_ERR_INVALID_ARG,
                "Roles must alternate"));
    CHECK(fails("{% if true %}open", KILN_ERR_FORMAT, "endif"));
    CHECK(fails("{{ 'unterminated }}", KILN_ERR_FORMAT, "unterminated string"));
    CHECK(fails("{% endfor %}", KILN_ERR_FORMAT, "unexpected 'endfor'"));
    CHECK(fails("{{ something else }}", KILN_ERR_FORMAT, "'else'"));
    CHECK(fails("{{ 1 + }}", KILN_ERR_FORMAT, "expected an expression"));
    CHECK(fails("{# never closed", KILN_ERR_FORMAT, "comment"));
    CHECK(fails("{{ x.y }}", KILN_ERR_INVALID_ARG, "'x' is undefined"));
    CHECK(fails("{{ 'a' + 1 }}", KILN_ERR_INVALID_ARG, "unsupported operand"));
    CHECK(fails("{% macro m() %}{% endmacro %}", KILN_ERR_UNSUPPORTED, "macro"));
    CHECK(fails("{{ 'x' | wordwrap }}", KILN_ERR_UNSUPPORTED, "wordwrap"));
    CHECK(fails("{{ 'x'.zfill(3) }}", KILN_ERR_UNSUPPORTED, "zfill"));
    /* limits: loops, sizes, nesting */
    CHECK(fails("{% for i in range(2000) %}{% for j in range(2000) %}{% endfor %}{% endfor %}",
                KILN_ERR_INVALID_ARG, "iterations"));
    CHECK(fails("{{ 'x' * 1000000000000 }}", KILN_ERR_INVALID_ARG, "too large"));
    char deep[2100];
    memset(deep, '(', 1000);
    strcpy(deep + 1000, "1");
    memset(deep + 1001, ')', 1000);
    deep[2001] = 0;
    char tmpl[2200];
    snprintf(tmpl, sizeof tmpl, "{{ %s }}", deep);
    CHECK(fails(tmpl, KILN_ERR_FORMAT, "nesting"));
}

/* Every prefix of a real template must render or fail with a message; never crash. */
TEST(jinja_truncated_templates) {
    static const char t[] =
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
        "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
        "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation "
        "roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and "
        "system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + "
        "message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
        "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
        "{% endif %}{% endfor %}";
    char buf[sizeof t];
    for (size_t n = 0; n < sizeof t; n++) {
        memcpy(buf, t, n);
        buf[n] = 0;
        char *out = NULL;
        kiln_error err;
        kiln_status st = render(buf, 4, true, &out, &err);
        CHECK(st == KILN_OK ? out != NULL : (out == NULL && err.message[0] != 0));
        kn_free(out);
    }
    char *out = NULL;
    kiln_error err;
    CHECK(render(t, 4, true, &out, &err) == KILN_OK);
    CHECK(!strcmp(out, "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST]"));
    kn_free(out);
}

/* An allocation failing anywhere gives KILN_ERR_NOMEM, with nothing leaked (ASan checks). */
TEST(jinja_alloc_failures) {
    static const char t[] = "{% set ns = namespace(s='') %}{% for m in messages %}"
                            "{% set ns.s = ns.s ~ m.role | upper %}{{ m.content | trim }}{% endfor %}{{ ns.s }}";
    for (uint64_t k = 1; k < 400; k++) {
        char *out = NULL;
        kiln_error err;
        kn_alloc_fail_after(k);
        kiln_status st = render(t, 4, true, &out, &err);
        kn_alloc_fail_after(0);
        CHECK(st == KILN_OK || st == KILN_ERR_NOMEM);
        if (st == KILN_OK) CHECK(!strcmp(out, "Be brief.HiHello!ByeSYSTEMUSERASSISTANTUSER"));
        kn_free(out);
    }
}

/* kn_chat_render_template: the interpreter first; a built-in format only for Jinja beyond it. */
TEST(jinja_chat_render_template) {
    char *out = NULL;
    kiln_error err;
    CHECK(kn_chat_render_template("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
                                  "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>"
                                  "assistant\n{% endif %}",
                                  "", "", NULL, k_msgs + 1, 1, true, &out, &err) == KILN_OK);
    CHECK(!strcmp(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
    kn_free(out);
    /* a macro is beyond the subset; the ChatML markers select the built-in format */
    CHECK(kn_chat_render_template("{% macro x() %}{% endmacro %}<|im_start|>", "", "", NULL, k_msgs + 1, 1,
                                  true, &out, &err) == KILN_OK);
    CHECK(!strcmp(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
    kn_free(out);
    CHECK(kn_chat_render_template("{% macro x() %}{% endmacro %}", "", "", NULL, k_msgs, 1, true, &out,
                                  &err) == KILN_ERR_UNSUPPORTED);
    CHECK(strstr(err.message, "macro") != NULL);
    CHECK(kn_chat_render_template("{{ raise_exception('nope') }}<|im_start|>", "", "", NULL, k_msgs, 1,
                                  true, &out, &err) == KILN_ERR_INVALID_ARG);
    CHECK(!strcmp(err.message, "nope"));
}
