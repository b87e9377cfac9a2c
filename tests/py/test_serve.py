"""`kiln serve` through the official `openai` Python client (pinned in tests/requirements.txt):
chat and completions, streamed and not, models, usage (cached_tokens on a resent history),
stop strings, seeds, and every error status with OpenAI's error object.

The server runs SmolLM2-135M-Instruct (scripts/fetch_models.sh) baked with a 256-token window
on a loopback port the kernel picks. What it answers is checked against `kiln run --json` on
the same offering and prompt: the server must give exactly what the engine gives (greedy), so
a wrong template, a lost parameter or a cut stream shows."""
import http.client
import json

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, run_kiln, smollm2_hf_tokenizer
from serve_util import Server

KEY = "kiln-test-key"
WINDOW = 256


@pytest.fixture(scope="session")
def offering(smollm_gguf, tmp_path_factory):
    off = tmp_path_factory.mktemp("serve") / "smollm2"
    r = run_kiln("bake", smollm_gguf, "-o", off, "--quiet", "--window", WINDOW, "--chunk", 32)
    assert r.returncode == 0, r.stderr
    return off


@pytest.fixture(scope="module")
def server(offering):
    s = Server(offering, "--parallel", 2, "--api-key", KEY, "--max-body", 65536)
    try:
        yield s
    finally:
        s.kill()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def kiln_run(offering, prompt, *args):
    r = run_kiln("run", offering, "--prompt", prompt, "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def chat(client, content, **kw):
    return client.chat.completions.create(model="smollm2",
                                          messages=[{"role": "user", "content": content}], **kw)


# ---- answers ----

def test_models(client, server):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["smollm2"]                     # the offering folder's name
    assert client.models.retrieve("smollm2").id == "smollm2"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("gpt-4")
    assert e.value.body["code"] == "model_not_found"


def test_chat_equals_kiln_run(client, offering):
    """Greedy chat through the server == `kiln run` (the model's own chat template)."""
    ref = kiln_run(offering, "List the planets.", "--max-tokens", 24)
    r = chat(client, "List the planets.", max_tokens=24, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.model == "smollm2"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == ref["text"]
    assert r.choices[0].finish_reason == ref["finish_reason"]
    assert r.usage.prompt_tokens == ref["n_prompt"]
    assert r.usage.completion_tokens == ref["n_generated"]
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_stream_equals_non_stream(client):
    kw = dict(max_tokens=32, temperature=0)
    whole = chat(client, "Name three colours.", **kw)
    chunks = list(chat(client, "Name three colours.", stream=True,
                       stream_options={"include_usage": True}, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == \
        whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_wire_format(server):
    """SSE as OpenAI sends it: `data: {...}` events, ending with `data: [DONE]`."""
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [l for l in r.iter_lines() if l]
    assert all(l.startswith("data: ") for l in events)
    assert events[-1] == "data: [DONE]"
    for l in events[:-1]:
        json.loads(l[6:])


def test_completions_equal_kiln_run_raw(client, offering):
    prompt = "The capital of France is"
    ref = kiln_run(offering, prompt, "--raw", "--max-tokens", 16)
    r = client.completions.create(model="smollm2", prompt=prompt, max_tokens=16, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].text == ref["text"]
    assert r.usage.prompt_tokens == ref["n_prompt"]
    chunks = list(client.completions.create(model="smollm2", prompt=prompt, max_tokens=16,
                                            temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == ref["text"]
    # the same prompt as token ids
    r2 = client.completions.create(model="smollm2", prompt=ref["prompt_tokens"], max_tokens=16,
                                   temperature=0)
    assert r2.choices[0].text == ref["text"]


def test_resent_history_is_cached(client):
    """A conversation resent with one more turn keeps its cached prefix (on the slot that holds
    it, with another conversation in the other slot meanwhile); cached_tokens says so."""
    a = [{"role": "system", "content": "You are a geography teacher."},
         {"role": "user", "content": "What is the largest ocean?"}]
    b = [{"role": "system", "content": "You answer in one word, always."},
         {"role": "user", "content": "Name a fruit."}]
    ra = client.chat.completions.create(model="smollm2", messages=a, max_tokens=24, temperature=0)
    rb = client.chat.completions.create(model="smollm2", messages=b, max_tokens=8, temperature=0)
    a2 = a + [{"role": "assistant", "content": ra.choices[0].message.content},
              {"role": "user", "content": "And the smallest?"}]
    b2 = b + [{"role": "assistant", "content": rb.choices[0].message.content},
              {"role": "user", "content": "Another one."}]
    ra2 = client.chat.completions.create(model="smollm2", messages=a2, max_tokens=8, temperature=0)
    rb2 = client.chat.completions.create(model="smollm2", messages=b2, max_tokens=8, temperature=0)
    for first, second in ((ra, ra2), (rb, rb2)):
        cached = second.usage.prompt_tokens_details.cached_tokens
        assert cached >= first.usage.prompt_tokens, (cached, first.usage)
        assert cached < second.usage.prompt_tokens


def test_stop_strings(client):
    base = chat(client, "Write a sentence about the sea.", max_tokens=40, temperature=0)
    text = base.choices[0].message.content
    assert len(text) > 20, text
    k = next(i for i in range(8, len(text) - 4) if text.find(text[i:i + 4]) == i)
    stop = text[k:k + 4]
    r = chat(client, "Write a sentence about the sea.", max_tokens=40, temperature=0,
             stop=["@@never@@", stop])
    assert r.choices[0].message.content == text[:k]
    assert r.choices[0].finish_reason == "stop"
    chunks = list(chat(client, "Write a sentence about the sea.", max_tokens=40, temperature=0,
                       stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text[:k]


def test_seed_reproducible(client):
    kw = dict(max_tokens=24, temperature=1.0, top_p=1.0, extra_body={"top_k": 0, "min_p": 0})
    a = chat(client, "Tell me a story.", seed=1234, **kw).choices[0].message.content
    b = chat(client, "Tell me a story.", seed=1234, **kw).choices[0].message.content
    assert a == b
    others = {chat(client, "Tell me a story.", seed=s, **kw).choices[0].message.content
              for s in (1, 2, 3)}
    assert len(others | {a}) > 1                  # the seed matters


def test_max_completion_tokens_and_length(client):
    r = client.chat.completions.create(model="smollm2", max_completion_tokens=3, temperature=0,
                                       messages=[{"role": "user", "content": "Count to 100."}])
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"


# ---- errors: status and OpenAI's error object ----

def error_body(r):
    e = r.json()["error"]
    assert set(e) >= {"message", "type", "code"} and e["message"]
    return e


def post(server, path, body, key=KEY, **kw):
    h = {"Authorization": f"Bearer {key}"} if key else {}
    if isinstance(body, (dict, list)):
        return httpx.post(server.url + path, json=body, headers=h, timeout=60, **kw)
    return httpx.post(server.url + path, content=body, headers=h, timeout=60, **kw)


@pytest.mark.parametrize("body,param", [
    (b"{not json", None),
    (b'{"messages": [{"role": "user", "content": "hi"}]} trailing', None),
    (b"[1, 2]", None),
    ({"model": "smollm2"}, "messages"),
    ({"messages": "hello"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 2.5}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": [1]}, "stop"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "x"}], "seed": "x"}, "seed"),
    ({"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": "x"},
     "chat_template_kwargs"),
])
def test_400_bad_requests(server, body, param):
    r = post(server, "/v1/chat/completions", body)
    assert r.status_code == 400, r.text
    e = error_body(r)
    assert e["type"] == "invalid_request_error"
    assert e["param"] == param


def test_unknown_fields_are_ignored(client):
    r = chat(client, "Hi", max_tokens=2, extra_body={"kiln_no_such_field": {"x": 1}, "user": "u"})
    assert r.usage.completion_tokens >= 1


def test_400_prompt_longer_than_the_window(client):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, "word " * 400, max_tokens=4)
    assert e.value.body["code"] == "context_length_exceeded"
    assert f"window holds {WINDOW}" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="smollm2", prompt=[1] * (WINDOW + 1), max_tokens=2)


def test_400_through_the_client(client):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, "hi", temperature=5)
    assert e.value.status_code == 400 and e.value.body["param"] == "temperature"


def test_401_without_the_key(server, client):
    for key in (None, "wrong-key", KEY + "x", KEY[:-1]):
        r = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]},
                 key=key)
        assert r.status_code == 401
        assert error_body(r)["code"] == "invalid_api_key"
        assert r.headers["www-authenticate"] == "Bearer"
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    # health and metrics stay open to probes and scrapers
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/metrics").status_code == 200


def test_404_unknown_model_and_route(server, client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4", max_tokens=2,
                                       messages=[{"role": "user", "content": "x"}])
    assert e.value.body["code"] == "model_not_found" and "gpt-4" in e.value.body["message"]
    r = post(server, "/v1/embeddings", {"input": "x"})
    assert r.status_code == 404 and error_body(r)["code"] == "not_found"
    r = httpx.get(server.url + "/nowhere")
    assert r.status_code == 404 and error_body(r)


def test_405_wrong_method(server):
    r = httpx.get(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 405 and r.headers["allow"] == "POST" and error_body(r)


def test_413_body_too_large(server):
    big = {"messages": [{"role": "user", "content": "x" * 100_000}]}
    r = post(server, "/v1/chat/completions", big)
    assert r.status_code == 413
    assert "65536" in error_body(r)["message"]
    # a chunked body (no Content-Length) is cut off at the limit too
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    payload = json.dumps(big).encode()
    conn.request("POST", "/v1/chat/completions", body=iter([payload[i:i + 8192] for i in
                                                            range(0, len(payload), 8192)]),
                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
                 encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413
    assert json.loads(resp.read())["error"]["code"] == "request_too_large"
    conn.close()
    # and the server still answers
    assert httpx.get(server.url + "/health").status_code == 200


def test_health_and_metrics_format(server, client):
    h = httpx.get(server.url + "/health").json()
    assert h["status"] == "ok" and h["slots"] == 2
    chat(client, "Hi", max_tokens=4)
    text = server.metrics()
    fams = {f.name: f for f in text_string_to_metric_families(text)}   # Prometheus' own parser
    for name, kind in [("kiln_requests", "counter"), ("kiln_prompt_tokens", "counter"),
                       ("kiln_generation_tokens", "counter"),
                       ("kiln_prompt_tokens_cached", "counter"),
                       ("kiln_time_to_first_token_seconds", "histogram"),
                       ("kiln_time_per_output_token_seconds", "histogram"),
                       ("kiln_num_requests_waiting", "gauge"), ("kiln_num_requests_running", "gauge"),
                       ("kiln_kv_cache_usage_perc", "gauge"), ("kiln_slots_busy", "gauge"),
                       ("kiln_device_info", "gauge"), ("kiln_device_fallbacks", "counter"),
                       ("kiln_worker_restarts", "counter")]:
        assert fams[name].type == kind, name
    ok = [s for s in fams["kiln_requests"].samples
          if s.labels == {"endpoint": "chat", "status": "200"} and s.name.endswith("_total")]
    assert ok and ok[0].value >= 1
    ttft = fams["kiln_time_to_first_token_seconds"].samples
    assert [s for s in ttft if s.name.endswith("_count")][0].value >= 1
    dev = fams["kiln_device_info"].samples[0].labels
    assert dev["device"] == "cpu" and dev["mode"] == "kv"


def test_chat_template_kwargs(offering, smollm_gguf, tmp_path):
    """chat_template_kwargs in a request, over the server's --chat-template-kwargs (llama-server's
    and vLLM's field): with Qwen3's template (a tokenizer folder beside SmolLM2's weights) the
    prompt the server counts is HF `tokenizers` on what jinja2 renders with the merged
    arguments; a kwarg the template may not take is a 400."""
    from test_chat_templates import hf_render
    template = (ROOT / "tests/data/chat_templates/qwen3.jinja").read_text(encoding="utf-8")
    tok = smollm2_hf_tokenizer(smollm_gguf, tmp_path / "tok", template)
    msgs = [{"role": "user", "content": "Name a colour."}]
    s = Server(offering, "--tokenizer_id", tmp_path / "tok",
               "--chat-template-kwargs", '{"enable_thinking": false, "unused": 1}')
    try:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0, timeout=120)
        for extra, think in ((None, False), ({"enable_thinking": True}, True),
                             ({"other": [1, {"a": None}]}, False)):
            kw = {"extra_body": {"chat_template_kwargs": extra}} if extra else {}
            r = c.chat.completions.create(model="smollm2", messages=msgs, max_tokens=1,
                                          temperature=0, **kw)
            text = hf_render(template, msgs, True, "", "<|im_end|>",
                             {"enable_thinking": think, "unused": 1, **(extra or {})})
            assert text.endswith("</think>\n\n") != think
            assert r.usage.prompt_tokens == len(tok.encode(text, add_special_tokens=False).ids)
        bad = httpx.post(s.url + "/v1/chat/completions", timeout=60,
                         json={"messages": msgs, "chat_template_kwargs": {"messages": []}})
        assert bad.status_code == 400, bad.text
        assert "messages" in error_body(bad)["message"]
    finally:
        s.kill()
