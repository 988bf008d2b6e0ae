"""The `predictor` KServe model over real HTTP on 127.0.0.1: KServe's own InferenceRESTClient (v1, v2)
and httpx; a corpus of bad requests and a hypothesis property test (never a 5xx, the server keeps
answering); metrics; readiness; loading from ``models:/hllm-creator@champion``.

The stack is real and tiny: an untrained tiny-llama HLLMCreator and inference outputs made by the
real infer steps on a slice of the bundled dataset (tests/helpers.py: tiny_serving_stack).
"""

from __future__ import annotations

import asyncio
import json
import math
import re

import httpx
import pytest
from helpers import metric
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(serving_stack, tmp_path_factory):
    """The predictor loaded from the registry: ``--model-uri models:/hllm-creator@champion`` (a real
    MLflow registry in a sqlite store of this module)."""
    import mlflow

    from hllm_creator import tracking
    from hllm_creator.process import serve_process

    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("HLLM_WORKDIR", str(root))
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        tracking.ensure_experiment()  # this store's experiment, not one a previous test selected
        with mlflow.start_run():
            tracking.register_model(serving_stack["model_dir"], aliases=("champion",))
        args = ["--model-uri", "models:/hllm-creator@champion", "--artifacts", serving_stack["artifacts"],
                "--items", serving_stack["items"], "--threads", "1"]
        with serve_process("predictor", args, timeout=300, log_dir=root) as h:
            yield h


def user_in_cluster(serving_stack, cid):
    return next(u for u, c in serving_stack["assignments"].items() if c == cid)


def v1(url, instances, timeout=60):
    return httpx.post(f"{url}/v1/models/predictor:predict", json={"instances": instances}, timeout=timeout)


def good_instance(serving_stack):
    ad, cid, _ = serving_stack["personalized"]
    u = user_in_cluster(serving_stack, cid)
    return {"user_history": serving_stack["users"][u], "candidate_ad_ids": [ad]}


def check_good_answer(url, serving_stack):
    ad, cid, title = serving_stack["personalized"]
    r = v1(url, [good_instance(serving_stack)])
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    assert p["cluster_id"] == cid and p["ads"][0]["title"] == title and p["ads"][0]["personalized"] is True


def test_readiness_and_metadata(server):
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{server.url}/v2/models/predictor/ready").status_code == 200
    assert httpx.get(f"{server.url}/v1/models/predictor").json() == {"name": "predictor", "ready": True}


def test_v1_kserve_client_matches_offline_outputs(server, serving_stack):
    import pandas as pd
    from kserve import InferenceRESTClient, RESTConfig

    matches = pd.read_parquet(f"{serving_stack['artifacts']}/matches.parquet")
    offline = {(r.item_id, int(r.cluster_id)): float(r.score) for r in matches.itertuples()}
    users = list(serving_stack["users"])[:6]
    ads = serving_stack["ads"][:5]
    body = {"instances": [{"user_history": serving_stack["users"][u], "candidate_ad_ids": ads} for u in users]}

    async def go():
        client = InferenceRESTClient(RESTConfig(protocol="v1", timeout=60))
        try:
            return await client.infer(server.url, body, model_name="predictor")
        finally:
            await client.close()

    preds = asyncio.run(go())["predictions"]
    assert len(preds) == len(users)
    for u, p in zip(users, preds):
        cid = serving_stack["assignments"][u]
        assert p["cluster_id"] == cid  # same metric as cluster_meta.json, same user embedding
        assert p["history_used"] == min(50, len(serving_stack["users"][u]))
        for a in p["ads"]:
            assert 0.0 <= a["score"] <= 1.0
            # scored with the cluster's slot vector: equals the offline (ad, cluster) score of match
            assert math.isclose(a["score"], offline[(a["ad_id"], cid)], abs_tol=1e-4)
            assert a["original_title"] == serving_stack["titles"][a["ad_id"]]
            if (a["ad_id"], cid) in set(serving_stack["selected"]):
                assert a["personalized"] or any("grounding" in x or "no pre-generated" in x for x in a["reasons"])
            else:
                assert not a["personalized"] and a["title"] == a["original_title"]
                assert any("not among the top clusters" in x for x in a["reasons"])


