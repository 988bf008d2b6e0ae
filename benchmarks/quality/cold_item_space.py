"""Does the Item LLM's own text space find a new ad's audience better than TF-IDF? (issue 27)

This runs on ``quality.cold_start``'s split, with the same held-out ads, users and targets. Nothing
is trained. The frozen backbone (``--backbone``, default the cpu preset's Item LLM, SmolLM2-135M)
reads each item's text (``--max-tokens`` 128, as the preset) and stops at each of ``--layers``
(the preset keeps 2). Each layer's hidden states are pooled over the text's tokens in two ways:
the plain mean, and a mean weighted by IDF (the token ids' IDF over the training catalog). The
pooled vectors are then standardized over the catalog. A variant ranks users the way ``item_knn``
does with TF-IDF: the clickers of the ad's ``--knn`` nearest training items, each neighbour
weighted by its cosine cubed.

1. **The pick uses TRAINING items only.** ``--val-items`` items with >= 5 clicks are each scored as
   a new ad (its neighbours never include itself; the target is its clickers). The variant whose
   z-scored sum with TF-IDF item-kNN has the best Recall@100 there is picked.
2. **On the held-out ads**: each variant alone minus ``item_knn`` (paired bootstrap CI), and
   ``content_fusion`` + the picked variant (weight cross-fitted, ``cold_start.cross_fit_fusion``)
   minus ``content_fusion``.

The figures are in docs/train.md ("Cold start"). About 4 min on 2 cores for layers up to 8.

    python -m benchmarks.quality.cold_item_space [--data D] [--work W] [--layers 2,4,6,8]
        [--out benchmarks/results/cold_item_space.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks._common import RECORDED, ROOT
from benchmarks.quality import cold_start as C


def token_ids(tokenizer, texts: list[str], max_tokens: int) -> list[list[int]]:
    """Each text's token ids as the Item LLM reads them (``collate.encode_text``; no special tokens)."""
    from hllm_creator.model.collate import encode_text

    return [encode_text(tokenizer, t, max_tokens) or [tokenizer.eos_token_id] for t in texts]


def idf_of(ids: list[list[int]]) -> dict[int, float]:
    """Smoothed IDF of each token id over ``ids`` (one document per item): log((1+N)/(1+df)) + 1."""
    n, df = len(ids), {}
    for row in ids:
        for t in set(row):
            df[t] = df.get(t, 0) + 1
    return {t: math.log((1 + n) / (1 + d)) + 1 for t, d in df.items()}


def pooled_layers(backbone: str, ids: list[list[int]], layers: list[int], idf: dict[int, float], *,
                  batch_size: int = 32, progress: bool = True) -> dict[str, np.ndarray]:
    """The frozen backbone's hidden states after each of ``layers`` (1 = the first decoder layer),
    pooled over each row's tokens: ``L<n>_mean`` and ``L<n>_idf`` (IDF-weighted; unseen tokens weigh
    as the rarest) -> [n_rows, hidden] float32 each."""
    import torch
    from tqdm.auto import tqdm

    from hllm_creator.llm.backbone import load_causal_lm, truncate_layers

    lm = load_causal_lm(backbone).model
    # one layer past the deepest read, so that no read layer is the one the final norm follows
    truncate_layers(lm, min(max(layers) + 1, lm.config.num_hidden_layers))
    top = max(idf.values()) if idf else 1.0
    out = {f"L{L}_{w}": np.zeros((len(ids), lm.config.hidden_size), np.float32) for L in layers
           for w in ("mean", "idf")}
    order = np.argsort([len(r) for r in ids], kind="stable")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for s in tqdm(range(0, len(ids), batch_size), desc="encode items", disable=not progress):
            rows = order[s:s + batch_size]
            T = max(len(ids[i]) for i in rows)
            x = torch.zeros((len(rows), T), dtype=torch.long)  # right padded; the mask hides it
            m = torch.zeros((len(rows), T))
            w = torch.zeros((len(rows), T))
            for j, i in enumerate(rows):
                x[j, :len(ids[i])] = torch.tensor(ids[i])
                m[j, :len(ids[i])] = 1.0
                w[j, :len(ids[i])] = torch.tensor([idf.get(t, top) for t in ids[i]])
            hs = lm.model(input_ids=x, attention_mask=m.long(), output_hidden_states=True).hidden_states
            for L in layers:
                h = hs[L].float()
                out[f"L{L}_mean"][rows] = ((h * m[..., None]).sum(1) / m.sum(1, keepdim=True)).numpy()
                out[f"L{L}_idf"][rows] = ((h * w[..., None]).sum(1) / w.sum(1, keepdim=True)).numpy()
    return out


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def standardized(vecs: np.ndarray, n_catalog: int) -> np.ndarray:
    """Rows standardized by the catalog rows' (the first ``n_catalog``) mean and sd, then unit length."""
    mu, sd = vecs[:n_catalog].mean(0), vecs[:n_catalog].std(0) + 1e-6
    return unit_rows((vecs - mu) / sd)


