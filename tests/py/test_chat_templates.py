"""kiln's Jinja-subset chat template interpreter against Python jinja2, rendered the way
transformers' apply_chat_template does (ImmutableSandboxedEnvironment with trim_blocks and
lstrip_blocks, loopcontrols, raise_exception, transformers' tojson, tools/documents None).
Real templates live in tests/data/chat_templates/ (sources in its README.md); SmolLM2's comes
from the model GGUF. Output must be byte-identical; a raise_exception must fail in kiln too,
with the same message."""
import json
import subprocess
from pathlib import Path

import pytest

import jinja2  # noqa: E402  (pinned in tests/requirements.txt; its absence is a failure)
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

from conftest import BUILD, ROOT, SANITIZED

TEMPLATES = ROOT / "tests" / "data" / "chat_templates"
KILN_ERR_INVALID_ARG = 1

# bos/eos texts as each model's tokenizer_config.json names them
TOKENS = {
    "gemma": ("<bos>", "<eos>"),
    "gemma3": ("<bos>", "<eos>"),
    "llama3": ("<|begin_of_text|>", "<|end_of_text|>"),
    "qwen2": ("", "<|im_end|>"),
    "qwen3": ("", "<|im_end|>"),
    "chatml": ("<s>", "<|im_end|>"),
    "command-r": ("<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>"),
    "deepseek-coder": ("<｜begin▁of▁sentence｜>", "<|EOT|>"),
}

SYS = {"role": "system", "content": "You are a helpful assistant"}
CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello"}],
    "system_user": [SYS, {"role": "user", "content": "Hello"}],
    "multi": [SYS, {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"},
              {"role": "user", "content": "Who are you"},
              {"role": "assistant", "content": "   I am an assistant   "},
              {"role": "user", "content": "Another question"}],
    "multi_nosys": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"},
                    {"role": "user", "content": " Who are you\n"}],
    "unicode": [{"role": "user", "content": "héllo — 日本語 🎉\n\ttabs\u3000"},
                {"role": "assistant", "content": "ünïcödé ✓ straße"},
                {"role": "user", "content": "ΣΑΣ ǆ {{ not a tag }} {% if %} 'q' \"dq\" \\ end"}],
    # an earlier answer that kept its reasoning (Qwen3's template strips it from history)
    "thinking": [{"role": "user", "content": "2+2?"},
                 {"role": "assistant", "content": "<think>\nadd them\n</think>\n\nIt is 4."},
                 {"role": "user", "content": "and 3+3?"}],
    "bad_order": [{"role": "assistant", "content": "first"}, {"role": "user", "content": "second"}],
}


def hf_render(source, messages, add_generation_prompt, bos, eos, kwargs=None):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source).render(messages=messages, tools=None, documents=None,
                                          add_generation_prompt=add_generation_prompt,
                                          # transformers: {**special_tokens_map, **kwargs}
                                          **{"bos_token": bos, "eos_token": eos, **(kwargs or {})})


def tool() -> Path:
    p = BUILD / "kn_chat_tool"
    if not p.exists():
        pytest.fail(f"{p} not built")
    return p


def kiln_render(tmp_path, source, messages, gen, bos, eos, kwargs=None):
    t = tmp_path / "t.jinja"
    t.write_bytes(source.encode())
    c = tmp_path / "c.json"
    conv = {"messages": messages, "add_generation_prompt": gen, "bos_token": bos, "eos_token": eos}
    if kwargs is not None:  # JSON text as the CLI takes it (a str is passed as it is)
        conv["kwargs"] = kwargs if isinstance(kwargs, str) else json.dumps(kwargs)
    c.write_text(json.dumps(conv))
    return subprocess.run([str(tool()), "template", str(t), str(c)], capture_output=True, timeout=60)


