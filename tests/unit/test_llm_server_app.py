"""The LLM server's OpenAI routes in-process (httpx.ASGITransport) over the real tiny-llama model.

Real FastAPI app, real transformers generate; tiny-llama has random weights, so the tests check
mechanics (lengths, batching, seeds, stops, constraints, errors), not wording.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import jsonschema
import pytest
from fastapi import FastAPI

from hllm_creator.serving.llm_server import LLMModel, LLMServerConfig, register_openai_routes

NAME = "tiny"


@pytest.fixture(scope="module")
def model():
    cfg = LLMServerConfig(model="tiny-llama", model_name=NAME, max_batch_size=8, batch_window_ms=300,
                          max_prompt_tokens=64, max_tokens_limit=48, default_max_tokens=8, json_warmup=False, dtype="float32",
                          json_max_whitespace=1)
    m = LLMModel(cfg)
    assert not m.ready
    m.load()
    assert m.ready
    yield m
    m.batcher.close()


def _run(model, fn):
    """Run ``fn(client)`` against a fresh app holding the model's routes, in a fresh event loop."""
    app = FastAPI()
    register_openai_routes(app, model)

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await fn(c)

    return asyncio.run(main())


def chat(content: str, **kw) -> dict:
    return {"model": NAME, "messages": [{"role": "user", "content": content}], **kw}


def test_chat_reply_shape_usage_and_exact_lengths(model):
    async def go(c):
        r = await c.post("/openai/v1/chat/completions",
                         json=chat("Hello there", max_tokens=5, temperature=0, ignore_eos=True))
        return r

    r = _run(model, go)
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["object"] == "chat.completion" and d["model"] == NAME and d["id"].startswith("chatcmpl-")
    ch = d["choices"][0]
    assert ch["message"]["role"] == "assistant" and isinstance(ch["message"]["content"], str)
    assert ch["finish_reason"] == "length"
    tok = model.engine.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hello there"}], add_generation_prompt=True,
                                     tokenize=False)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert d["usage"] == {"prompt_tokens": n_prompt, "completion_tokens": 5, "total_tokens": n_prompt + 5}


def test_models_routes_and_errors_then_good_answer(model):
    async def go(c):
        out = {}
        out["list"] = (await c.get("/openai/v1/models")).json()
        out["one"] = await c.get(f"/openai/v1/models/{NAME}")
        out["missing"] = await c.get("/openai/v1/models/nope")
        url = "/openai/v1/chat/completions"
        out["bad_json"] = await c.post(url, content=b"{oops", headers={"content-type": "application/json"})
        out["ctype"] = await c.post(url, content=json.dumps(chat("x")), headers={"content-type": "text/plain"})
        out["unknown"] = await c.post(url, json={**chat("x"), "model": "gpt-9"})
        out["huge"] = await c.post(url, json=chat("x", max_tokens=1000000))
        out["empty"] = await c.post(url, json={"model": NAME, "messages": []})
        out["types"] = await c.post(url, json={"model": NAME, "messages": [{"role": "user", "content": {"a": 1}}]})
        out["long"] = await c.post(url, json=chat("word " * 200, max_tokens=4))
        out["long_completion"] = await c.post("/openai/v1/completions",
                                              json={"model": NAME, "prompt": "word " * 200, "max_tokens": 4})
        out["good"] = await c.post("/openai/v1/completions",
                                   json={"model": NAME, "prompt": "Once upon", "max_tokens": 3, "temperature": 0,
                                         "ignore_eos": True})
        return out

    o = _run(model, go)
    assert o["list"]["object"] == "list" and [m["id"] for m in o["list"]["data"]] == [NAME]
    assert o["one"].status_code == 200 and o["one"].json()["id"] == NAME
    assert o["missing"].status_code == 404
    expect = {"bad_json": 400, "ctype": 415, "unknown": 404, "huge": 400, "empty": 400, "types": 400,
              "long": 400, "long_completion": 400}
    for k, status in expect.items():
        r = o[k]
        assert r.status_code == status, (k, r.status_code, r.text)
        err = r.json()["error"]
        assert err["message"] and set(err) == {"message", "type", "param", "code"}, k
    assert o["long"].json()["error"]["code"] == "context_length_exceeded"
    assert "1000000" in o["huge"].json()["error"]["message"]
    g = o["good"]
    assert g.status_code == 200 and g.json()["object"] == "text_completion"
    assert g.json()["usage"]["completion_tokens"] == 3


