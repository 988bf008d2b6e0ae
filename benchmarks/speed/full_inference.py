"""The industrial inference workflow at full scale, timed: embed ALL users -> cluster -> match ->
generate for N ads, each step through its real CLI (`hllm-creator embed|cluster|match|generate`).

The target: with a model from `hllm-creator train`, all 8,317 users of the bundled data, 20 ads,
within 15 minutes on the 2-core CPU (``--budget-s``). With `--teacher` (construct's train.parquet)
the personalization step runs too (`hllm-creator personalization`: copy rate, distinct titles per
ad, slot sensitivity, audience fit, each with a bootstrap 95% CI), and every SERVED title is
re-checked by an independent word check written here (not the gate): every word of the title is a
word of the ad's own text (title, description, selling points, brand, categories) up to a plural
"s", or one of a few connectives, and every number of the title is a whole number of the ad's text
(no "1" cut out of "1:1").

    .venv/bin/python -m benchmarks.speed.full_inference --model M [--teacher T/train.parquet] [--n-ads 20] [--k 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import dataset, save

CONNECTIVES = set("a an and or the for with of in on to by from at as plus - & | : , / w".split())


def foreign_words(title: str, item: dict) -> list[str]:
    """Words of ``title`` that are not words of the ad's own text (a plural "s"/"es" aside), nor a
    connective: the independent re-check of a served title (deliberately simpler than the gate)."""
    import re
    import unicodedata

    def words(t: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", unicodedata.normalize("NFKC", t or "").lower())

    src_parts = [item.get("title"), item.get("description"), item.get("brand")]
    for k in ("selling_points", "categories"):
        v = item.get(k)
        src_parts += list(v) if v is not None else []
    src = set(words(" ".join(str(x) for x in src_parts if x)))
    src |= {w[:-1] for w in src if w.endswith("s")} | {w[:-2] for w in src if w.endswith("es")}
    out = []
    for w in words(title):
        if w in CONNECTIVES or w in src or (w.endswith("s") and w[:-1] in src):
            continue
        out.append(w)
    return out


def cut_numbers(title: str, item: dict) -> list[str]:
    """Numbers of ``title`` (a run of digits joined by . , : / x -) that the ad's text does not hold as
    a whole number (the same run, not inside a longer one): "1" where the ad says "1:1". The
    independent re-check of a cut number (deliberately simpler than the gate)."""
    import re
    import unicodedata

    src_parts = [item.get("title"), item.get("description")]
    v = item.get("selling_points")
    src_parts += list(v) if v is not None else []
    src = unicodedata.normalize("NFKC", " ".join(str(x) for x in src_parts if x)).lower()
    run = r"\d+(?:\s*[.,:/x-]\s*\d+)*"
    out = []
    for m in re.finditer(run, unicodedata.normalize("NFKC", title).lower()):
        n = m.group(0)
        whole = [x.group(0) for x in re.finditer(run, src)]
        if n not in whole and re.sub(r"\s+", "", n) not in {re.sub(r"\s+", "", w) for w in whole}:
            out.append(n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model dir written by `hllm-creator train`")
    ap.add_argument("--data", help="dataset dir (default: bundled, prepared once)")
    ap.add_argument("--out", help="work dir (default: a temp dir)")
    ap.add_argument("--n-ads", type=int, default=20)
    ap.add_argument("--k", type=int, default=32, help="clusters")
    ap.add_argument("--top-k", type=int, default=3, help="clusters selected per ad")
    ap.add_argument("--budget-s", type=float, default=900.0, help="the target wall time (15 min)")
    ap.add_argument("--teacher", help="construct's train.parquet: also run the personalization evaluation")
    ap.add_argument("--judge-base-url", help="OpenAI-compatible judge for the cross-cluster GSB (optional)")
    ap.add_argument("--judge-samples", type=int, default=0)
    ap.add_argument("--judge-model", default="smollm2-135m-instruct")
    ap.add_argument("--swap-pairs", type=int, help="at most N pairs for the personalization step's greedy slot swap")
    a = ap.parse_args()

    import pandas as pd

    ds = dataset(a.data)
    out = Path(a.out or tempfile.mkdtemp(prefix="full_infer_"))
    exe = [str(Path(sys.executable).parent / "hllm-creator")]
    data = str(ds.path)
    steps = [
        ("embed", ["embed", "--model", a.model, "--data", data, "--out", str(out / "embed")]),
        ("cluster", ["cluster", "--embeddings", str(out / "embed"), "--out", str(out / "cluster"), "--k", str(a.k)]),
        ("match", ["match", "--model", a.model, "--data", data, "--clusters", str(out / "cluster"),
                   "--out", str(out / "match"), "--n-ads", str(a.n_ads), "--top-k", str(a.top_k)]),
        ("generate", ["generate", "--model", a.model, "--data", data, "--matches", str(out / "match"),
                      "--clusters", str(out / "cluster"), "--out", str(out / "generate"), "--bf16"]),
    ]
    if a.teacher:
        pers = ["personalization", "--model", a.model, "--data", data, "--clusters", str(out / "cluster"),
                "--matches", str(out / "match"), "--creatives", str(out / "generate"), "--train-set", a.teacher,
                "--out", str(out / "personalization"), "--max-ads", str(a.n_ads), "--bf16"]
        if a.swap_pairs:
            pers += ["--swap-pairs", str(a.swap_pairs)]
        if a.judge_base_url and a.judge_samples:
            pers += ["--base-url", a.judge_base_url, "--judge-model", a.judge_model,
                     "--judge-samples", str(a.judge_samples)]
        steps.append(("personalization", pers))
    times = {}
    t_all = time.perf_counter()
    for name, args in steps:
        t0 = time.perf_counter()
        print(f"== {name}: {' '.join(args)}", flush=True)
        subprocess.run(exe + args, check=True, env={**os.environ, "MLFLOW_TRACKING_URI": os.environ.get(
            "MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")})
        times[name] = round(time.perf_counter() - t0, 1)
    total = round(time.perf_counter() - t_all, 1)

    emb = pd.read_parquet(out / "embed" / "user_embeddings.parquet", columns=["user_id"])
    cre = pd.read_parquet(out / "generate" / "creatives.parquet")
    lookup = pd.read_parquet(out / "generate" / "lookup.parquet")
    items = ds.items.set_index(ds.items["item_id"].astype(str))
    # re-check every SERVED title independently of the gate: its words must be the ad's words
    bad = []
    for r in cre.itertuples():
        item = items.loc[str(r.item_id)].to_dict()
        extra, cut = foreign_words(r.title, item), cut_numbers(r.title, item)
        if extra or cut:
            bad.append({"item_id": r.item_id, "cluster_id": int(r.cluster_id), "title": r.title, "words": extra,
                        "cut_numbers": cut})
    src = cre["source"].value_counts().to_dict() if "source" in cre else {}
    pers_json = out / "personalization" / "personalization.json"
    personalization = json.loads(pers_json.read_text()) if pers_json.exists() else None
    save("full_inference", {
        "model": a.model, "users_embedded": len(emb), "ads": int(cre["item_id"].nunique()),
        "k": a.k, "top_k": a.top_k, "generations": len(cre), "lookup_rows": len(lookup),
        "seconds": {**times, "total": total}, "budget_s": a.budget_s, "within_budget": total <= a.budget_s,
        "titles": {"served": len(cre), "by_source": src,
                   "personalized": int(cre["personalized"].sum()) if "personalized" in cre else None,
                   "served_failing_independent_word_check": len(bad), "failing": bad[:5]},
        "personalization": personalization,
        "examples": cre[["item_id", "cluster_id", "original_title", "title", "source"]].head(12).to_dict("records"),
        "workdir": str(out),
    })


if __name__ == "__main__":
    main()
