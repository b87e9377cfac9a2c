"""Load on `kiln serve` (loopback only, bounded in clients, requests and time): 16 concurrent
clients for 20 s (10 s on a sanitizer build) of mixed streaming and non-streaming chat and
completions against 4 slots and a queue of 32. Every response must be complete and
well-formed, none a 5xx, none a 429 (the queue is larger than the clients), and the resident
memory of both processes flat across the run (not checked under ASan, whose quarantine grows
by design). Throughput is measured in bench/serve_bench.py, never asserted here."""
import threading
import time

import openai

from serve_util import SANITIZED, Server, rss_kb, wait_for
from test_serve import offering  # noqa: F401  (the shared fixture)

CLIENTS = 16
SECONDS = 10 if SANITIZED else 20
PROMPTS = ["List the planets.", "Name three colours.", "What is two plus two?",
           "Write a haiku about rain.", "Say hello in French.", "What is the sun?",
           "Describe a cat.", "Give me a number between 1 and 10."]


def one_client(i, url, deadline, out, errors):
    c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=300)
    n = 0
    while time.time() < deadline:
        prompt = PROMPTS[(i + n) % len(PROMPTS)]
        kind = (i + n) % 4
        n += 1
        try:
            if kind == 0:       # chat, whole
                r = c.chat.completions.create(model="smollm2", max_tokens=24,
                                              messages=[{"role": "user", "content": prompt}])
                ch = r.choices[0]
                assert ch.message.role == "assistant" and isinstance(ch.message.content, str)
                assert ch.finish_reason in ("stop", "length")
                assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
                assert 1 <= r.usage.completion_tokens <= 24
            elif kind == 1:     # chat, streamed with usage
                chunks = list(c.chat.completions.create(
                    model="smollm2", max_tokens=24, stream=True,
                    stream_options={"include_usage": True},
                    messages=[{"role": "user", "content": prompt}]))
                assert chunks[0].choices[0].delta.role == "assistant"
                assert len({x.id for x in chunks}) == 1
                fin = [x.choices[0].finish_reason for x in chunks
                       if x.choices and x.choices[0].finish_reason]
                assert fin in (["stop"], ["length"])
                assert chunks[-1].usage and 1 <= chunks[-1].usage.completion_tokens <= 24
            elif kind == 2:     # completion, whole
                r = c.completions.create(model="smollm2", prompt=prompt, max_tokens=16)
                assert isinstance(r.choices[0].text, str)
                assert r.choices[0].finish_reason in ("stop", "length")
            else:               # completion, streamed
                chunks = list(c.completions.create(model="smollm2", prompt=prompt,
                                                   max_tokens=16, stream=True))
                assert chunks and chunks[-1].choices[0].finish_reason in ("stop", "length")
            out.append(kind)
        except Exception as e:  # noqa: BLE001 - every failure is collected and reported
            errors.append(f"client {i} request {n} ({kind}): {type(e).__name__}: {e}")


def test_sixteen_clients(offering):
    s = Server(offering, "--parallel", 4, "--queue", 32, "--watchdog", 60)
    try:
        sup, worker = s.proc.pid, s.worker_pid()
        out, errors = [], []
        warm = time.time() + 3
        deadline = time.time() + SECONDS
        threads = [threading.Thread(target=one_client, args=(i, s.url, deadline, out, errors))
                   for i in range(CLIENTS)]
        for t in threads:
            t.start()
        while time.time() < warm:
            time.sleep(0.1)
        rss0 = rss_kb(sup) + rss_kb(worker)
        for t in threads:
            t.join(SECONDS + 300)
        assert not any(t.is_alive() for t in threads)
        rss1 = rss_kb(sup) + rss_kb(worker)
        assert not errors, "\n".join(errors[:10])
        assert len(out) >= CLIENTS                       # every client finished requests
        assert set(out) == {0, 1, 2, 3}
        # /health answers 503 until the worker is ready (wait_ready polls it), so only the
        # request endpoints count: none of them may have answered 5xx or 429
        bad = [ln for ln in s.metrics().splitlines()
               if ln.startswith("kiln_requests_total{") and 'endpoint="health"' not in ln
               and ('status="5' in ln or 'status="429"' in ln)]
        assert not bad, bad
        # 4 slots busy at once: their decode steps shared passes over the weights (the count
        # reaches the supervisor with the worker's next heartbeat)
        wait_for(lambda: s.metric("kiln_batched_decode_steps_total") > 0, 30, "batched steps")
        assert s.worker_pid() == worker                  # no restart under load
        assert s.metric("kiln_worker_restarts_total") == 0
        if not SANITIZED:
            # flat: after the warm-up, growth within 24 MB (allocator arenas of 16+ threads)
            assert rss1 - rss0 < 24 * 1024, (rss0, rss1)
        print(f"\n{len(out)} requests from {CLIENTS} clients in {SECONDS} s; "
              f"RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MB")
    finally:
        s.kill()