def run(a) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from hllm_creator.data.text import item_text
    from hllm_creator.llm.backbone import load_tokenizer
    from hllm_creator.stats import bootstrap_ci

    data = a.data or C.default_data()
    work = Path(a.work or ROOT / f".hllm/cold_start/seed{a.seed}")
    split = C.prepare_split(data, work, share=a.share, min_clicks=a.min_clicks, seed=a.seed, teacher=None)
    ev = C.eval_setup(data, work, split, a.seed)
    t0 = time.time()
    cat_texts = [item_text(r) for r in ev.catalog.to_dict("records")]
    tok = load_tokenizer(a.backbone)
    ids = token_ids(tok, cat_texts + ev.ad_texts, a.max_tokens)
    n_cat = len(cat_texts)
    vecs = pooled_layers(a.backbone, ids, a.layers, idf_of(ids[:n_cat]), progress=not a.quiet)
    encode_s = time.time() - t0
    clicked = C.click_matrix(ev.hrows, n_cat)

    # 1. the pick, on training items scored as new ads (never their own neighbour)
    pop = np.asarray(clicked.sum(0)).ravel()
    rng = np.random.default_rng([a.seed, 31])
    val = np.sort(rng.choice(np.where(pop >= 5)[0], size=min(a.val_items, int((pop >= 5).sum())), replace=False))
    val_targets = [clicked[:, [i]].nonzero()[0] for i in val]

    def recall(scores, targets):
        return C.audience_metrics(C.top_users(scores, ev.tiebreak, C.K_USERS), targets)[f"recall@{C.K_USERS}"]

    def no_self(sim):
        sim = sim.copy()
        sim[np.arange(len(val)), val] = -np.inf
        return sim

    vec = TfidfVectorizer(sublinear_tf=True, stop_words="english", min_df=2).fit(cat_texts)
    X = vec.transform(cat_texts)
    tf_val = C.neighbour_scores(no_self((X[val] @ X.T).toarray()), clicked, a.knn)
    tf_val_r = float(recall(tf_val, val_targets).mean())
    res = {"protocol": __doc__.split("\n\n")[1].replace("\n", " "), "data": str(data), "work": str(work),
           "backbone": a.backbone, "max_tokens": a.max_tokens, "knn_llm": a.llm_knn, "knn_tfidf": a.knn,
           "n_val_items": int(len(val)), "n_ads": len(ev.ad_ids), "n_users": len(ev.users),
           "encode_seconds": round(encode_s, 1), "val_tfidf_item_knn_recall@100": tf_val_r, "variants": {}}
    ref = {f"recall@{C.K_USERS}": recall(ev.scores["item_knn"], ev.targets)}
    test_scores = {}
    for name, v in vecs.items():
        z = standardized(v, n_cat)
        llm_val = C.neighbour_scores(no_self(z[val] @ z[:n_cat].T), clicked, a.llm_knn, power=3.0)
        fused = {w: float(recall(C.zscore_rows(tf_val) + w * C.zscore_rows(llm_val), val_targets).mean())
                 for w in C.FUSION_GRID}
        best_w = max(fused, key=fused.get)
        test = test_scores[name] = C.neighbour_scores(z[n_cat:] @ z[:n_cat].T, clicked, a.llm_knn, power=3.0)
        r = bootstrap_ci({f"recall@{C.K_USERS}": recall(test, ev.targets)}, baseline=ref, n_boot=a.bootstrap,
                         seed=a.seed)[f"recall@{C.K_USERS}"]
        res["variants"][name] = {"val_alone": float(recall(llm_val, val_targets).mean()),
                                 "val_fused_with_tfidf_item_knn": fused[best_w], "val_gain": fused[best_w] - tf_val_r,
                                 "test_alone": r["mean"], "test_alone_ci": r["ci"],
                                 "test_minus_item_knn": r["diff"], "test_minus_item_knn_ci": r["diff_ci"]}
    pick = max(res["variants"], key=lambda n: res["variants"][n]["val_gain"])
    cf, w_cf = C.cross_fit_fusion(ev.scores["item_knn"], ev.scores["tfidf_user"], ev.targets, ev.tiebreak, a.seed)
    fz, w_f = C.cross_fit_fusion(cf, test_scores[pick], ev.targets, ev.tiebreak, a.seed)
    d = bootstrap_ci({f"recall@{C.K_USERS}": recall(fz, ev.targets)},
                     baseline={f"recall@{C.K_USERS}": recall(cf, ev.targets)}, n_boot=a.bootstrap,
                     seed=a.seed)[f"recall@{C.K_USERS}"]
    res["picked_on_training_items"] = pick
    res["content_fusion_plus_picked"] = {"recall@100": d["mean"], "ci": d["ci"], "minus_content_fusion": d["diff"],
                                         "minus_content_fusion_ci": d["diff_ci"],
                                         "weights": {"content_fusion": w_cf, "picked": w_f}}
    res["item_knn_recall@100"] = float(ref[f"recall@{C.K_USERS}"].mean())
    res["command"] = " ".join(["python -m benchmarks.quality.cold_item_space", *sys.argv[1:]])
    print_table(res)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(f"wrote {a.out}")
    return res


