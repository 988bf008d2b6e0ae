"""The hybrid predictor (ID vectors beside the LLM towers, ``model.predictor_ids``) served by the real
`predictor` KServe model over HTTP on 127.0.0.1: match's ``member_id_parts.npy`` in the artifacts, the
'cluster' path scores like match, the 'user' path with the caller's own clicks.

The stack is the session's tiny serving stack (tests/helpers.py) with its model given random ID vectors
over the catalog (a trained hybrid is what ``train --preset cpu`` writes; here only the plumbing is under
test) and the cluster parts computed by ``infer.match.member_id_parts``.
"""

from __future__ import annotations

import shutil

import httpx
import numpy as np
import pandas as pd
import pytest
import torch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hybrid_stack(serving_stack, tmp_path_factory):
    from hllm_creator.infer import cluster as cl
    from hllm_creator.infer.match import MEMBER_ID_PARTS, member_id_parts
    from hllm_creator.model import HLLMCreator

    root = tmp_path_factory.mktemp("hybrid")
    m = HLLMCreator.load(serving_stack["model_dir"])
    m.enable_item_ids(pd.read_parquet(serving_stack["items"])["item_id"].astype(str).tolist(), recent=4)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        m.predictor.id_in.weight[:-1].normal_(generator=g)
        m.predictor.id_out.weight[:-1].normal_(generator=g)
    m.save(root / "model")
    art = root / "artifacts"
    shutil.copytree(serving_stack["artifacts"], art)
    _, means, asg, _ = cl.load(art)
    parts = member_id_parts(m, asg, pd.Series(serving_stack["users"]), len(means))
    np.save(art / MEMBER_ID_PARTS, parts)
    return {"model_dir": root / "model", "artifacts": art, "model": m, "parts": parts, "means": means}


def test_hybrid_predictor_over_http_scores_clusters_like_match_and_users_by_their_clicks(
        serving_stack, hybrid_stack, tmp_path):
    from hllm_creator.data.text import item_text
    from hllm_creator.process import serve_process

    h, m = hybrid_stack, hybrid_stack["model"]
    ad, cid, _ = serving_stack["personalized"]
    u = next(u for u, c in serving_stack["assignments"].items() if c == cid)
    hist = serving_stack["users"][u]
    args = ["--model-dir", str(h["model_dir"]), "--artifacts", str(h["artifacts"]), "--items",
            serving_stack["items"], "--threads", "1"]
    body = {"instances": [{"user_history": hist, "candidate_ad_ids": [ad, "B0NOTANITEM"], "score_with": w}
                          for w in ("cluster", "user")]}
    with serve_process("predictor", args, timeout=300, log_dir=tmp_path) as srv:
        r = httpx.post(f"{srv.url}/v1/models/predictor:predict", json=body, timeout=120)
    assert r.status_code == 200, r.text
    pc, pu = r.json()["predictions"]
    assert pc["cluster_id"] == cid == pu["cluster_id"]
    items = pd.read_parquet(serving_stack["items"]).set_index("item_id", drop=False)
    with torch.no_grad():
        ad_emb = m.encode_items([item_text(items.loc[ad].to_dict())])
        want_cluster = m.score(torch.from_numpy(h["means"][[cid]]), ad_emb, item_index=m.item_index([ad]),
                               user_id_part=torch.from_numpy(h["parts"][[cid]]))
        ue = m.encode_users([m.encode_items([item_text(items.loc[x].to_dict()) for x in hist[-50:]])])
        want_user = m.score(ue, ad_emb, recent=m.recent_index([hist]), item_index=m.item_index([ad]))
        text_only = m.score(ue, ad_emb)
    assert pc["ads"][0]["score"] == pytest.approx(float(want_cluster[0, 0]), abs=1e-4)
    assert pu["ads"][0]["score"] == pytest.approx(float(want_user[0, 0]), abs=1e-4)
    assert abs(float(want_user[0, 0]) - float(text_only[0, 0])) > 1e-3  # the ID parts are in the served score
    assert pc["ads"][1]["score"] is None and pc["ads"][1]["personalized"] is False  # unknown ad: answered, unscored
