"""Request/response models and limits for the ``creative`` and ``predictor`` KServe models.

Both models accept the same envelopes:

- v1: ``POST /v1/models/<name>:predict`` with ``{"instances": [<instance>, ...]}`` -> ``{"predictions": [...]}``.
- v2: ``POST /v2/models/<name>/infer`` with one ``BYTES`` input whose elements are JSON-encoded
  instances -> one ``BYTES`` output ``predictions`` whose elements are JSON-encoded predictions.

Every way a body can be wrong ends in :class:`kserve.errors.InvalidInput` (HTTP 400) with a message
that names the field (``instances[3].user_history: ...``); nothing here raises anything else.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

# ---- limits (documented in docs/serving.md) ---------------------------------------------------
MAX_INSTANCES = 64            # instances per request
MAX_HISTORY = 1000            # longer histories are rejected (400)
HISTORY_KEPT = 50             # the last 50 items are used (the User LLM's window)
MAX_ITEM_CHARS = 1000         # one history entry (an item id or a title)
MAX_TITLE_CHARS = 512         # ad title
MAX_DESCRIPTION_CHARS = 8000  # ad description
MAX_SELLING_POINTS = 20
MAX_SELLING_POINT_CHARS = 500
MAX_CANDIDATES = 200          # candidate_ad_ids per predictor instance
MAX_ID_CHARS = 128
MAX_NEW_TOKENS = 64
MAX_BODY_BYTES = 8 * 1024 * 1024  # larger bodies get 413 before they are parsed

# an entry "looks like an id" (and is reported as an unknown id when not in the catalog) when it
# is one token with a digit in it, e.g. B00HHFJDYQ; anything else is read as an item title.
_ID_LIKE = re.compile(r"^(?=.*\d)[A-Za-z0-9_\-.:]{1,128}$")


class InvalidRequest(ValueError):
    """A bad request body; converted to kserve InvalidInput (400) at the model boundary."""


def looks_like_id(s: str) -> bool:
    return bool(_ID_LIKE.match(s))


def _check_text(v: str) -> str:
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("string is not valid UTF-8 (lone surrogate)") from None
    return v


HistoryEntry = StrictStr | StrictInt


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class AdIn(_Strict):
    title: Annotated[StrictStr, Field(min_length=1, max_length=MAX_TITLE_CHARS)]
    description: Annotated[StrictStr, Field(max_length=MAX_DESCRIPTION_CHARS)] = ""
    selling_points: Annotated[
        list[Annotated[StrictStr, Field(max_length=MAX_SELLING_POINT_CHARS)]],
        Field(max_length=MAX_SELLING_POINTS),
    ] = []
    brand: Annotated[StrictStr, Field(max_length=MAX_TITLE_CHARS)] | None = None

    @field_validator("title")
    @classmethod
    def _title(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("title is blank")
        return _check_text(v)

    @field_validator("description", "brand")
    @classmethod
    def _text(cls, v):
        return v if v is None else _check_text(v)

    @field_validator("selling_points")
    @classmethod
    def _sp(cls, v: list[str]) -> list[str]:
        return [_check_text(s) for s in v]


def _history(v: list) -> list[str]:
    out = []
    for i, e in enumerate(v):
        s = str(e).strip()
        if len(s) > MAX_ITEM_CHARS:
            raise ValueError(f"entry {i} has {len(s)} characters, at most {MAX_ITEM_CHARS} allowed")
        _check_text(s)
        if s:
            out.append(s)
    return out


History = Annotated[list[HistoryEntry], Field(max_length=MAX_HISTORY)]


class CreativeInstance(_Strict):
    """One creative request: a user's history (oldest first) and the ad to personalize."""

    user_history: History = []
    ad: AdIn
    # "cluster": condition on the nearest cluster centroid (the paper's offline path; one title per
    # cluster); "user": condition on the user's own embedding.
    condition_on: Literal["cluster", "user"] = "cluster"
    do_sample: StrictBool = False
    temperature: Annotated[StrictFloat | StrictInt, Field(gt=0, le=5)] = 0.8
    top_p: Annotated[StrictFloat | StrictInt, Field(gt=0, le=1)] = 0.95
    # a title within the 150-character budget is about 40 tokens
    max_new_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_NEW_TOKENS)] = MAX_NEW_TOKENS
    seed: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] | None = None
    # do no harm: the personalized title only where the Item-User predictor rates a click by this user
    # at least as likely with it as with the original and the Item LLM puts it at least as close to the
    # user's clicked items (else the original, with the reason)
    do_no_harm: StrictBool = True

    @field_validator("user_history")
    @classmethod
    def _h(cls, v):
        return _history(v)


