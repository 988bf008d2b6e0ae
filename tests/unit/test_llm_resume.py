"""The teacher/judge reply cache resumes: a client killed with SIGKILL mid-way and run again asks
no call that had finished; the key holds the endpoint and the model; a schema failure is asked
again on the next run (not cached for good); on a cluster the cache lives under HLLM_STATE_DIR.

The endpoint is a FAKE OpenAI-compatible server (a plain http.server on 127.0.0.1, in this
process, from test_llm_client): a real teacher cannot run here at the speed a kill test needs.
The client under test is the real LLMClient over the real openai client and sqlite.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hllm_creator.llm.cache import ReplyCache, cache_key
from hllm_creator.llm.client import LLMClient, LLMConfig, Request, default_cache_path

sys.path.insert(0, str(Path(__file__).parent))
from test_llm_client import SCHEMA, server_factory  # noqa: E402,F401  (the fixture)

REPO = Path(__file__).resolve().parents[2]
N_CALLS = 24

# The killed process: 24 structured calls, 2 in flight, each reply slow (the fake server sleeps).
CLIENT = textwrap.dedent("""
    import sys
    from hllm_creator.llm.client import LLMClient, LLMConfig, Request
    url, cache, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    schema = {"type": "object", "properties": {"title": {"type": "string", "minLength": 3}},
              "required": ["title"], "additionalProperties": False}
    c = LLMClient(LLMConfig(base_url=url, model="fake-teacher", api_key="k", concurrency=2, progress=False,
                            cache_path=cache, timeout_s=30))
    res = c.map([Request(messages=[{"role": "user", "content": f"user {i}"}], schema=schema, max_tokens=16, tag=i)
                 for i in range(n)])
    print("DONE", sum(r.ok for r in res), sum(r.cached for r in res), flush=True)
