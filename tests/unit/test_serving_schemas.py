"""Request parsing and limits of the creative/predictor models (no server: the same functions the
models call; the HTTP path is covered in tests/integration/test_serving_*.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hllm_creator.serving import schemas as S
from hllm_creator.serving.schemas import (
    CreativeInstance,
    InvalidRequest,
    PredictorInstance,
    parse_v1,
    parse_v2,
)

GOOD_P = {"user_history": ["B00ABC1234", "Gorilla Tape"], "candidate_ad_ids": ["112", 7]}
GOOD_C = {"user_history": ["Gorilla Tape"], "ad": {"title": "Duct Tape, 2 Pack", "selling_points": ["strong"]}}


def err(payload, cls=PredictorInstance) -> str:
    with pytest.raises(InvalidRequest) as e:
        parse_v1(payload, cls)
    return str(e.value)


def test_good_instances_are_typed():
    (p,) = parse_v1({"instances": [GOOD_P]}, PredictorInstance)
    assert p.user_history == ["B00ABC1234", "Gorilla Tape"]
    assert p.candidate_ad_ids == ["112", "7"]  # ints accepted as ids, as strings
    assert p.score_with == "cluster"
    (c,) = parse_v1({"instances": [GOOD_C]}, CreativeInstance)
    assert c.ad.title == "Duct Tape, 2 Pack" and c.ad.description == "" and c.condition_on == "cluster"


@pytest.mark.parametrize("payload, needle", [
    ({"instances": []}, "empty list"),
    ({"instances": [GOOD_P] * (S.MAX_INSTANCES + 1)}, f"at most {S.MAX_INSTANCES}"),
    ({"instances": {"a": 1}}, "expected a list"),
    ({}, "missing 'instances'"),
    ({"instances": [GOOD_P], "extra": 1}, "unknown keys"),
    ([GOOD_P], "expected a JSON object"),
    (b"not json", "Content-Type: application/json"),
    ({"instances": ["x"]}, "instances[0]: expected a JSON object"),
    ({"instances": [{**GOOD_P, "user_history": "B00ABC1234"}]}, "instances[0].user_history"),
    ({"instances": [{**GOOD_P, "user_history": [True]}]}, "instances[0].user_history[0]"),
    ({"instances": [{**GOOD_P, "user_history": [1.5]}]}, "instances[0].user_history[0]"),
    ({"instances": [{**GOOD_P, "user_history": ["x"] * 10_000}]}, "at most 1000"),
    ({"instances": [{**GOOD_P, "user_history": ["x" * 1_000_001]}]}, "at most 1000 allowed"),
    ({"instances": [{**GOOD_P, "candidate_ad_ids": []}]}, "candidate_ad_ids"),
    ({"instances": [{**GOOD_P, "candidate_ad_ids": ["a"] * 201}]}, "candidate_ad_ids"),
    ({"instances": [{**GOOD_P, "candidate_ad_ids": [""]}]}, "non-empty id"),
    ({"instances": [{**GOOD_P, "candidate_ad_ids": [None]}]}, "candidate_ad_ids[0]"),
    ({"instances": [{**GOOD_P, "score_with": "magic"}]}, "score_with"),
    ({"instances": [{**GOOD_P, "user_history": ["\ud800"]}]}, "lone surrogate"),
    ({"instances": [{"user_history": []}]}, "candidate_ad_ids: Field required"),
])
def test_bad_predictor_bodies_say_what_is_wrong(payload, needle):
    assert needle in err(payload)


@pytest.mark.parametrize("inst, needle", [
    ({**GOOD_C, "ad": {"title": "x" * (1 << 20)}}, "instances[0].ad.title"),
    ({**GOOD_C, "ad": {"title": "   "}}, "title is blank"),
    ({**GOOD_C, "ad": {"title": "t", "selling_points": ["s"] * 21}}, "selling_points"),
    ({**GOOD_C, "ad": {"title": "t", "description": 3}}, "ad.description"),
    ({**GOOD_C, "ad": "Duct tape"}, "instances[0].ad"),
    ({**GOOD_C, "temperature": float("nan")}, "temperature"),
    ({**GOOD_C, "temperature": float("inf")}, "temperature"),
    ({**GOOD_C, "top_p": 2}, "top_p"),
    ({**GOOD_C, "max_new_tokens": 10_000}, "max_new_tokens"),
    ({**GOOD_C, "seed": -1}, "seed"),
    ({**GOOD_C, "unknown": 1}, "Extra inputs are not permitted"),
])
def test_bad_creative_instances(inst, needle):
    assert needle in err({"instances": [inst]}, CreativeInstance)


def test_ids_and_titles_are_told_apart():
    assert S.looks_like_id("B00HHFJDYQ") and S.looks_like_id("112")
    assert not S.looks_like_id("Gorilla Tape") and not S.looks_like_id("Scissors")


def _v2(data, datatype="BYTES", n=1):
    from kserve.protocol.infer_type import InferInput, InferRequest

    inputs = [InferInput(name=f"in{i}", shape=[len(data)], datatype=datatype, data=data) for i in range(n)]
    return InferRequest(model_name="predictor", infer_inputs=inputs)


def test_v2_bytes_input_of_json_instances():
    import json

    (p,) = parse_v2(_v2([json.dumps(GOOD_P)]), PredictorInstance)
    assert p.candidate_ad_ids == ["112", "7"]
    # binary tensor (what InferenceRESTClient sends for a numpy object array with binary_data=True)
    from kserve.protocol.infer_type import InferInput, InferRequest

    inp = InferInput(name="instances", shape=[2], datatype="BYTES")
    inp.set_data_from_numpy(np.array([json.dumps(GOOD_P), json.dumps(GOOD_P)], dtype=object), binary_data=True)
    req = InferRequest(model_name="predictor", infer_inputs=[inp])
    body, json_len = req.to_rest()
    back = InferRequest.from_bytes(body, json_len, "predictor") if json_len else req
    assert len(parse_v2(back, PredictorInstance)) == 2


@pytest.mark.parametrize("req, needle", [
    (lambda: _v2([1.0], datatype="FP32"), "expected BYTES"),
    (lambda: _v2(['{"a":'], datatype="BYTES"), "not valid JSON"),
    (lambda: _v2(["[1]"], datatype="BYTES"), "expected a JSON object"),
    (lambda: _v2([], datatype="BYTES"), "empty"),
    (lambda: _v2(["{}"], n=2), "exactly 1 input"),
    (lambda: _v2(['{"user_history": NaN, "candidate_ad_ids": ["1"]}']), "not valid JSON"),
])
def test_bad_v2_requests(req, needle):
    with pytest.raises(InvalidRequest) as e:
        parse_v2(req(), PredictorInstance)
    assert needle in str(e.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(
        st.sampled_from(["user_history", "candidate_ad_ids", "ad", "title", "description", "score_with",
                         "instances", "selling_points", "temperature", "x"]), c, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=json_values | st.fixed_dictionaries({"instances": st.lists(json_values, max_size=3)}))
def test_any_body_parses_or_raises_invalid_request(body):
    for cls in (PredictorInstance, CreativeInstance):
        try:
            out = parse_v1(body, cls)
        except InvalidRequest as e:
            assert str(e)  # says something
        else:
            assert 1 <= len(out) <= S.MAX_INSTANCES and all(isinstance(o, cls) for o in out)