class PredictorInstance(_Strict):
    """One predictor request: a user's history and the candidate ads to score."""

    user_history: History = []
    candidate_ad_ids: Annotated[
        list[Annotated[StrictStr | StrictInt, Field()]], Field(min_length=1, max_length=MAX_CANDIDATES)
    ]
    score_with: Literal["cluster", "user"] = "cluster"
    # the user's id: assigns the A/B variant when the server runs an experiment (--experiment) and
    # is written with each exposure; optional otherwise
    user_id: Annotated[StrictStr | StrictInt, Field()] | None = None

    @field_validator("user_id")
    @classmethod
    def _uid(cls, v):
        if v is None:
            return v
        s = str(v).strip()
        if not s or len(s) > MAX_ID_CHARS:
            raise ValueError(f"must be a non-empty id of at most {MAX_ID_CHARS} characters")
        return _check_text(s)

    @field_validator("user_history")
    @classmethod
    def _h(cls, v):
        return _history(v)

    @field_validator("candidate_ad_ids")
    @classmethod
    def _ids(cls, v):
        out = []
        for i, e in enumerate(v):
            s = str(e).strip()
            if not s or len(s) > MAX_ID_CHARS:
                raise ValueError(f"entry {i} must be a non-empty id of at most {MAX_ID_CHARS} characters")
            out.append(_check_text(s))
        return out


# ---- responses (documented; built as dicts) ---------------------------------------------------
class CreativePrediction(BaseModel):
    title: str
    original_title: str
    cluster_id: int | None
    grounded: bool
    personalized: bool
    reasons: list[str]
    history_used: int
    candidate: str | None = None  # the cleaned model output before the grounding check
    # do no harm: the predictor's log-odds of a click by this user with the candidate minus with the
    # original (served only when >= 0); absent when not computed
    harm_gain: float | None = None
    # do no harm: the Item LLM's cosine of the candidate to this user's clicked items minus the original's
    content_gain: float | None = None


class AdScore(BaseModel):
    ad_id: str
    score: float | None
    original_title: str | None
    title: str | None
    personalized: bool
    reasons: list[str]


class PredictorPrediction(BaseModel):
    cluster_id: int | None
    history_used: int
    ads: list[AdScore]
    reasons: list[str]
    variant: str | None = None  # "personalized" | "control" under an A/B experiment (with user_id)


class FeedbackEvent(_Strict):
    """A click on an exposure the predictor answered (``exposure_id`` from its ``ads[*]``)."""

    exposure_id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_CHARS)]
    event: Literal["click"] = "click"
    user_id: Annotated[StrictStr | StrictInt, Field()] | None = None
    ad_id: Annotated[StrictStr | StrictInt, Field()] | None = None
    ts: Annotated[StrictFloat | StrictInt, Field(ge=0)] | None = None


class FeedbackRequest(_Strict):
    events: Annotated[list[FeedbackEvent], Field(min_length=1, max_length=1000)]


# ---- parsing -----------------------------------------------------------------------------------
def _fmt_loc(prefix: str, loc: tuple) -> str:
    out = prefix
    for p in loc:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p in ("str", "int", "float", "bool", "list", "constrained-str", "function-after"):
            continue  # union-branch tags: not a field
        else:
            out += f".{p}" if out else str(p)
    return out


def format_validation_error(e: ValidationError, prefix: str) -> str:
    msgs = []
    seen = set()
    for err in e.errors(include_url=False)[:10]:
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (p.startswith("function-") or "[" in p)))
        where = _fmt_loc(prefix, loc)
        msg = err["msg"]
        key = (where, msg)
        if key in seen:
            continue
        seen.add(key)
        msgs.append(f"{where}: {msg}")
    return "; ".join(msgs)