def check(tmp_path, source, messages, gen, bos="<s>", eos="</s>", kwargs=None):
    try:
        want, want_err = hf_render(source, messages, gen, bos, eos, kwargs), None
    except Exception as e:  # noqa: BLE001 - any jinja2 failure must be a kiln failure too
        want, want_err = None, e
    r = kiln_render(tmp_path, source, messages, gen, bos, eos, kwargs)
    if want_err is not None:
        assert r.returncode == 1, f"jinja2 raised {want_err!r}; kiln printed {r.stdout!r}"
        err = r.stderr.decode()
        if isinstance(want_err, jinja2.exceptions.TemplateSyntaxError):
            assert err.startswith("kn_chat_tool: 3 "), err  # KILN_ERR_FORMAT
        elif type(want_err) is jinja2.exceptions.TemplateError:  # raise_exception
            assert err.strip() == f"kn_chat_tool: {KILN_ERR_INVALID_ARG} {want_err}", err
        return
    assert r.returncode == 0, f"kiln failed: {r.stderr.decode()}"
    assert r.stdout.decode() == want


@pytest.mark.parametrize("gen", [True, False])
@pytest.mark.parametrize("conv", sorted(CONVERSATIONS))
@pytest.mark.parametrize("name", sorted(p.stem for p in TEMPLATES.glob("*.jinja")))
def test_model_templates(tmp_path, name, conv, gen):
    source = (TEMPLATES / f"{name}.jinja").read_text()
    bos, eos = TOKENS.get(name, ("<s>", "</s>"))
    check(tmp_path, source, CONVERSATIONS[conv], gen, bos, eos)


def smollm_template(path):
    from gguf import GGUFReader
    r = GGUFReader(str(path))
    f = r.fields["tokenizer.chat_template"]
    return bytes(f.parts[-1]).decode("utf-8"), r