def test_v2_kserve_client_and_personalized_title(server, serving_stack):
    import numpy as np
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    ad, cid, title = serving_stack["personalized"]
    inst = good_instance(serving_stack)
    other = {"user_history": inst["user_history"], "candidate_ad_ids": [ad], "score_with": "user"}
    inp = InferInput(name="instances", shape=[2], datatype="BYTES")
    inp.set_data_from_numpy(np.array([json.dumps(inst), json.dumps(other)], dtype=object), binary_data=False)

    async def go():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
        try:
            return await client.infer(server.url, InferRequest(model_name="predictor", infer_inputs=[inp]),
                                      model_name="predictor")
        finally:
            await client.close()

    res = asyncio.run(go())
    out = res.outputs[0]
    assert out.name == "predictions" and out.datatype == "BYTES"
    p1, p2 = (json.loads(x) for x in out.data)
    assert p1["cluster_id"] == cid and p1["ads"][0] == p1["ads"][0] | {"title": title, "personalized": True}
    # scored with the user's own embedding: a different number, same cluster and title
    assert p2["cluster_id"] == cid and p2["ads"][0]["title"] == title
    assert p2["ads"][0]["score"] != p1["ads"][0]["score"]


def test_cold_start_unknown_ids_and_titles(server, serving_stack):
    ad = serving_stack["ads"][0]
    r = v1(server.url, [
        {"user_history": [], "candidate_ad_ids": [ad]},
        {"user_history": ["B0UNKNOWN99", "X77"], "candidate_ad_ids": [ad, "NOPE123"]},
        {"user_history": ["Gorilla Tape, Black Duct Tape", "B0UNKNOWN99"], "candidate_ad_ids": [ad]},
    ])
    assert r.status_code == 200, r.text
    cold, unknown, titles = r.json()["predictions"]
    for p in (cold, unknown):
        assert p["cluster_id"] is None and p["history_used"] == 0
        assert any("cold start" in x for x in p["reasons"])
        assert p["ads"][0]["title"] == serving_stack["titles"][ad] and not p["ads"][0]["personalized"]
    assert any("2 unknown item id" in x for x in unknown["reasons"])
    assert unknown["ads"][1] == {"ad_id": "NOPE123", "score": None, "original_title": None, "title": None,
                                 "personalized": False,
                                 "reasons": ["unknown ad id 'NOPE123': not in the item catalog"]}
    # free-text titles are embedded by the Item LLM: a real user embedding and cluster
    assert titles["history_used"] == 1 and titles["cluster_id"] in set(serving_stack["assignments"].values())


