"""LLMClient against a real local HTTP server that misbehaves on purpose (429, 500, timeouts, bad JSON).

The server is a plain ``http.server`` on 127.0.0.1 speaking the OpenAI chat-completions wire format;
the client under test is the real ``openai`` client. Nothing is mocked.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hllm_creator.llm.client import LLMClient, LLMConfig, Request, extract_json, validate_reply

SCHEMA = {"type": "object", "properties": {"title": {"type": "string", "minLength": 3}}, "required": ["title"],
          "additionalProperties": False}


class ScriptedOpenAIServer:
    """Answers /v1/chat/completions from a script: each entry is used once, in order, then ``default``."""

    def __init__(self, script: list, default="ok"):
        self.script = list(script)
        self.default = default
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(n) or b"{}")
                with outer.lock:
                    outer.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                    step = outer.script.pop(0) if outer.script else outer.default
                if step == "429":
                    return self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                                      {"Retry-After": "0"})
                if step == "500":
                    return self._send(500, {"error": {"message": "boom", "type": "server_error"}})
                if step == "400schema":  # what our server says when constrained decoding fails
                    return self._send(400, {"error": {"message": "the constrained decoder could not enforce "
                                                      "this schema", "type": "invalid_request_error",
                                                      "code": "unsupported_schema"}})
                if step == "400":
                    return self._send(400, {"error": {"message": "prompt too long", "type": "invalid_request_error",
                                                      "code": "context_length_exceeded"}})
                if step == "sleep":
                    time.sleep(1.5)
                    step = "ok"
                content = {"ok": json.dumps({"title": "A good title"}), "invalid": "not json at all {",
                           "badschema": json.dumps({"headline": "x"}),
                           "fenced": "Sure!\n```json\n{\"title\": \"Fenced title\"}\n```"}.get(step, step)
                return self._send(200, {
                    "id": "x", "object": "chat.completion", "created": 0, "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

            def _send(self, code, obj, headers=None):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_factory():
    made = []

    def make(script, default="ok"):
        s = ScriptedOpenAIServer(script, default)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def _client(srv, tmp_path, **kw):
    cfg = dict(base_url=srv.url, model="scripted", backoff_initial_s=0.01, backoff_max_s=0.05, timeout_s=0.8,
               progress=False, cache_path=str(tmp_path / "cache.sqlite"))
    cfg.update(kw)
    return LLMClient(LLMConfig(**cfg))


def _req(text="hello", tag=None):
    return Request(messages=[{"role": "user", "content": text}], schema=SCHEMA, name="t", max_tokens=16, tag=tag)


def test_retries_429_500_and_timeout_then_succeeds(server_factory, tmp_path):
    srv = server_factory(["429", "500", "sleep"])
    c = _client(srv, tmp_path)
    r = c.call(_req())
    assert r.ok and r.value == {"title": "A good title"}
    st = c.stats()
    assert st["llm_retries"] == 3 and st["llm_http_requests"] == 4
    # response_format json_schema was sent to the server
    rf = srv.requests[-1]["body"]["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"] == SCHEMA


def test_gives_up_after_max_retries_with_a_reason(server_factory, tmp_path):
    srv = server_factory([], default="500")
    c = _client(srv, tmp_path, max_retries=2)
    r = c.call(_req())
    assert not r.ok and "endpoint error" in r.error and "3 attempts" in r.error
    assert len(srv.requests) == 3
    # transport failures are not cached: the next run asks again
    assert c.cache is not None and len(c.cache) == 0


def test_unenforceable_schema_is_asked_again_unconstrained(server_factory, tmp_path):
    srv = server_factory(["400schema", "ok"])
    r = _client(srv, tmp_path).call(_req())
    assert r.ok and r.value == {"title": "A good title"}
    assert "response_format" in srv.requests[0]["body"] and "response_format" not in srv.requests[1]["body"]


def test_a_rejected_request_fails_its_row_not_the_run(server_factory, tmp_path):
    srv = server_factory(["400"])
    c = _client(srv, tmp_path)
    r = c.call(_req("too long"))
    assert not r.ok and "HTTP 400" in r.error and "prompt too long" in r.error
    assert len(srv.requests) == 1  # a 4xx is not retried
    assert c.call(_req("next")).ok  # the client goes on


def test_invalid_json_is_reasked_then_validated(server_factory, tmp_path):
    srv = server_factory(["invalid", "badschema"])
    c = _client(srv, tmp_path, reasks=2)
    r = c.call(_req())
    assert r.ok and r.attempts == 3 and c.stats()["llm_reasks"] == 2
    # the re-ask tells the model what was wrong
    last_msgs = srv.requests[-1]["body"]["messages"]
    assert "not valid" in last_msgs[-1]["content"] and last_msgs[-2]["role"] == "assistant"


def test_invalid_after_all_reasks_is_a_failure_with_reason(server_factory, tmp_path):
    srv = server_factory([], default="badschema")
    c = _client(srv, tmp_path, reasks=1)
    r = c.call(_req())
    assert not r.ok and "schema" in r.error and r.attempts == 2


def test_cache_resumes_without_asking_twice(server_factory, tmp_path):
    srv = server_factory([])
    c1 = _client(srv, tmp_path, concurrency=4)
    res = c1.map([_req(f"q{i}", tag=i) for i in range(6)])
    assert [r.tag for r in res] == list(range(6)) and all(r.ok for r in res)
    n_http = len(srv.requests)
    assert n_http == 6
    c2 = _client(srv, tmp_path, concurrency=4)  # a new process would see the same sqlite file
    res2 = c2.map([_req(f"q{i}", tag=i) for i in range(8)])
    assert all(r.ok for r in res2)
    assert sum(r.cached for r in res2) == 6 and c2.stats()["llm_cache_hits"] == 6
    assert len(srv.requests) == n_http + 2


def test_key_is_sent_but_never_shown(server_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-123")
    srv = server_factory([])
    c = _client(srv, tmp_path)
    assert c.call(_req()).ok
    assert srv.requests[-1]["auth"] == "Bearer sk-very-secret-123"
    shown = repr(c) + repr(c.config) + json.dumps(c.config.model_dump(mode="json")) + str(c.config.flat_params())
    assert "sk-very-secret" not in shown


def test_missing_endpoint_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="OPENAI_BASE_URL"):
        LLMClient(LLMConfig(model="m"))


def test_reply_parsing():
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('Here you go: {"a": {"b": "}"}} thanks') == {"a": {"b": "}"}}
    assert extract_json("```json\n{\"a\": 2}\n```") == {"a": 2}
    with pytest.raises(ValueError, match="not JSON"):
        extract_json("no json here")
    assert validate_reply('{"title": "abc"}', SCHEMA) == {"title": "abc"}
    with pytest.raises(ValueError, match="schema at title"):
        validate_reply('{"title": "a"}', SCHEMA)


def test_fenced_reply_accepted(server_factory, tmp_path):
    srv = server_factory(["fenced"])
    r = _client(srv, tmp_path).call(_req())
    assert r.ok and r.value == {"title": "Fenced title"}
