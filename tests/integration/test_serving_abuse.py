"""Inputs that once broke or starved the real LLM server (issue 13), each sent over HTTP to the real
``hllm-creator serve llm`` process (SmolLM2, the session ``llm_server`` fixture).

For every one: no 5xx except a deadline's 504, no other client held up beyond the deadline, the
server's ``/metrics`` stays bounded, and the next good request is answered. Every HTTP call has a
timeout, so a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

pytestmark = pytest.mark.integration

GOOD_TIMEOUT = 120  # s: one short reply on a loaded 2-core machine


def _root(llm_server) -> str:
    return llm_server[0].removesuffix("/openai/v1")


def _chat(name: str, content: str = "Say hi.", **kw) -> dict:
    return {"model": name, "messages": [{"role": "user", "content": content}], "max_tokens": 4,
            "temperature": 0, **kw}


def _good(llm_server) -> None:
    """The next good request is answered."""
    base, name = llm_server
    r = httpx.post(f"{base}/chat/completions", json=_chat(name), timeout=GOOD_TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] is not None


def _server_pid(root: str) -> int:
    """The pid of the server process listening on ``root``'s port (from /proc)."""
    from pathlib import Path

    port = root.rsplit(":", 1)[1]
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                args = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in args and b"llm" in args and port.encode() in args:
                return int(d.name)
    raise RuntimeError(f"no server process for {root}")


def _rss_mb(pid: int) -> float:
    from pathlib import Path

    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _metric(root: str, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for fam in text_string_to_metric_families(httpx.get(f"{root}/metrics", timeout=30).text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_bad_seed_and_tiny_temperature_fail_alone(llm_server):
    """seed 2**64 / below int64 -> 400; temperature 1e-40 -> greedy; a good request sent at the same
    moment is answered (these used to fail the whole batch with a 500)."""
    base, name = llm_server

    async def go():
        async with httpx.AsyncClient(timeout=GOOD_TIMEOUT) as c:
            bodies = [_chat(name, seed=2**64), _chat(name, seed=-(2**63) - 1), _chat(name, temperature=1e-40),
                      _chat(name, temperature=1e-40, seed=2**63 - 1), _chat(name, seed=-5, temperature=1.0)]
            return await asyncio.gather(*(c.post(f"{base}/chat/completions", json=b) for b in bodies))

    big, small, tiny, tiny_max_seed, good = asyncio.run(go())
    for r, word in ((big, "at most"), (small, ">=")):
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "seed" and word in r.json()["error"]["message"], r.text
    assert tiny.status_code == 200 and tiny_max_seed.status_code == 200 and good.status_code == 200
    # 1e-40 is greedy: the same reply as temperature 0
    greedy = httpx.post(f"{base}/chat/completions", json=_chat(name), timeout=GOOD_TIMEOUT)
    assert tiny.json()["choices"][0]["message"]["content"] == greedy.json()["choices"][0]["message"]["content"]


def test_catastrophic_pattern_is_rejected_at_once(llm_server):
    base, name = llm_server
    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {
        "b": {"type": "string", "pattern": "(a|b)*a(a|b){14}"}}}}}
    t0 = time.monotonic()
    r = httpx.post(f"{base}/chat/completions", timeout=30, json=_chat(
        name, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "unsupported_schema" and "pattern" in err["param"], err
    assert time.monotonic() - t0 < 10
    _good(llm_server)


def test_deep_nesting_and_huge_bodies_are_4xx(llm_server):
    base, name = llm_server
    root = _root(llm_server)
    hdr = {"content-type": "application/json"}
    brackets = b"[" * 100_000
    r = httpx.post(f"{base}/chat/completions", content=brackets, headers=hdr, timeout=30)
    assert r.status_code == 400 and "nested" in r.json()["error"]["message"], r.text
    r = httpx.post(f"{root}/v1/models/{name}:predict", content=brackets, headers=hdr, timeout=30)
    assert r.status_code == 400, r.text
    deep: object = "x"
    for _ in range(500):
        deep = {"a": deep}
    r = httpx.post(f"{base}/chat/completions", timeout=30, json=_chat(name, metadata=deep))
    assert r.status_code == 400 and "nested" in r.json()["error"]["message"], r.text
    r = httpx.post(f"{root}/v1/models/{name}:predict", timeout=30,
                   json={"instances": [{"prompt": "hi", "max_tokens": 2, "user": deep}]})
    assert r.status_code == 400 and "nested" in r.json()["error"], r.text
    # 50 MB: refused from Content-Length, and while streaming without one
    big = b'{"model": "' + b"x" * (50 * 1024 * 1024) + b'"}'
    try:
        r = httpx.post(f"{base}/chat/completions", content=big, headers=hdr, timeout=60)
        assert r.status_code == 413, r.text[:200]
    except (httpx.WriteError, httpx.RemoteProtocolError):
        pass  # answered 413 and closed while we were still sending: also refused

    def chunks():
        for _ in range(50):
            yield b"x" * (1024 * 1024)

    import threading

    pid = _server_pid(root)
    rss0, peak, stop = _rss_mb(pid), [0.0], threading.Event()

    def sample():  # the server's memory while 50 MB streams in: the body must never be held
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb(pid))
            time.sleep(0.01)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        for url in (f"{base}/chat/completions", f"{root}/v1/models/{name}:predict"):
            try:
                r = httpx.post(url, content=chunks(), headers=hdr, timeout=60)
                assert r.status_code == 413, r.text[:200]
            except (httpx.WriteError, httpx.RemoteProtocolError):
                pass  # the server answered 413 and closed while we were still sending: also refused
    finally:
        stop.set()
        th.join(5)
    assert peak[0] - rss0 < 30, (rss0, peak[0])  # a buffered 50 MB body would show here
    _good(llm_server)


def test_unknown_model_names_do_not_grow_metrics(llm_server):
    root = _root(llm_server)
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["{}"]}]}

    async def go(names):
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=16)) as c:
            rs = await asyncio.gather(*(c.post(f"{root}/v2/models/{n}/infer", json=body) for n in names))
        return [r.status_code for r in rs]

    asyncio.run(go([f"warm-{i}" for i in range(5)]))
    before = len(httpx.get(f"{root}/metrics", timeout=30).text)
    codes = asyncio.run(go([f"nope-{i}" for i in range(1000)]))
    assert set(codes) == {404}
    text = httpx.get(f"{root}/metrics", timeout=30).text
    assert "nope-" not in text and "warm-" not in text
    assert len(text) < before + 2000  # counters moved, no new series per name
    assert _metric(root, "hllm_serving_errors_total", model="unknown", kind="bad_request") >= 1000
    _good(llm_server)