def _check_finite(obj: Any, path: str = "") -> None:
    """NaN/Infinity never come from orjson; Python's json (FastAPI's v2 body) lets them through."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise InvalidRequest(f"{path or 'body'}: NaN and infinities are not allowed")


def parse_instances(model_cls: type[BaseModel], raw: list, prefix: str = "instances") -> list:
    if not isinstance(raw, list):
        raise InvalidRequest(f"{prefix}: expected a list of instances, got {type(raw).__name__}")
    if not raw:
        raise InvalidRequest(f"{prefix}: empty list; send 1 to {MAX_INSTANCES} instances")
    if len(raw) > MAX_INSTANCES:
        raise InvalidRequest(f"{prefix}: {len(raw)} instances, at most {MAX_INSTANCES} per request")
    out = []
    for i, inst in enumerate(raw):
        if not isinstance(inst, dict):
            raise InvalidRequest(f"{prefix}[{i}]: expected a JSON object, got {type(inst).__name__}")
        try:
            out.append(model_cls.model_validate(inst))
        except ValidationError as e:
            raise InvalidRequest(format_validation_error(e, f"{prefix}[{i}]")) from None
        except (ValueError, TypeError) as e:  # a validator's own error outside pydantic's wrapping
            raise InvalidRequest(f"{prefix}[{i}]: {e}") from None
    return out


def parse_v1(payload: Any, model_cls: type[BaseModel]) -> list:
    """A decoded v1 body (dict) -> typed instances. Raw bytes mean KServe did not parse it as JSON."""
    if isinstance(payload, (bytes, bytearray, str)):
        raise InvalidRequest("the body must be JSON sent with Content-Type: application/json "
                             '({"instances": [...]})')
    if not isinstance(payload, dict):
        raise InvalidRequest(f"body: expected a JSON object with 'instances', got {type(payload).__name__}")
    unknown = set(payload) - {"instances", "parameters", "id"}
    if unknown:
        raise InvalidRequest(f"body: unknown keys {sorted(unknown)}; expected 'instances'")
    if "instances" not in payload:
        raise InvalidRequest("body: missing 'instances' (a list of request objects)")
    return parse_instances(model_cls, payload["instances"])


def parse_v2(infer_request: Any, model_cls: type[BaseModel]) -> list:
    """A kserve InferRequest with one BYTES input of JSON-encoded instances -> typed instances."""
    inputs = list(getattr(infer_request, "inputs", None) or [])
    if len(inputs) != 1:
        raise InvalidRequest(f"inputs: expected exactly 1 input (BYTES, JSON-encoded instances), got {len(inputs)}")
    inp = inputs[0]
    if inp.datatype != "BYTES":
        raise InvalidRequest(f"inputs[0].datatype: expected BYTES (JSON-encoded instances), got {inp.datatype}")
    raw = getattr(inp, "_raw_data", None)
    if raw is not None:
        from kserve.protocol.infer_type import deserialize_bytes_tensor

        try:
            elems = list(deserialize_bytes_tensor(raw))
        except Exception as e:  # noqa: BLE001 - struct errors on truncated binary data
            raise InvalidRequest(f"inputs[0]: malformed binary BYTES tensor ({e})") from None
    else:
        elems = inp.data if isinstance(inp.data, list) else [inp.data]
    flat: list = []

    def _flatten(x):
        if isinstance(x, list):
            for y in x:
                _flatten(y)
        else:
            flat.append(x)

    _flatten(elems)
    if not flat:
        raise InvalidRequest(f"inputs[0].data: empty; send 1 to {MAX_INSTANCES} JSON-encoded instances")
    if len(flat) > MAX_INSTANCES:
        raise InvalidRequest(f"inputs[0].data: {len(flat)} instances, at most {MAX_INSTANCES} per request")
    decoded = []
    for i, e in enumerate(flat):
        if isinstance(e, dict):  # a client that sent the object itself rather than its JSON text
            decoded.append(e)
            continue
        if isinstance(e, (bytes, bytearray)):
            try:
                e = bytes(e).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(f"inputs[0].data[{i}]: not UTF-8") from None
        if not isinstance(e, str):
            _check_finite(e, f"inputs[0].data[{i}]")
            raise InvalidRequest(f"inputs[0].data[{i}]: expected a JSON-encoded instance (string), "
                                 f"got {type(e).__name__}")
        try:
            decoded.append(orjson.loads(e))
        except orjson.JSONDecodeError as ex:
            raise InvalidRequest(f"inputs[0].data[{i}]: not valid JSON ({ex})") from None
    return parse_instances(model_cls, decoded, prefix="inputs[0].data")
