"""The `creative` KServe model over real HTTP on 127.0.0.1: v1 and v2 through KServe's
InferenceRESTClient, the grounding guarantee, micro-batching of concurrent requests, bad bodies.

Tiny real stack: an untrained tiny-llama HLLMCreator (its titles are mostly noise, so most fall back
to the original title: exactly the path that must never leak an ungrounded title).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from helpers import metric

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(serving_stack, tmp_path_factory):
    from hllm_creator.process import serve_process

    args = ["--model-dir", serving_stack["model_dir"], "--artifacts", serving_stack["artifacts"], "--items", serving_stack["items"],
            "--threads", "1", "--batch-wait-ms", "50"]
    with serve_process("creative", args, timeout=240, log_dir=tmp_path_factory.mktemp("log")) as h:
        yield h


AD = {"title": "Gorilla Tape, Black Duct Tape, 1.88 in x 12 yd, 2 Pack",
      "description": "Double thick adhesive, tough all-weather shell, for indoor and outdoor use.",
      "selling_points": ["double thick adhesive", "all-weather"]}


def check_prediction(p: dict, ad: dict) -> None:
    from hllm_creator.creative.ad import Ad
    from hllm_creator.creative.gate import check_grounding

    assert set(p) >= {"title", "original_title", "cluster_id", "grounded", "personalized", "reasons"}
    assert p["original_title"] == ad["title"]
    if p["grounded"]:
        assert p["personalized"] and check_grounding(p["title"], Ad(**ad)).ok
    else:  # never an ungrounded title: the original one, with reasons
        assert p["title"] == ad["title"] and not p["personalized"] and p["reasons"]


def test_v1_kserve_client(server, serving_stack):
    from kserve import InferenceRESTClient, RESTConfig

    users = list(serving_stack["users"])[:3]
    body = {"instances": [{"user_history": serving_stack["users"][u], "ad": AD} for u in users]
            + [{"user_history": serving_stack["users"][users[0]], "ad": AD, "condition_on": "user"}]}

    async def go():
        client = InferenceRESTClient(RESTConfig(protocol="v1", timeout=120))
        try:
            return await client.infer(server.url, body, model_name="creative")
        finally:
            await client.close()

    preds = asyncio.run(go())["predictions"]
    assert len(preds) == 4
    for u, p in zip(users + [users[0]], preds):
        check_prediction(p, AD)
        assert p["cluster_id"] == serving_stack["assignments"][u]  # nearest cluster, training metric
        assert p["history_used"] == min(50, len(serving_stack["users"][u]))
        assert isinstance(p["candidate"], str)  # what the Creative LLM wrote (before the check)


def test_v2_kserve_client_and_cold_start(server, serving_stack):
    import numpy as np
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    u = next(iter(serving_stack["users"]))
    insts = [{"user_history": serving_stack["users"][u], "ad": AD},
             {"user_history": [], "ad": AD},
             {"user_history": ["B0UNKNOWN77"], "ad": AD}]
    inp = InferInput(name="instances", shape=[3], datatype="BYTES")
    inp.set_data_from_numpy(np.array([json.dumps(i) for i in insts], dtype=object), binary_data=False)

    async def go():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=120))
        try:
            return await client.infer(server.url, InferRequest(model_name="creative", infer_inputs=[inp]),
                                      model_name="creative")
        finally:
            await client.close()

    out = asyncio.run(go()).outputs[0]
    p, cold, unknown = (json.loads(x) for x in out.data)
    check_prediction(p, AD)
    assert p["cluster_id"] == serving_stack["assignments"][u]
    for c in (cold, unknown):
        check_prediction(c, AD)
        assert c["cluster_id"] is None and c["history_used"] == 0 and not c["grounded"]
        assert any("cold start" in r for r in c["reasons"])
    assert any("1 unknown item id" in r for r in unknown["reasons"])


def test_concurrent_requests_share_generate_calls(server, serving_stack):
    users = list(serving_stack["users"])[:12]
    m0 = httpx.get(f"{server.url}/metrics").text

    async def go():
        async with httpx.AsyncClient(timeout=120) as c:
            return await asyncio.gather(*(c.post(f"{server.url}/v1/models/creative:predict",
                                                 json={"instances": [{"user_history": serving_stack["users"][u],
                                                                      "ad": AD, "max_new_tokens": 8,
                                                                      "do_sample": True, "seed": 1}]})
                                          for u in users))

    rs = asyncio.run(go())
    for u, r in zip(users, rs):
        assert r.status_code == 200, r.text
        p = r.json()["predictions"][0]
        check_prediction(p, AD)
        assert p["cluster_id"] == serving_stack["assignments"][u]
    m1 = httpx.get(f"{server.url}/metrics").text
    n = metric(m1, "hllm_serving_batch_size_sum", model="creative") - metric(m0, "hllm_serving_batch_size_sum", model="creative")
    calls = metric(m1, "hllm_serving_batch_size_count", model="creative") - metric(m0, "hllm_serving_batch_size_count", model="creative")
    assert n == 12 and calls < 12  # combined into fewer generate calls
    assert metric(m1, "hllm_serving_generated_tokens_total", model="creative") > 0


def test_sampling_settings_are_kept_apart_and_seeded(server, serving_stack):
    u = next(iter(serving_stack["users"]))
    inst = {"user_history": serving_stack["users"][u], "ad": AD, "do_sample": True, "seed": 7, "temperature": 1.2,
            "max_new_tokens": 12}

    def ask():
        r = httpx.post(f"{server.url}/v1/models/creative:predict", json={"instances": [inst]}, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()["predictions"][0]

    a, b = ask(), ask()
    check_prediction(a, AD)
    assert a["candidate"] == b["candidate"]  # same seed, same sampled title


@pytest.mark.parametrize("body, headers, needle", [
    (json.dumps({"instances": [{"user_history": [], "ad": {"title": "x" * (1 << 20)}}]}), None, "ad.title"),
    (b'{"instances": [{"user_history": [], "ad": {"title": "t"}, "temperature": NaN}]}', None, "Unrecognized"),
    (json.dumps({"instances": [{"user_history": [], "ad": {"title": "t"}, "temperature": 1e309}]}), None, ""),
    (json.dumps({"instances": [{"user_history": ["a"] * 10_000, "ad": AD}]}), None, "user_history"),
    (json.dumps({"instances": [{"user_history": [], "ad": {"title": "t"}, "max_new_tokens": 100000}]}), None,
     "max_new_tokens"),
    (json.dumps({"instances": [{"user_history": []}]}), None, "ad: Field required"),
    (json.dumps({"instances": []}), None, "empty list"),
    (b"{{{", None, "Unrecognized"),
    (json.dumps({"instances": [{"user_history": [], "ad": AD}]}), {"content-type": "text/plain"}, "Content-Type"),
])
def test_bad_bodies_400_then_good_answer(server, serving_stack, body, headers, needle):
    r = httpx.post(f"{server.url}/v1/models/creative:predict", content=body,
                   headers=headers or {"content-type": "application/json"}, timeout=60)
    assert r.status_code == 400, r.text[:300]
    assert needle in r.json()["error"]
    u = next(iter(serving_stack["users"]))
    r = httpx.post(f"{server.url}/v1/models/creative:predict", timeout=120,
                   json={"instances": [{"user_history": serving_stack["users"][u], "ad": AD, "max_new_tokens": 4}]})
    assert r.status_code == 200
    check_prediction(r.json()["predictions"][0], AD)


def test_title_gain_is_the_endpoints_do_no_harm_estimate():
    """``title_gain`` (what the endpoint's ``do_no_harm`` compares with 0): finite, different per user
    for a personalized title, exactly 0 for the original itself."""
    import numpy as np

    from hllm_creator.infer.harm import title_gain
    from hllm_creator.model.config import ModelConfig
    from hllm_creator.model.hllm import HLLMCreator

    model = HLLMCreator.from_config(ModelConfig(item_llm="tiny-llama", user_llm="tiny-llama",
                                                creative_llm="tiny-llama"), seed=0).eval()
    ad = {"title": "Glue Stick", "description": "Dries clear. Acid free.", "selling_points": [],
          "categories": ["Adhesives"]}
    rng = np.random.default_rng(0)
    gains = [title_gain(model, rng.normal(size=model.user_hidden_size).astype("float32"), ad,
                        "Glue Stick - Dries clear") for _ in range(8)]
    assert all(np.isfinite(gains)) and len({round(g, 6) for g in gains}) > 1  # it depends on the user
    assert title_gain(model, np.zeros(model.user_hidden_size, dtype="float32"), ad, "Glue Stick") == 0.0


def test_title_content_gain_is_the_endpoints_second_estimate():
    """``title_content_gain`` (the endpoint's second do-no-harm estimate): the Item LLM's cosine of the
    candidate to a user's clicked items minus the original's; opposite audiences get opposite signs,
    the original itself exactly 0."""
    import numpy as np

    from hllm_creator.data.text import item_text
    from hllm_creator.infer.harm import HARM_MAX_TOKENS, title_content_gain
    from hllm_creator.model.config import ModelConfig
    from hllm_creator.model.hllm import HLLMCreator

    model = HLLMCreator.from_config(ModelConfig(item_llm="tiny-llama", user_llm="tiny-llama",
                                                creative_llm="tiny-llama"), seed=0).eval()
    ad = {"title": "Glue Stick", "description": "Dries clear. Acid free.", "selling_points": [],
          "categories": ["Adhesives"]}
    model.cfg.item_max_tokens, keep = max(model.cfg.item_max_tokens, HARM_MAX_TOKENS), model.cfg.item_max_tokens
    try:
        e = model.encode_items([item_text({"title": t}) for t in ("Glue Stick - Dries clear", "Glue Stick")])
    finally:
        model.cfg.item_max_tokens = keep
    e = e.float().numpy()
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    toward = (e[0] - e[1]) / np.linalg.norm(e[0] - e[1])  # an audience whose clicks lie toward the fact
    g = title_content_gain(model, toward, ad, "Glue Stick - Dries clear")
    assert g > 0 and title_content_gain(model, -toward, ad, "Glue Stick - Dries clear") == pytest.approx(-g)
    assert title_content_gain(model, toward, ad, "Glue Stick") == 0.0