def test_slow_row_beside_short_row_deadline_and_disconnect(llm_server):
    """A 512-token row does not hold up a 5-token row (rows leave and join between decoding steps);
    past its deadline (x-request-timeout) the long one gets a 504 and is dropped; a client that
    disconnects has its row dropped too; the server keeps answering."""
    base, name = llm_server
    root = _root(llm_server)
    dropped0 = _metric(root, "hllm_serving_dropped_rows_total")
    cancelled0 = _metric(root, "hllm_serving_cancelled_requests_total", reason="disconnect")

    async def go():
        async with httpx.AsyncClient(timeout=GOOD_TIMEOUT) as c:
            t0 = time.monotonic()
            long = asyncio.ensure_future(c.post(
                f"{base}/completions", headers={"x-request-timeout": "10"},
                json={"model": name, "prompt": "Once upon a time", "max_tokens": 512, "ignore_eos": True,
                      "temperature": 0}))
            await asyncio.sleep(2.0)  # the long row is decoding
            short = await c.post(f"{base}/completions", json={"model": name, "prompt": "Hello", "max_tokens": 5,
                                                              "ignore_eos": True, "temperature": 0})
            t_short = time.monotonic() - t0
            long_done_then = long.done()
            r_long = await long
            return short, t_short, long_done_then, r_long, time.monotonic() - t0

    short, t_short, long_done_then, r_long, t_long = asyncio.run(go())
    assert short.status_code == 200 and short.json()["usage"]["completion_tokens"] == 5
    assert not long_done_then, "the 5-token request waited for the 512-token one"
    assert r_long.status_code == 504, r_long.text[:300]
    assert r_long.json()["error"]["code"] == "deadline_exceeded" and r_long.headers.get("x-request-id")
    assert t_long < 30, t_long  # 10 s deadline (+ scheduling slack on a loaded machine)
    assert t_short < t_long

    # a client that goes away: its row is dropped, not computed to the end
    async def vanish():
        async with httpx.AsyncClient(timeout=3) as c:
            try:
                await c.post(f"{base}/completions", json={"model": name, "prompt": "Tell a story",
                                                          "max_tokens": 512, "ignore_eos": True})
            except httpx.TimeoutException:
                pass

    asyncio.run(vanish())
    t0 = time.monotonic()
    while time.monotonic() - t0 < 20 and _metric(root, "hllm_serving_dropped_rows_total") < dropped0 + 2:
        time.sleep(0.5)
    assert _metric(root, "hllm_serving_dropped_rows_total") >= dropped0 + 2  # the 504 one and the gone one
    assert _metric(root, "hllm_serving_cancelled_requests_total", reason="disconnect") >= cancelled0 + 1
    _good(llm_server)


def test_v1_predict_keeps_backoff_statuses_and_5xx_are_generic(llm_server):
    base, name = llm_server
    root = _root(llm_server)
    r = httpx.post(f"{root}/v1/models/{name}:predict", timeout=30, headers={"x-request-timeout": "0.001"},
                   json={"instances": [{"prompt": "Hello", "max_tokens": 64, "ignore_eos": True}]})
    assert r.status_code == 504, r.text  # a deadline stays a 504 on v1 (not a 400)
    assert json.loads(r.text)["error"].startswith("the request did not finish")
    r = httpx.post(f"{base}/completions", timeout=30, headers={"x-request-timeout": "soon"},
                   json={"model": name, "prompt": "Hello"})
    assert r.status_code == 400 and "x-request-timeout" in r.json()["error"]["message"]
    _good(llm_server)