def print_table(res: dict) -> None:
    print(f"\nvalidation (training items as new ads): TF-IDF item-kNN {res['val_tfidf_item_knn_recall@100']:.4f}")
    print(f"{'variant':<10}{'val alone':>10}{'val gain':>10}{'held-out alone':>16}{'minus item_knn [95% CI]':>32}")
    for n, v in res["variants"].items():
        ci = v["test_minus_item_knn_ci"]
        print(f"{n:<10}{v['val_alone']:>10.4f}{v['val_gain']:>+10.4f}{v['test_alone']:>16.4f}"
              f"{v['test_minus_item_knn']:>+12.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]")
    f = res["content_fusion_plus_picked"]
    print(f"picked on training items: {res['picked_on_training_items']}; content_fusion + it on the held-out ads "
          f"{f['recall@100']:.4f}, minus content_fusion {f['minus_content_fusion']:+.4f} "
          f"[{f['minus_content_fusion_ci'][0]:+.4f}, {f['minus_content_fusion_ci'][1]:+.4f}]")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_split_args(ap)  # the split it reads: cold_start's
    ap.add_argument("--backbone", default="smollm2-135m-instruct", help="the Item LLM (bundled name or HF dir)")
    ap.add_argument("--layers", default="2,4,6,8", type=lambda s: sorted({int(x) for x in s.split(",")}),
                    help="decoder layers to read (comma-separated; 1 = the first)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--llm-knn", type=int, default=200, help="neighbours of an ad in the LLM space")
    ap.add_argument("--knn", type=int, default=50, help="neighbours of an ad by TF-IDF (as cold_start's item_knn)")
    ap.add_argument("--val-items", type=int, default=600, help="training items scored as new ads for the pick")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--out", default=str(RECORDED / "cold_item_space.json"))
    a = ap.parse_args(argv)
    if min(a.layers) < 1:
        ap.error(f"--layers: {a.layers}: layers count from 1 (the first decoder layer)")
    return run(a)


if __name__ == "__main__":
    main()
