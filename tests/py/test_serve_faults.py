"""`kiln serve` when things go wrong: the worker killed mid-stream (kill -9), a worker that
hangs (a test-only switch, KILN_SERVE_TEST_HANG=N: the worker stops at its Nth request and
answers no heartbeat) caught by the watchdog, /health while the model loads (the test-only
KILN_SERVE_TEST_LOAD_DELAY), a full queue (429 with Retry-After), a client that goes away
(its slot is freed), SIGTERM (requests in flight finish, then exit 0), and the command's own
errors. No assertion is about speed: waits are generous deadlines on a shared 2-core machine."""
import os
import signal
import socket
import threading
import time

import httpx
import openai
import pytest

from conftest import run_kiln
from serve_util import Server, wait_for
from test_serve import offering  # noqa: F401  (the shared fixture)

LONG = "Write a long story about a dragon who learns to fly, with many details."


def client_for(s):
    return openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0, timeout=120)


def test_kill_9_worker_mid_stream(offering):
    s = Server(offering, "--parallel", 1)
    try:
        c = client_for(s)
        first_pid = s.worker_pid()
        stream = c.chat.completions.create(model="smollm2", stream=True, max_tokens=200,
                                           temperature=0,
                                           messages=[{"role": "user", "content": LONG}])
        got = []
        with pytest.raises(openai.APIError) as e:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    got.append(chunk.choices[0].delta.content)
                    if len(got) == 3:
                        os.kill(first_pid, signal.SIGKILL)
        assert len(got) >= 3
        assert "killed by signal 9" in str(e.value)
        # the next request succeeds, on a new worker, and the restart is counted
        r = None
        end = time.time() + 60
        while r is None and time.time() < end:
            try:
                r = c.chat.completions.create(model="smollm2", max_tokens=4,
                                              messages=[{"role": "user", "content": "Hi"}])
            except openai.InternalServerError as err:   # 503 while it restarts
                assert err.body["code"] in ("worker_restarting", "worker_failed")
                time.sleep(0.1)
        assert r is not None and r.usage.completion_tokens >= 1
        assert s.worker_pid() != first_pid
        assert s.metric("kiln_worker_restarts_total") == 1
    finally:
        s.kill()


def test_kill_9_fails_a_non_streaming_request_with_503(offering):
    s = Server(offering, "--parallel", 1)
    try:
        pid = s.worker_pid()
        out = {}

        def ask():
            try:
                out["r"] = httpx.post(s.url + "/v1/chat/completions", timeout=120, json={
                    "messages": [{"role": "user", "content": LONG}], "max_tokens": 200})
            except httpx.HTTPError as err:
                out["e"] = err
        t = threading.Thread(target=ask)
        t.start()
        wait_for(lambda: s.metric("kiln_num_requests_running") == 1, 60, "a running request")
        os.kill(pid, signal.SIGKILL)
        t.join(120)
        r = out["r"]
        assert r.status_code == 503
        e = r.json()["error"]
        assert e["code"] == "worker_failed" and "killed by signal 9" in e["message"]
        s.wait_ready()
    finally:
        s.kill()