def bad_corpus(serving_stack):
    good = good_instance(serving_stack)
    big = "x" * (1 << 20)
    p = "/v1/models/predictor:predict"
    v2 = "/v2/models/predictor/infer"
    J = {"content-type": "application/json"}

    def v2body(data, datatype="BYTES"):
        return json.dumps({"inputs": [{"name": "instances", "shape": [len(data)], "datatype": datatype,
                                       "data": data}]})

    return [
        ("malformed json v1", p, J, b'{"instances": [{"user_history": ['),
        ("malformed json v2", v2, J, b'{"inputs": [}'),
        ("not utf-8", p, J, b'{"instances": ["\xff\xfe"]}'),
        ("json array", p, J, json.dumps([good])),
        ("instances not a list", p, J, json.dumps({"instances": good})),
        ("history is a string", p, J, json.dumps({"instances": [{**good, "user_history": "abc"}]})),
        ("history of numbers", p, J, json.dumps({"instances": [{**good, "user_history": [1.5, None]}]})),
        ("ids of objects", p, J, json.dumps({"instances": [{**good, "candidate_ad_ids": [{"a": 1}]}]})),
        ("10,000 item history", p, J, json.dumps({"instances": [{**good, "user_history": [f"B0X{i:05d}" for i in range(10_000)]}]})),
        ("1 MB history entry", p, J, json.dumps({"instances": [{**good, "user_history": [big]}]})),
        ("1 MB ad id", p, J, json.dumps({"instances": [{**good, "candidate_ad_ids": [big]}]})),
        ("NaN", p, J, b'{"instances": [{"user_history": [NaN], "candidate_ad_ids": ["1"]}]}'),
        ("Infinity", p, J, b'{"instances": [{"user_history": ["a"], "candidate_ad_ids": [Infinity]}]}'),
        ("NaN v2 element", v2, J, b'{"inputs": [{"name": "i", "shape": [1], "datatype": "BYTES", "data": [NaN]}]}'),
        ("empty instances", p, J, json.dumps({"instances": []})),
        ("too many instances", p, J, json.dumps({"instances": [good] * 65})),
        ("empty v2 data", v2, J, v2body([])),
        ("v2 FP32", v2, J, v2body([1.0, 2.0], "FP32")),
        ("v2 not json element", v2, J, v2body(["{nope"])),
        ("v2 missing inputs", v2, J, json.dumps({"id": "1"})),
        ("v2 wrong shape type", v2, J, json.dumps({"inputs": [{"name": "i", "shape": "x", "datatype": "BYTES", "data": []}]})),
        ("lone surrogate", p, J, b'{"instances": [{"user_history": ["\\ud800"], "candidate_ad_ids": ["1"]}]}'),
        ("text/plain", p, {"content-type": "text/plain"}, json.dumps({"instances": [good]})),
        ("form", p, {"content-type": "application/x-www-form-urlencoded"}, b"a=1&b=2"),
        ("xml", v2, {"content-type": "application/xml"}, b"<a/>"),
        ("no body", p, J, b""),
        ("9 MB body", p, J, json.dumps({"instances": [{**good, "user_history": ["y" * 900] * 10_000}]})),
    ]


def test_bad_request_corpus_never_5xx_and_server_keeps_serving(server, serving_stack):
    for name, path, headers, body in bad_corpus(serving_stack):
        r = httpx.post(f"{server.url}{path}", content=body, headers=headers, timeout=60)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:300])
        err = r.json()["error"]
        assert isinstance(err, str) and len(err) > 5, (name, err)
        check_good_answer(server.url, serving_stack)  # the next good request is answered correctly
    # unknown ids are not an error: 200 with reasons
    r = v1(server.url, [{"user_history": ["B0NOPE0001"], "candidate_ad_ids": ["B0NOPE0002"]}])
    assert r.status_code == 200 and r.json()["predictions"][0]["ads"][0]["title"] is None


def test_error_messages_name_the_field(server, serving_stack):
    good = good_instance(serving_stack)
    r = v1(server.url, [good, {**good, "user_history": ["a"] * 10_000}])
    assert r.status_code == 400
    assert re.search(r"instances\[1\]\.user_history: .*1000", r.json()["error"]), r.text
    r = httpx.post(f"{server.url}/v1/models/predictor:predict", content=b"{", timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "Unrecognized request format" in r.json()["error"]
    r = httpx.post(f"{server.url}/v2/models/predictor/infer", content=b"{", timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]


scalars = st.none() | st.booleans() | st.integers(-10, 10**12) | st.floats() | st.text(max_size=30)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=5) | st.dictionaries(
    st.sampled_from(["user_history", "candidate_ad_ids", "score_with", "instances", "x"]) | st.text(max_size=5),
    c, max_size=4), max_leaves=25)
instances = st.fixed_dictionaries(
    {"user_history": st.lists(st.text(max_size=40) | st.integers() | st.sampled_from(["112", "136", "39"]), max_size=8)
     | values,
     "candidate_ad_ids": st.lists(st.sampled_from(["112", "136", "39", "B0NOPE"]) | scalars, max_size=4) | values},
    optional={"score_with": st.sampled_from(["cluster", "user", "other"]) | scalars, "junk": values})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(body=st.one_of(values, st.fixed_dictionaries({"instances": st.lists(instances | values, max_size=3)})),
       raw=st.binary(max_size=64), protocol=st.sampled_from(["v1", "v2", "raw"]))