""")


def _env():
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "model_code"), str(REPO), env.get("PYTHONPATH", "")])
    return env


def _asked(srv, since: int = 0) -> list[str]:
    return [r["body"]["messages"][-1]["content"] for r in srv.requests[since:]]


def _finished_keys(path: Path) -> set[str]:
    with sqlite3.connect(path) as c:
        try:
            return {k for (k,) in c.execute("SELECT key FROM replies")}
        except sqlite3.OperationalError:  # the client has not created its table yet
            return set()


def test_sigkill_mid_run_then_rerun_repeats_no_finished_call(server_factory, tmp_path):
    srv = server_factory([], default="sleep")  # every reply takes 1.5 s (two at a time)
    cache = tmp_path / "state" / "llm_cache" / "replies.sqlite"
    p = subprocess.Popen([sys.executable, "-c", CLIENT, srv.url, str(cache), str(N_CALLS)], env=_env(),
                         stdout=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while time.time() - t0 < 120:  # wait until some calls finished and more are in flight
            if cache.exists() and len(_finished_keys(cache)) >= 4:
                break
            assert p.poll() is None, "client exited early"
            time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        p.stdout.close()
    finished = _finished_keys(cache)
    asked_before = len(srv.requests)
    assert 4 <= len(finished) < N_CALLS and asked_before > len(finished) - 1

    srv.default = "ok"  # the re-run: fast replies
    r = subprocess.run([sys.executable, "-c", CLIENT, srv.url, str(cache), str(N_CALLS)], env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ok, cached = map(int, r.stdout.split()[1:3])
    assert ok == N_CALLS and cached == len(finished)
    # no call that had finished before the kill was asked again...
    schema_params = {"temperature": 0.0, "max_tokens": 16, "seed": 0, "schema": SCHEMA, "reasks": 2}
    rerun_keys = {cache_key("fake-teacher", [{"role": "user", "content": m}], schema_params, endpoint=srv.url)
                  for m in _asked(srv, asked_before)}
    assert not rerun_keys & finished
    # ...and every call not finished was (the keys the test computes are the client's keys)
    assert rerun_keys | finished == _finished_keys(cache) and len(_finished_keys(cache)) == N_CALLS


def test_key_holds_endpoint_and_model():
    msgs, params = [{"role": "user", "content": "x"}], {"max_tokens": 8}
    k = cache_key("m", msgs, params, endpoint="http://teacher.example:8000/v1")
    assert k == cache_key("m", msgs, params, endpoint="http://Teacher.example:8000/v1/")
    assert k != cache_key("m", msgs, params, endpoint="http://other.example:8000/v1")
    assert k != cache_key("m2", msgs, params, endpoint="http://teacher.example:8000/v1")
    assert k != cache_key("m", msgs, params)


def test_same_model_name_at_another_endpoint_is_asked_again(server_factory, tmp_path):
    a, b = server_factory([]), server_factory([])
    cfg = dict(model="same-name", progress=False, cache_path=str(tmp_path / "c.sqlite"), api_key="k")
    req = Request(messages=[{"role": "user", "content": "hi"}], schema=SCHEMA, max_tokens=16)
    assert LLMClient(LLMConfig(base_url=a.url, **cfg)).call(req).ok
    r = LLMClient(LLMConfig(base_url=b.url, **cfg)).call(req)
    assert r.ok and not r.cached and len(b.requests) == 1
    assert LLMClient(LLMConfig(base_url=a.url + "/", **cfg)).call(req).cached


def test_schema_failure_is_not_cached_for_good(server_factory, tmp_path):
    srv = server_factory([], default="badschema")
    cfg = dict(base_url=srv.url, model="m", progress=False, cache_path=str(tmp_path / "c.sqlite"), api_key="k",
               reasks=0, failure_ttl_s=1.0)
    req = Request(messages=[{"role": "user", "content": "hi"}], schema=SCHEMA, max_tokens=16)
    r1 = LLMClient(LLMConfig(**cfg)).call(req)
    assert not r1.ok and "schema" in r1.error
    srv.default = "ok"
    r2 = LLMClient(LLMConfig(**cfg)).call(req)  # a resume right after: the known failure is not re-paid...
    assert not r2.ok and r2.cached and len(srv.requests) == 1
    time.sleep(1.1)
    r3 = LLMClient(LLMConfig(**cfg)).call(req)  # ...a later run asks again (and the success replaces it)
    assert r3.ok and not r3.cached and len(srv.requests) == 2
    r4 = LLMClient(LLMConfig(**{**cfg, "failure_ttl_s": 0.0})).call(req)  # a success is served for good
    assert r4.ok and r4.cached and len(srv.requests) == 2
    assert len(ReplyCache(tmp_path / "c.sqlite")) == 1
    # failure_ttl_s=0: a failure is always asked again
    srv.default = "badschema"
    req2 = Request(messages=[{"role": "user", "content": "again"}], schema=SCHEMA, max_tokens=16)
    zero = {**cfg, "failure_ttl_s": 0.0}
    assert not LLMClient(LLMConfig(**zero)).call(req2).ok
    r5 = LLMClient(LLMConfig(**zero)).call(req2)
    assert not r5.ok and not r5.cached and len(srv.requests) == 4


def test_cache_on_the_state_dir_and_journal_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("HLLM_STATE_DIR", str(tmp_path / "work" / "state"))
    assert default_cache_path() == str(tmp_path / "work" / "state" / "llm_cache" / "replies.sqlite")
    monkeypatch.delenv("HLLM_STATE_DIR")
    assert default_cache_path().startswith(os.environ["HLLM_WORKDIR"])
    monkeypatch.setenv("HLLM_LLM_CACHE_JOURNAL", "delete")
    c = ReplyCache(tmp_path / "nfs.sqlite")
    c.put("k", "m", {"ok": True, "value": {"a": 1}})
    assert c._conn().execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert c.get("k")["value"] == {"a": 1} and json.loads(json.dumps(c.get("k")))
    monkeypatch.setenv("HLLM_LLM_CACHE_JOURNAL", "memory")
    with pytest.raises(ValueError, match="HLLM_LLM_CACHE_JOURNAL"):
        ReplyCache(tmp_path / "x.sqlite")