def test_watchdog_restarts_a_hung_worker(offering):
    s = Server(offering, "--parallel", 1, "--watchdog", 2,
               env={**os.environ, "KILN_SERVE_TEST_HANG": "2"})
    try:
        c = client_for(s)
        ask = dict(model="smollm2", max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
        assert c.chat.completions.create(**ask).usage.completion_tokens >= 1
        t0 = time.time()
        with pytest.raises(openai.InternalServerError) as e:
            c.chat.completions.create(**ask)             # the worker hangs on this one
        assert e.value.status_code == 503
        assert "heartbeat" in e.value.body["message"] and "--watchdog 2" in e.value.body["message"]
        assert time.time() - t0 >= 2 - 0.5                # not before the watchdog's time
        s.wait_ready()
        assert c.chat.completions.create(**ask).usage.completion_tokens >= 1
        assert s.metric("kiln_worker_restarts_total") == 1
        assert any("watchdog" in l for l in s.lines)
    finally:
        s.kill()


def test_health_is_503_while_loading(offering):
    s = Server(offering, env={**os.environ, "KILN_SERVE_TEST_LOAD_DELAY": "4"}, wait=False)
    try:
        r = s.health()
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json()["status"] == "loading" and r.json()["error"]["code"] == "model_loading"
        with pytest.raises(openai.InternalServerError) as e:
            client_for(s).chat.completions.create(model="smollm2", max_tokens=2,
                                                  messages=[{"role": "user", "content": "x"}])
        assert e.value.body["code"] == "model_loading"
        assert s.metric("kiln_ready") == 0
        s.wait_ready()
        assert s.metric("kiln_ready") == 1
    finally:
        s.kill()


def test_429_when_the_queue_is_full(offering):
    s = Server(offering, "--parallel", 1, "--queue", 1)
    try:
        results = []
        lock = threading.Lock()

        def one():
            r = httpx.post(s.url + "/v1/chat/completions", timeout=300, json={
                "messages": [{"role": "user", "content": LONG}], "max_tokens": 48})
            with lock:
                results.append(r)
        threads = [threading.Thread(target=one) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        codes = sorted(r.status_code for r in results)
        assert len(codes) == 5 and 429 in codes and 200 in codes and set(codes) <= {200, 429}
        for r in results:
            if r.status_code == 429:
                assert r.headers["retry-after"] == "1"
                assert r.json()["error"]["code"] == "queue_full"
                assert r.json()["error"]["type"] == "rate_limit_error"
            else:
                assert r.json()["choices"][0]["message"]["content"]
        with pytest.raises(openai.RateLimitError):
            # one running + one queued, then this one: refused at once
            hold = [threading.Thread(target=one) for _ in range(2)]
            for t in hold:
                t.start()
            wait_for(lambda: s.metric("kiln_num_requests_waiting") == 1, 60, "a full queue")
            try:
                client_for(s).chat.completions.create(model="smollm2", max_tokens=2,
                                                      messages=[{"role": "user", "content": "x"}])
            finally:
                for t in hold:
                    t.join(300)
    finally:
        s.kill()


def test_client_disconnect_frees_the_slot(offering):
    s = Server(offering, "--parallel", 1)
    try:
        body = {"messages": [{"role": "user", "content": LONG}], "max_tokens": 200, "stream": True}
        before = s.metric("kiln_generation_tokens_total")
        with httpx.stream("POST", s.url + "/v1/chat/completions", json=body, timeout=120) as r:
            lines = r.iter_lines()
            for _ in range(6):
                next(lines)
        # the connection is closed: the worker stops generating and the slot is free again
        wait_for(lambda: s.metric("kiln_num_requests_running") == 0
                 and s.metric("kiln_slots_busy") == 0, 60, "the slot to be freed")
        wait_for(lambda: s.metric("kiln_generation_tokens_total") > before, 60, "the count")
        assert s.metric("kiln_generation_tokens_total") - before < 200
        assert 'status="499"' in s.metrics()
        # the slot serves the next request
        r = httpx.post(s.url + "/v1/chat/completions", timeout=120, json={
            "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        assert r.status_code == 200
    finally:
        s.kill()


def test_sigterm_drains_then_exits_0(offering):
    s = Server(offering, "--parallel", 1)
    try:
        c = client_for(s)
        stream = c.chat.completions.create(model="smollm2", stream=True, max_tokens=60,
                                           temperature=0,
                                           messages=[{"role": "user", "content": LONG}])
        it = iter(stream)
        first = next(it)
        worker = s.worker_pid()
        s.proc.send_signal(signal.SIGTERM)
        rest = list(it)                                   # the answer goes on to its end
        finish = [ch.choices[0].finish_reason for ch in [first] + rest
                  if ch.choices and ch.choices[0].finish_reason]
        assert finish in (["length"], ["stop"])
        assert s.proc.wait(60) == 0, s.log()       # the worker stopped cleanly too
        assert any("draining" in l for l in s.lines)
        assert not [l for l in s.lines if "Sanitizer" in l], s.log()
        with pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError)):
            httpx.get(s.url + "/health", timeout=5)
        assert not os.path.exists(f"/proc/{worker}")     # the worker went with it
    finally:
        s.kill()


def test_command_errors(offering, tmp_path):
    r = run_kiln("serve", "--help")
    assert r.returncode == 0 and "--parallel" in r.stdout and "--watchdog" in r.stdout
    for args, word in [((), "no OFFERING"), ((offering, "--port", "70000"), "--port"),
                       ((offering, "--parallel", "0"), "--parallel"),
                       ((offering, "--bogus"), "--bogus"),
                       ((tmp_path / "missing",), "missing")]:
        r = run_kiln("serve", *args, timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and word in r.stderr
    # an offering the worker cannot open: its one-line error, exit 2, and no restart loop
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.gguf").write_bytes(b"GGUF" + b"\0" * 20)
    r = run_kiln("serve", bad, "--port", "0", timeout=120)
    assert r.returncode == 2, r.stderr
    assert "model.gguf" in r.stderr
    # a port in use: exit 1 naming it
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        r = run_kiln("serve", offering, "--port", port, timeout=60)
        assert r.returncode == 1 and str(port) in r.stderr and "in use" in r.stderr


def test_drain_timeout_answers_what_is_left(offering):
    """A drain that runs out of time (--drain-timeout 1) still answers every request: the one
    generating ends, the one queued gets a 503, and the server exits 0. The running request is
    held in generation (a 50 ms pause per streamed piece, a test-only switch) so that it
    outlasts the drain on any machine: on a fast one it could otherwise finish within the
    second, and the queued one would then rightly run."""
    s = Server(offering, "--parallel", 1, "--drain-timeout", 1,
               env={**os.environ, "KILN_SERVE_TEST_PIECE_DELAY_MS": "50"})
    try:
        out = {}

        def ask(name, tokens):
            try:
                out[name] = httpx.post(s.url + "/v1/chat/completions", timeout=120, json={
                    "messages": [{"role": "user", "content": LONG}], "max_tokens": tokens})
            except httpx.HTTPError as err:
                out[name] = err
        running = threading.Thread(target=ask, args=("running", 220))
        running.start()
        wait_for(lambda: s.metric("kiln_num_requests_running") == 1, 60, "a running request")
        queued = threading.Thread(target=ask, args=("queued", 4))
        queued.start()
        wait_for(lambda: s.metric("kiln_num_requests_waiting") == 1, 60, "a queued request")
        t0 = time.time()
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(60) == 0, s.log()
        assert time.time() - t0 < 30
        running.join(60)
        queued.join(60)
        assert isinstance(out["running"], httpx.Response), out
        assert isinstance(out["queued"], httpx.Response), out
        # the generating one was cut short (an answer, or a 503 if the worker went first)
        assert out["running"].status_code in (200, 503)
        assert out["queued"].status_code == 503
        assert out["queued"].json()["error"]["code"] == "shutting_down"
    finally:
        s.kill()