def test_property_any_body_never_5xx(server, body, raw, protocol):
    if protocol == "v1":
        r = httpx.post(f"{server.url}/v1/models/predictor:predict", content=json.dumps(body, allow_nan=True),
                       headers={"content-type": "application/json"}, timeout=60)
    elif protocol == "v2":
        data = body["instances"] if isinstance(body, dict) and isinstance(body.get("instances"), list) else [body]
        payload = {"inputs": [{"name": "instances", "shape": [len(data)], "datatype": "BYTES",
                               "data": [json.dumps(d, allow_nan=True) for d in data]}]}
        r = httpx.post(f"{server.url}/v2/models/predictor/infer", json=payload, timeout=60)
    else:
        r = httpx.post(f"{server.url}/v1/models/predictor:predict", content=raw,
                       headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        assert isinstance(r.json()["error"], str)


def test_after_the_storm_server_is_live_and_metrics_count(server, serving_stack):
    """After every kind of request (sent here as well, so the test holds in any order of the module's
    tests: pytest-randomly runs it first as often as last), the server is live and counts each kind."""
    check_good_answer(server.url, serving_stack)
    inst = good_instance(serving_stack)
    body = {"inputs": [{"name": "instances", "shape": [1], "datatype": "BYTES", "data": [json.dumps(inst)]}]}
    assert httpx.post(f"{server.url}/v2/models/predictor/infer", json=body, timeout=60).status_code == 200
    assert httpx.post(f"{server.url}/v1/models/predictor:predict", content=b"{{{",
                      headers={"content-type": "application/json"}, timeout=60).status_code == 400
    many = {"user_history": inst["user_history"], "candidate_ad_ids": list(serving_stack["ads"])}
    assert v1(server.url, [{"user_history": [], "candidate_ad_ids": [serving_stack["ads"][0]]}, many]).status_code == 200
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    text = httpx.get(f"{server.url}/metrics").text

    def value(name, **labels):
        return metric(text, name, **labels)

    assert value("hllm_serving_requests_total", model="predictor", protocol="v1") > 0
    assert value("hllm_serving_requests_total", model="predictor", protocol="v2") > 0
    assert value("hllm_serving_errors_total", model="predictor", kind="bad_request") > 0
    assert value("hllm_serving_errors_total", model="predictor", kind="internal") == 0
    assert value("hllm_serving_fallbacks_total", model="predictor", reason="cold_start") > 0
    assert value("hllm_serving_fallbacks_total", model="predictor", reason="not_selected") > 0
    assert "request_predict_seconds" in text  # KServe's own histograms next to ours


def test_concurrent_requests_are_batched(server, serving_stack):
    from kserve import InferenceRESTClient, RESTConfig

    users = list(serving_stack["users"])
    metrics0 = httpx.get(f"{server.url}/metrics").text

    def batch_stats(text):
        return (metric(text, "hllm_serving_batch_size_sum", model="predictor"),
                metric(text, "hllm_serving_batch_size_count", model="predictor"))

    async def go():
        client = InferenceRESTClient(RESTConfig(protocol="v1", timeout=60))
        try:
            reqs = [client.infer(server.url, {"instances": [{"user_history": serving_stack["users"][u],
                                                             "candidate_ad_ids": serving_stack["ads"][:3]}]},
                                 model_name="predictor") for u in users[:24]]
            return await asyncio.gather(*reqs)
        finally:
            await client.close()

    res = asyncio.run(go())
    for u, r in zip(users, res):
        assert r["predictions"][0]["cluster_id"] == serving_stack["assignments"][u]
    s0, c0 = batch_stats(metrics0)
    s1, c1 = batch_stats(httpx.get(f"{server.url}/metrics").text)
    assert s1 - s0 == 24 and c1 - c0 < 24  # 24 instances in fewer model passes