# each case loads SmolLM2's tokenizer (seconds under ASan): two there, all in make test
@pytest.mark.parametrize("gen", [True] if SANITIZED else [True, False])
@pytest.mark.parametrize("conv", ["multi", "unicode"] if SANITIZED else sorted(CONVERSATIONS))
def test_smollm2_template(tmp_path, smollm_gguf, conv, gen):
    source, reader = smollm_template(smollm_gguf)
    toks = reader.fields["tokenizer.ggml.tokens"]

    def tok(key):
        i = int(reader.fields[key].parts[-1][0])
        return bytes(toks.parts[toks.data[i]]).decode()

    bos, eos = tok("tokenizer.ggml.bos_token_id"), tok("tokenizer.ggml.eos_token_id")
    messages = CONVERSATIONS[conv]
    check(tmp_path, source, messages, gen, bos, eos)
    # and through the model itself: kn_chat_render with no name renders its template
    c = tmp_path / "m.json"
    c.write_text(json.dumps({"messages": messages, "add_generation_prompt": gen}))
    r = subprocess.run([str(tool()), "model", str(smollm_gguf), str(c)], capture_output=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode() == hf_render(source, messages, gen, bos, eos)


# Small templates, each aimed at one corner of jinja2's semantics.
FEATURES = [
    "{% set x = 0 %}{% for i in [1,2] %}[{{ x }}{% set x = x + 1 %}{{ x }}]{% endfor %}{{ x }}",
    "{% for i in [1,2] %}{% if i == 2 %}{{ y }}{% endif %}{% set y = i %}{% endfor %}|{{ y }}",
    "{% set ns = namespace(a=1, s='') %}{% for m in messages %}{% set ns.a = ns.a + loop.index %}"
    "{% set ns.s = ns.s ~ m.role[0] %}{% endfor %}{{ ns.a }} {{ ns.s }}",
    "{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}"
    "{{ loop.length }}{{ loop.revindex }}|{% endfor %}",
    "{{ [1, 'a', none, true, 2.5] }}{{ {'k': 'v', 'n': none} }}{{ none }}{{ 7 // 2 }}{{ -7 % 3 }}"
    "{{ 4 / 2 }}{{ 1 / 3 }}{{ 2 ** 10 }}{{ 'ab' * 3 }}{{ 1e20 }}{{ 0.1 + 0.2 }}{{ -1.5e-7 }}",
    "{{ 'héllo'[1:] }}|{{ 'héllo'[-1] }}|{{ 'héllo'[::-1] }}|{{ [1,2,3,4][1:3] }}|{{ [1,2,3][-1] }}"
    "|{{ messages[1:] | length }}|{{ 'abc'[5] }}|{{ [1,2,3][::2] }}|{{ 'héllo' | length }}",
    "{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ ' a '.lstrip() }}|{{ ' a '.rstrip() }}|"
    "{{ 'a  b\tc'.split() }}|{{ 'a,b,,c'.split(',') }}|{{ 'a b c'.split(' ', 1) }}|"
    "{{ 'hello wORLD it\\'s'.title() }}|{{ 'Ab'.upper() }}{{ 'Ab'.lower() }}|"
    "{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith('bc') }}{{ 'abc'.startswith(('x', 'a')) }}|"
    "{{ 'aXbX'.replace('X', '-') }}|{{ 'ßtraße'.upper() }}|{{ 'hELLO'.capitalize() }}",
    "{{ '  t  ' | trim }}|{{ 'Ab' | upper }}{{ 'Ab' | lower }}|{{ [3,4] | first }}{{ [3,4] | last }}|"
    "{{ 'abc' | first }}|{{ undefined_thing | default('d') }}|{{ '' | default('e', true) }}|"
    "{{ 'a-b' | replace('-', '+') }}|{{ [1,2] | length }}|{{ ['a','b'] | join(', ') }}|"
    "{{ messages | map(attribute='role') | join(',') }}|{{ 42 | string }}|{{ '7' | int + 1 }}",
    "{{ messages[0] | tojson }}|{{ 'é\"\\n\\t\\\\' | tojson }}|{{ [1, none, true, 'x'] | tojson }}|"
    "{{ {'a': [1, {'b': 2}]} | tojson(indent=2) }}|{{ {} | tojson }}{{ [] | tojson }}",
    "{{ x is defined }}{{ messages is defined }}{{ none is none }}{{ 'a' is string }}{{ 1 is string }}"
    "{{ tools is none }}{{ documents is defined }}{{ 3 is odd }}{{ 4 is even }}{{ 1 is number }}"
    "{{ messages is mapping }}{{ messages[0] is mapping }}{{ x is not defined }}{{ 6 is divisibleby 3 }}",
    "{{ 'a' in 'cat' }}{{ 'z' not in 'cat' }}{{ 2 in [1,2] }}{{ 'role' in messages[0] }}"
    "{{ 1 < 2 < 3 }}{{ 1 == 1.0 }}{{ 'a' ~ 1 ~ none ~ true }}{{ not true or false and true }}"
    "{{ 'y' if messages else 'n' }}{{ 'y' if not messages }}|{{ (1 + 2) * 3 }}{{ -2 + +3 }}",
    "{{ messages[0]['role'] }} {{ messages[0].content }} {{ messages[-1].role }} "
    "{{ messages[0].missing is defined }}{{ messages[0]['missing'] is none }}",
    "a\n  {% if true %}\n    b\n  {% endif %}\n  c {% if true %} d {% endif %}\n{# note #}\ne\n"
    "   {# indented comment #}\nf {{ 'v' }}  {% if true %}g{% endif %}\n",
    "a  {%- if true -%}  b  {%- endif -%}  c {{- ' d ' -}} e {%+ if true +%} f{% endif %}\n\n",
    "{% for m in messages %}{% if loop.index0 == 1 %}{% continue %}{% endif %}{{ m.role }}"
    "{% if loop.index == 3 %}{% break %}{% endif %},{% endfor %}",
    "{% for m in messages if m.role != 'system' %}{{ loop.index }}{{ m.role }}{% else %}none{% endfor %}"
    "{% for x in [] %}x{% else %}empty{% endfor %}",
    "{% for k, v in messages[0].items() %}{{ k }}={{ v }};{% endfor %}{{ messages[0].get('role') }}"
    "{{ messages[0].get('zz', 'dflt') }}{% for i in range(3) %}{{ i }}{% endfor %}"
    "{% for i in range(1, 7, 2) %}{{ i }}{% endfor %}",
    "{{ 'a' + 1 }}",
    "{{ raise_exception('custom failure: ' ~ messages | length) }}",
    "{% if true %}unterminated",
    "{{ 'a' ",
    "{% endif %}",
    "{{ x.y }}",
    "{{ messages | selectattr('role', 'equalto', 'user') | list | length }}"
    "{{ messages | rejectattr('role', 'equalto', 'user') | map(attribute='content') | join('/') }}",
    "{{ \"it's\" }}{{ 'say \"hi\"' }}{{ '\\x41\\u00e9\\U0001F600\\101' }}{{ 'a' 'b' }}{{ 'x\\qy' }}",
]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jinja2 on the deliberate '\\q'
@pytest.mark.parametrize("i", range(len(FEATURES)))
def test_jinja_features(tmp_path, i):
    check(tmp_path, FEATURES[i], CONVERSATIONS["multi"], True)


def test_builtin_name_still_selects_format(tmp_path, smollm_gguf):
    c = tmp_path / "m.json"
    c.write_text(json.dumps({"messages": CONVERSATIONS["system_user"], "add_generation_prompt": True}))
    r = subprocess.run([str(tool()), "model", str(smollm_gguf), str(c), "zephyr"], capture_output=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().startswith("<|system|>\nYou are a helpful assistant")


# apply_chat_template's extra keyword arguments (kiln's --chat-template-kwargs, the server's
# chat_template_kwargs): Qwen3's switch, and every JSON type as a template variable.
@pytest.mark.parametrize("kwargs", [{}, {"enable_thinking": False}, {"enable_thinking": True},
                                    {"enable_thinking": None}, {"enable_thinking": 0}])
@pytest.mark.parametrize("conv", ["user", "system_user", "thinking"])
def test_qwen3_enable_thinking(tmp_path, conv, kwargs):
    source = (TEMPLATES / "qwen3.jinja").read_text()
    check(tmp_path, source, CONVERSATIONS[conv], True, "", "<|im_end|>", kwargs)
    if kwargs.get("enable_thinking", 1) is False:  # the switch really changes the text
        assert kiln_render(tmp_path, source, CONVERSATIONS[conv], True, "", "<|im_end|>",
                           kwargs).stdout.decode().endswith("<think>\n\n</think>\n\n")


KWARGS_TEMPLATE = ("{{ s }}|{{ i + 1 }}|{{ f * 2 }}|{{ b }}|{{ n is none }}|{{ l[1] }}|{{ l | length }}|"
                   "{{ d.k }}|{{ d['n'][0].x }}|{{ d | tojson }}|{{ l | tojson }}|{{ bos_token }}|"
                   "{{ messages | length }}")


@pytest.mark.parametrize("kwargs", [
    {"s": "héllo \"q\" 日本", "i": 41, "f": 1.25, "b": True, "n": None, "l": [1, "two", None],
     "d": {"k": "v", "n": [{"x": -3}], "z": False}},
    {"s": "", "i": -9007199254740991, "f": -1e-7, "b": False, "n": None, "l": [[], {}],
     "d": {"k": 0, "n": [{"x": 1.5}]}, "bos_token": "<override>"},
])
def test_template_kwargs_types(tmp_path, kwargs):
    check(tmp_path, KWARGS_TEMPLATE, CONVERSATIONS["multi"], True, kwargs=kwargs)


@pytest.mark.parametrize("kwargs, why", [
    ([1, 2], "not a JSON object"), ("x", "not a JSON object"), ('{"a": 1', "not a JSON object"),
    ({"messages": []}, "'messages' is set by kiln itself"),
    ({"add_generation_prompt": False}, "'add_generation_prompt' is set by kiln itself"),
])
def test_template_kwargs_refused(tmp_path, kwargs, why):
    r = kiln_render(tmp_path, "{{ messages | length }}", CONVERSATIONS["user"], True, "", "", kwargs)
    assert r.returncode == 1, r.stdout
    assert r.stderr.decode().startswith(f"kn_chat_tool: {KILN_ERR_INVALID_ARG} ")
    assert why in r.stderr.decode()
