"""The embedded LLM server as a real process (``hllm-creator serve llm``, SmolLM2) over real HTTP.

Called with the official ``openai`` client; malformed requests are sent raw with httpx. Token budgets
are small: SmolLM2 decodes about 16 tokens/s on 2 free cores.
"""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import jsonschema
import openai
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(llm_server):
    base_url, _ = llm_server
    return openai.OpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=300)


def test_model_list_and_kserve_health(llm_server, client):
    base_url, name = llm_server
    assert [m.id for m in client.models.list().data] == [name]
    root = base_url.removesuffix("/openai/v1")
    assert httpx.get(f"{root}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{root}/v1/models/{name}").json()["ready"] is True
    assert httpx.get(f"{root}/v2/models/{name}/ready").status_code == 200


def test_plain_chat(llm_server, client):
    _, name = llm_server
    r = client.chat.completions.create(
        model=name, temperature=0, max_tokens=24,
        messages=[{"role": "user", "content": "Write a catchy ad title for green tea with zero sugar."}])
    text = r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length") and r.choices[0].message.role == "assistant"
    assert len(text.split()) >= 2
    assert "tea" in text.lower()  # the real model answers the question it was asked
    assert 0 < r.usage.completion_tokens <= 24 and r.usage.prompt_tokens > 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_json_schema_chat_reply_validates(llm_server, client):
    _, name = llm_server
    schema = {"type": "object", "additionalProperties": False, "required": ["title", "score"],
              "properties": {"title": {"type": "string", "minLength": 3, "maxLength": 60},
                             "score": {"type": "integer", "minimum": 1, "maximum": 10}}}
    r = client.chat.completions.create(
        model=name, temperature=0, max_tokens=48,
        messages=[{"role": "user", "content": "Give an ad title for green tea and a score from 1 to 10 "
                                              "as JSON with keys title and score."}],
        response_format={"type": "json_schema", "json_schema": {"name": "ad", "schema": schema}})
    assert r.choices[0].finish_reason == "stop"
    obj = json.loads(r.choices[0].message.content)
    jsonschema.validate(obj, schema)


def test_completions(llm_server, client):
    _, name = llm_server
    r = client.completions.create(model=name, prompt="The capital of France is", max_tokens=6, temperature=0)
    assert "Paris" in r.choices[0].text
    assert r.usage.prompt_tokens == 5 and 0 < r.usage.completion_tokens <= 6


def test_concurrent_chats_all_answered(llm_server, client):
    _, name = llm_server

    def one(product):
        return client.chat.completions.create(
            model=name, temperature=0, max_tokens=8, extra_body={"ignore_eos": True},
            messages=[{"role": "user", "content": f"Name one benefit of {product}."}])

    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        rs = list(ex.map(one, ["green tea", "a hammer", "safety goggles"]))
    assert [r.usage.completion_tokens for r in rs] == [8, 8, 8]
    assert all(r.choices[0].message.content for r in rs)


MALFORMED = [
    ("bad json", b"{\"model\": ", "application/json", 400),
    ("wrong content type", json.dumps({"messages": []}).encode(), "text/plain", 415),
    ("messages wrong type", {"messages": "hello"}, None, 400),
    ("content wrong type", {"messages": [{"role": "user", "content": 42}]}, None, 400),
    ("empty messages", {"messages": []}, None, 400),
    ("max_tokens 1000000", {"max_tokens": 1000000}, None, 400),
    ("max_tokens string", {"max_tokens": "ten"}, None, 400),
    ("prompt over the limit", {"messages": [{"role": "user", "content": "tea " * 2100}]}, None, 400),
    ("unknown model", {"model": "gpt-17"}, None, 404),
    ("n=2", {"n": 2}, None, 400),
    ("not an object", b"[1, 2, 3]", "application/json", 400),
]


@pytest.mark.parametrize("what, body, ctype, status", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_request_gets_4xx_then_server_answers(llm_server, what, body, ctype, status):
    base_url, name = llm_server
    url = f"{base_url}/chat/completions"
    if isinstance(body, dict):
        body = json.dumps({"model": name, "messages": [{"role": "user", "content": "hi"}], **body}).encode()
    r = httpx.post(url, content=body, headers={"content-type": ctype or "application/json"}, timeout=60)
    assert r.status_code == status, (what, r.status_code, r.text)
    err = r.json()["error"]
    assert err["message"] and err["type"], what
    good = httpx.post(url, json={"model": name, "messages": [{"role": "user", "content": "Say hi."}],
                                 "max_tokens": 2, "temperature": 0}, timeout=120)
    assert good.status_code == 200 and good.json()["choices"][0]["message"]["content"] is not None


def test_openai_client_surfaces_errors(llm_server, client):
    _, name = llm_server
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=name, max_tokens=1000000,
                                       messages=[{"role": "user", "content": "hi"}])
    assert "max_tokens" in str(ei.value)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])


def test_kserve_v1_predict(llm_server):
    base_url, name = llm_server
    url = f"{base_url.removesuffix('/openai/v1')}/v1/models/{name}:predict"
    r = httpx.post(url, json={"instances": [{"prompt": "The capital of France is", "max_tokens": 4,
                                             "temperature": 0}]}, timeout=120)
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    assert "Paris" in p["text"] and 0 < p["usage"]["completion_tokens"] <= 4
    bad = httpx.post(url, json={"instances": [{"prompt": "x", "max_tokens": 10 ** 6}]}, timeout=60)
    assert bad.status_code == 400 and "max_tokens" in bad.text


def test_large_body_gets_a_readable_413_with_urllib_and_httpx(llm_server):
    """issue 28: a 30 MB body (limit 4 MiB) is answered 413 with the JSON error; urllib and httpx
    read the status instead of a connection reset (the guard drains a bounded amount first)."""
    import json as _json
    import urllib.error
    import urllib.request

    base_url, name = llm_server
    url = f"{base_url}/chat/completions"
    body = b'{"model": "x", "messages": [{"role": "user", "content": "' + b"a" * (30 * 1024 * 1024) + b'"}]}'
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req, timeout=60)
    assert ei.value.code == 413
    assert "exceeds the limit" in _json.loads(ei.value.read())["error"]["message"]
    r = httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large", r.text[:200]

    def chunks():  # no Content-Length: counted as the bytes arrive
        for _ in range(30):
            yield b"a" * (1024 * 1024)

    r = httpx.post(url, content=chunks(), headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413, r.text[:200]
    ok = httpx.post(url, json={"model": name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
                    timeout=120)
    assert ok.status_code == 200  # still serving
