"""Request validation of the embedded LLM server (pure: no model) and the dynamic batcher."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from hllm_creator.serving._openai_protocol import (
    Limits,
    OpenAIError,
    parse_chat,
    parse_completion,
    parse_json_body,
)
from hllm_creator.serving.batching import DynamicBatcher, QueueFull

M = "m"
LIM = Limits(max_prompt_tokens=100, max_tokens_limit=64, default_max_tokens=16, max_messages=3)
OK = {"model": M, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("patch, status, param", [
    ({"model": "other"}, 404, "model"),
    ({"model": None}, 400, "model"),
    ({"model": 3}, 400, "model"),
    ({"messages": []}, 400, "messages"),
    ({"messages": "hi"}, 400, "messages"),
    ({"messages": [{"role": "user", "content": str(i)} for i in range(4)]}, 400, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
    ({"messages": [{"role": "user"}]}, 400, "messages[0].content"),
    ({"messages": [7]}, 400, "messages[0]"),
    ({"max_tokens": 1000000}, 400, "max_tokens"),
    ({"max_tokens": 0}, 400, "max_tokens"),
    ({"max_tokens": "10"}, 400, "max_tokens"),
    ({"max_tokens": True}, 400, "max_tokens"),
    ({"max_completion_tokens": 65}, 400, "max_completion_tokens"),
    ({"temperature": 3}, 400, "temperature"),
    ({"temperature": "hot"}, 400, "temperature"),
    ({"top_p": 0}, 400, "top_p"),
    ({"n": 2}, 400, "n"),
    ({"stream": True}, 400, "stream"),
    ({"stop": [1, 2]}, 400, "stop"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"seed": 1.5}, 400, "seed"),
    ({"ignore_eos": "yes"}, 400, "ignore_eos"),
    ({"response_format": {"type": "xml"}}, 400, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, 400, "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "nonsense"}}}}, 400,
     "response_format.json_schema.schema"),
    ({"logprobs": True}, 400, "logprobs"),
])
def test_bad_chat_requests_are_4xx_with_param(patch, status, param):
    body = {**OK, **patch}
    with pytest.raises(OpenAIError) as ei:
        parse_chat(body, M, LIM)
    e = ei.value
    assert e.status == status and e.param == param and e.message
    b = e.body()["error"]
    assert set(b) == {"message", "type", "param", "code"} and b["message"] == e.message


def test_good_chat_request_defaults_and_text_parts():
    r = parse_chat({**OK, "messages": [{"role": "developer", "content": "be brief"},
                                       {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                    {"type": "text", "text": "b"}]}],
                    "stop": "\n", "seed": 7, "temperature": 0,
                    "response_format": {"type": "json_schema",
                                        "json_schema": {"name": "x", "schema": {"type": "object"}}}}, M, LIM)
    assert r.messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]
    p = r.params
    assert (p.max_tokens, p.temperature, p.top_p, p.stop, p.seed) == (16, 0.0, 1.0, ["\n"], 7)
    assert p.json_mode == "json_schema" and p.json_schema == {"type": "object"}
    assert parse_chat({**OK, "max_completion_tokens": 64}, M, LIM).params.max_tokens == 64


def test_completion_prompt_checks():
    assert parse_completion({"model": M, "prompt": ["one"]}, M, LIM).prompt == "one"
    for bad in (None, 5, "", ["a", "b"], [1, 2]):
        with pytest.raises(OpenAIError) as ei:
            parse_completion({"model": M, "prompt": bad}, M, LIM)
        assert ei.value.status == 400 and ei.value.param == "prompt"


def test_body_parsing_errors():
    with pytest.raises(OpenAIError) as ei:
        parse_json_body(b"{not json", "application/json", LIM)
    assert ei.value.status == 400 and "not valid JSON" in ei.value.message
    with pytest.raises(OpenAIError) as ei:
        parse_json_body(b"{}", "text/plain", LIM)
    assert ei.value.status == 415
    with pytest.raises(OpenAIError) as ei:
        parse_json_body(b"[1, 2]", "application/json; charset=utf-8", LIM)
    assert ei.value.status == 400 and "object" in ei.value.message
    with pytest.raises(OpenAIError) as ei:
        parse_json_body(b"\xff\xfe", "application/json", LIM)
    assert ei.value.status == 400
    big = json.dumps({"x": "a" * (LIM.max_body_bytes + 1)}).encode()
    with pytest.raises(OpenAIError) as ei:
        parse_json_body(big, "application/json", LIM)
    assert ei.value.status == 413


# -- DynamicBatcher ---------------------------------------------------------------------------------

def test_batcher_groups_concurrent_items_in_one_call_and_respects_max():
    calls: list[list[int]] = []
    threads = set()

    def run(items):
        calls.append(list(items))
        threads.add(threading.current_thread().name)
        time.sleep(0.02)
        return [x * 10 for x in items]

    b = DynamicBatcher(run, max_batch_size=4, window_ms=50, name="t-group")

    async def main():
        return await asyncio.gather(*(b.submit(i) for i in range(10)))

    assert asyncio.run(main()) == [i * 10 for i in range(10)]
    assert max(len(c) for c in calls) == 4 and len(calls) == 3  # 4 + 4 + 2
    assert threads == {next(iter(threads))} and threads.pop().startswith("t-group")
    assert b.batch_sizes == [len(c) for c in calls]
    b.close()


def test_batcher_window_zero_and_errors_stay_per_row():
    def run(items):
        return [ValueError(f"bad {x}") if x % 2 else x for x in items]

    b = DynamicBatcher(run, max_batch_size=8, window_ms=0)

    async def main():
        return await asyncio.gather(*(b.submit(i) for i in range(4)), return_exceptions=True)

    res = asyncio.run(main())
    assert res[0] == 0 and res[2] == 2
    assert isinstance(res[1], ValueError) and str(res[1]) == "bad 1"

    def boom(items):
        raise RuntimeError("whole batch failed")

    b2 = DynamicBatcher(boom, max_batch_size=2, window_ms=5)

    async def main2():
        return await asyncio.gather(b2.submit(1), b2.submit(2), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(main2()))
    b.close()
    b2.close()


def test_batcher_queue_limit_and_event_loop_stays_free():
    release = threading.Event()

    def run(items):
        release.wait(5)
        return items

    b = DynamicBatcher(run, max_batch_size=1, window_ms=0, max_queue=2)

    async def main():
        first = asyncio.ensure_future(b.submit("a"))
        await asyncio.sleep(0.05)  # "a" is running in the executor; the loop still answers
        t0 = time.monotonic()
        await asyncio.sleep(0.01)
        assert time.monotonic() - t0 < 0.5
        waiting = [asyncio.ensure_future(b.submit(x)) for x in "bc"]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await b.submit("d")
        release.set()
        return await asyncio.gather(first, *waiting)

    assert asyncio.run(main()) == ["a", "b", "c"]
    b.close()
    with pytest.raises(ValueError):
        DynamicBatcher(run, max_batch_size=0)