def test_concurrent_requests_share_one_generate_call_and_match_sequential(model):
    prompts = [("short", 3), ("a somewhat longer prompt here", 7), ("mid length one", 5),
               ("x", 6), ("the quick brown fox jumps", 4), ("hello", 8)]

    def body(p, n):
        return {"model": NAME, "prompt": p, "max_tokens": n, "temperature": 0, "ignore_eos": True}

    async def go(c):
        before = len(model.batcher.batch_sizes)
        rs = await asyncio.gather(*(c.post("/openai/v1/completions", json=body(p, n)) for p, n in prompts))
        sizes = model.batcher.batch_sizes[before:]
        alone = [await c.post("/openai/v1/completions", json=body(p, n)) for p, n in prompts]
        return rs, sizes, alone

    rs, sizes, alone = _run(model, go)
    assert sizes == [len(prompts)]  # one generate call for all six
    for (_, n), r, a in zip(prompts, rs, alone):
        assert r.status_code == 200 and a.status_code == 200
        assert r.json()["usage"]["completion_tokens"] == n  # each row stopped at its own max_tokens
        assert r.json()["choices"][0]["text"] == a.json()["choices"][0]["text"]  # batch == alone (greedy)


def test_seeded_sampling_is_reproducible_and_rows_keep_their_seeds(model):
    def body(seed):
        return chat("Tell me something", max_tokens=8, temperature=1.0, top_p=0.95, seed=seed, ignore_eos=True)

    async def go(c):
        url = "/openai/v1/chat/completions"
        batch = await asyncio.gather(c.post(url, json=body(1)), c.post(url, json=body(2)))
        again = await c.post(url, json=body(1))
        return [r.json()["choices"][0]["message"]["content"] for r in (*batch, again)]

    a1, b2, a1_again = _run(model, go)
    assert a1 == a1_again
    assert a1 != b2


def test_stop_string_cuts_and_reports_stop(model):
    base = {"model": NAME, "prompt": "Numbers:", "max_tokens": 12, "temperature": 0, "ignore_eos": True}

    async def go(c):
        full = (await c.post("/openai/v1/completions", json=base)).json()["choices"][0]["text"]
        stop = full[3:6]
        cut = (await c.post("/openai/v1/completions", json={**base, "stop": [stop]})).json()
        return full, stop, cut

    full, stop, cut = _run(model, go)
    assert len(full) > 6 and stop
    assert cut["choices"][0]["text"] == full[:full.find(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"


def test_json_schema_is_enforced_even_on_a_random_model(model):
    # no free-text or number fields: a random model would loop inside them until max_tokens
    schema = {"type": "object", "additionalProperties": False, "required": ["ok", "color", "size"],
              "properties": {"ok": {"type": "boolean"}, "color": {"enum": ["red", "blue"]},
                             "size": {"type": "string", "enum": ["S", "M", "L"]}}}

    async def go(c):
        url = "/openai/v1/chat/completions"
        rf = {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}
        return await asyncio.gather(
            c.post(url, json=chat("give json", max_tokens=48, temperature=0, response_format=rf)),
            c.post(url, json=chat("give json", max_tokens=48, temperature=0.8, seed=3, response_format=rf)),
            c.post(url, json=chat("plain", max_tokens=4, temperature=0)))  # mixed into the same batch

    rs = _run(model, go)
    for r in rs[:2]:
        assert r.status_code == 200, r.text
        ch = r.json()["choices"][0]
        assert ch["finish_reason"] == "stop", ch
        jsonschema.validate(json.loads(ch["message"]["content"]), schema)
    assert rs[2].status_code == 200


def test_kserve_v1_predict_and_bad_instances(model):
    import kserve.errors

    async def go():
        ok = await model.predict({"instances": [{"prompt": "Hi", "max_tokens": 2, "temperature": 0,
                                                 "ignore_eos": True},
                                                {"messages": [{"role": "user", "content": "Hi"}],
                                                 "max_tokens": 3, "temperature": 0, "ignore_eos": True}]})
        errs = []
        for bad in ({}, {"instances": []}, {"instances": [5]}, {"instances": [{"prompt": 3}]},
                    {"instances": [{"prompt": "x", "max_tokens": 10 ** 6}]}):
            with pytest.raises(kserve.errors.InvalidInput) as ei:
                await model.predict(bad)
            errs.append(str(ei.value))
        return ok, errs

    ok, errs = asyncio.run(go())
    assert [p["usage"]["completion_tokens"] for p in ok["predictions"]] == [2, 3]
    assert all(errs)
