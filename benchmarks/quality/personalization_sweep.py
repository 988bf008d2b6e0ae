"""Personalization where it can show: audience fit against the number of
generations, from a few clusters to one title per user.

For each K in ``--ks``, the product's own steps run through their CLIs on the same user embeddings:
``cluster --k K`` -> ``match --n-ads N --top-k T`` -> ``generate`` (``--select slot``: the cluster's
slot picks the fact, no decoding, so K = 512 costs what K = 16 does; the do-no-harm check on) ->
``personalization`` (held-out members of the selected clusters: fit vs the original and vs the ad's
other titles, bootstrap CIs with their MDE, the permutation test). Then the per-user path, the way the
creative endpoint writes (``condition_on="user"``): each held-out member of the K = ``--user-k``
run's selected clusters gets a title from their OWN user embedding (the slot's pick of the ad's
compositions, the do-no-harm check with the user's own embedding and ID part and the Item LLM's
similarity to the user's own clicks), measured the same way
(each user is a "cluster" of one: fit vs the other users' titles for the same ad, permutation test).

Generations = the (ad, cluster) pairs that get a title: N x T for clusters, N x users for per user.
The ruler (MiniLM-L6) is the evaluation only.

    .venv/bin/python -m benchmarks.quality.personalization_sweep --model M --data D --embed O/embed --out S \\
        [--ks 16,32,128,512] [--n-ads 60] [--top-k 3] [--user-k 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import save


def cli(exe: list[str], args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    print("==", " ".join(args), flush=True)
    subprocess.run(exe + args, check=True, env=env)
    return round(time.perf_counter() - t0, 1)


def fig_of(fit: dict, name: str) -> dict:
    d = fit.get(name) or {}
    return {k: d.get(k) for k in ("mean", "ci_low", "ci_high", "n", "mde")}


def per_user(model_dir: str, data: str, embed: str, k_dir: Path, out: Path, bootstrap: int,
             permutations: int) -> dict:
    """Every held-out member of the selected clusters of ``k_dir`` gets a title from their own
    embedding; audience fit measured like the cluster path."""
    import numpy as np
    import pandas as pd

    from hllm_creator.creative.gate import catalog_names
    from hllm_creator.creative.holdout import HELDOUT_SHARE
    from hllm_creator.data import leave_last_out, load_dataset
    from hllm_creator.evaluate.inputs import heldout_members, served_pairs
    from hllm_creator.evaluate.measures import audience_fit
    from hllm_creator.evaluate.ruler import Ruler
    from hllm_creator.infer import cluster as cl
    from hllm_creator.infer import generate as G
    from hllm_creator.infer import harm as H
    from hllm_creator.infer.embed import histories, load_model

    ds = load_dataset(data)
    _, _, asg, cmeta = cl.load(k_dir / "cluster")
    m = G.load_matches(k_dir / "match")
    sel = m[m["selected"]]
    split = leave_last_out(ds.interactions)
    members = heldout_members(asg, split.users, HELDOUT_SHARE)
    ue = pd.read_parquet(Path(embed) / "user_embeddings.parquet")
    vec = dict(zip(ue["user_id"].astype(str), ue["embedding"]))
    rows, users = [], []
    for r in sel.itertuples():
        for u in members.loc[members["cluster_id"] == int(r.cluster_id), "user_id"]:
            rows.append({"item_id": r.item_id, "cluster_id": len(users), "score": float(r.score)})
            users.append(str(u))
    U = np.stack([np.asarray(vec[u], dtype=np.float32) for u in users])
    model = load_model(model_dir)
    id_parts = None
    hist = histories(ds.interactions, cmeta.get("history") or "no-test")
    hist.index = hist.index.astype(str)
    # the do-no-harm content estimate per user: the Item LLM's cosine to the user's own clicks
    vecs = H.item_vectors(model, model_dir, ds.items, {str(i) for u in users for i in hist.get(u, [])}, bf16=True)
    content = H.cluster_content(vecs, pd.DataFrame({"user_id": users, "cluster_id": range(len(users))}), hist,
                                len(users)) if vecs else None
    if getattr(model, "predictor_items", None):
        import torch

        with torch.inference_mode():
            id_parts = model.predictor.recent_part(model.recent_index([list(hist.get(u, [])) for u in users]))
        id_parts = id_parts.float().cpu().numpy()
    cfg = G.GenerateConfig(model_dir=model_dir, data_dir=data, matches=str(k_dir / "match"),
                           clusters_dir=str(k_dir / "cluster"), select="slot", max_new_tokens=1, bf16=True,
                           distinct=False, batch_size=32)
    t0 = time.perf_counter()
    cr = G.generate_pairs(model, pd.DataFrame(rows), ds.items, U, cfg, known_names=catalog_names(ds.items),
                          cluster_emb=U, id_parts=id_parts, content=content)
    secs = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    cr.assign(user_id=[users[int(c)] for c in cr["cluster_id"]]).to_parquet(out / "creatives_per_user.parquet")
    pairs = served_pairs(cr)
    titles = dict(zip(ds.items["item_id"], ds.items["title"]))
    nxt = {u: titles[t] for u, t in zip(members["user_id"].astype(str), members["test_target"])}
    one = {i: pd.DataFrame({"user_id": [u]}) for i, u in enumerate(users)}
    fit, _ = audience_fit(pairs, one, nxt, Ruler(), bootstrap=bootstrap, permutations=permutations)
    return {"generations": len(cr), "users": len(set(users)), "seconds": round(secs, 1),
            "served_personalized_share": fit.get("served_personalized_share"),
            "fit_original": fig_of(fit, "fit_original"), "fit_other": fig_of(fit, "fit_other"),
            "fit_other_permutation_p": (fit.get("fit_other_permutation") or {}).get("p_value"),
            "harm_frontier": [{"rule": p.get("rule", "predictor"), "label": p["label"],
                              "personalized_share": p["personalized_share"],
                               **{f"fit_original_{k}": p["fit_original"].get(k) for k in ("mean", "ci_low", "ci_high")}}
                              for p in fit.get("harm_frontier") or []]}


def frontier_plot(rows: list[dict]):
    """Audience fit vs the original (95% CI) against the number of generations, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, key in (("vs the original", "fit_original"), ("vs the ad's other titles", "fit_other")):
        pts = [r for r in rows if r[key]["mean"] is not None]
        x = [r["generations"] for r in pts]
        y = [r[key]["mean"] for r in pts]
        err = [[v - r[key]["ci_low"] for v, r in zip(y, pts)], [r[key]["ci_high"] - v for v, r in zip(y, pts)]]
        ax.errorbar(x, y, yerr=err, fmt="o-", capsize=3, label=f"audience fit {name}")
        for xi, yi, r in zip(x, y, pts):
            ax.annotate(f"K={r['k']}", (xi, yi), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("generations (log)")
    ax.set_ylabel("audience fit (ruler, held-out users)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def log_mlflow(result: dict, uri: str) -> None:
    """One MLflow run ``personalization-sweep``: per K (and per user) the figures as metrics (step =
    generations), the table and the plot."""
    import mlflow
    import pandas as pd

    from hllm_creator import tracking

    mlflow.set_tracking_uri(uri)
    tracking.ensure_experiment()
    rows = result["clusters"] + ([{"k": "per user", **result["per_user"]}] if result["per_user"] else [])
    with mlflow.start_run(run_name="personalization-sweep", tags={"step": "personalization-sweep"}):
        mlflow.log_params({"n_ads": result["n_ads"], "top_k": result["top_k"], "model": result["model"]})
        for r in rows:
            for key in ("fit_original", "fit_other"):
                if r[key]["mean"] is not None:
                    mlflow.log_metric(f"sweep_{key}", r[key]["mean"], step=int(r["generations"]))
            mlflow.log_metric("sweep_personalized_share", r["served_personalized_share"] or 0.0,
                              step=int(r["generations"]))
        tracking.log_table(pd.DataFrame([{"k": str(r["k"]), "generations": r["generations"],
                                          "personalized_share": r["served_personalized_share"],
                                          **{f"{key}_{q}": r[key][q] for key in ("fit_original", "fit_other")
                                             for q in ("mean", "ci_low", "ci_high", "mde")},
                                          "fit_other_perm_p": r["fit_other_permutation_p"]} for r in rows]),
                           "personalization_sweep")
        tracking.log_figure(frontier_plot(rows), "personalization_sweep.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model dir written by `hllm-creator train`")
    ap.add_argument("--data", required=True, help="dataset dir")
    ap.add_argument("--embed", required=True, help="`hllm-creator embed` output dir (all users)")
    ap.add_argument("--out", required=True, help="work dir")
    ap.add_argument("--ks", default="16,32,128,512")
    ap.add_argument("--n-ads", type=int, default=60)
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--user-k", type=int, default=32, help="the K whose selected clusters' held-out members get "
                    "a title each in the per-user path (not among --ks: no per-user path)")
    ap.add_argument("--scale-top-k", action="store_true", help="select top_k x K / user_k clusters per ad, so every K "
                    "reaches about the same share of users (the generations then grow with K); default: top_k "
                    "for every K")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--name", default="personalization_sweep", help="benchmarks/results/NAME.json")
    a = ap.parse_args()


    out = Path(a.out)
    exe = [str(Path(sys.executable).parent / "hllm-creator")]
    env = {**os.environ, "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")}
    rows = []
    for k in [int(x) for x in a.ks.split(",")]:
        d = out / f"k{k}"
        t = {"cluster": cli(exe, ["cluster", "--embeddings", a.embed, "--out", str(d / "cluster"), "--k", str(k)], env)}
        top_k = max(1, round(a.top_k * k / a.user_k)) if a.scale_top_k and a.user_k else a.top_k
        t["match"] = cli(exe, ["match", "--model", a.model, "--data", a.data, "--clusters", str(d / "cluster"),
                               "--out", str(d / "match"), "--n-ads", str(a.n_ads), "--top-k", str(top_k)], env)
        t["generate"] = cli(exe, ["generate", "--model", a.model, "--data", a.data, "--matches", str(d / "match"),
                                  "--clusters", str(d / "cluster"), "--out", str(d / "generate"), "--bf16",
                                  "--select", "slot", "--max-new-tokens", "1", "--quiet"], env)
        t["personalization"] = cli(exe, ["personalization", "--model", a.model, "--data", a.data,
                                         "--clusters", str(d / "cluster"), "--matches", str(d / "match"),
                                         "--creatives", str(d / "generate"), "--out", str(d / "personalization"),
                                         "--max-ads", str(a.n_ads), "--swap-pairs", "4", "--max-new-tokens", "8",
                                         "--bootstrap", str(a.bootstrap), "--permutations", str(a.permutations),
                                         "--bf16"], env)
        res = json.loads((d / "personalization" / "personalization.json").read_text())
        fit = res["audience_fit"]
        gen = json.loads((d / "generate" / "generate_meta.json").read_text())
        rows.append({"k": k, "top_k": top_k, "generations": gen["generations"], "seconds": t,
                     "served_personalized_share": fit.get("served_personalized_share"),
                     "heldout_members": res["heldout_members_used"],
                     "fit_original": fig_of(fit, "fit_original"), "fit_other": fig_of(fit, "fit_other"),
                     "fit_other_permutation_p": (fit.get("fit_other_permutation") or {}).get("p_value"),
                     "harm_frontier": [{"rule": p.get("rule", "predictor"), "label": p["label"],
                              "personalized_share": p["personalized_share"],
                                        **{f"fit_original_{q}": p["fit_original"].get(q)
                                           for q in ("mean", "ci_low", "ci_high")}}
                                       for p in fit.get("harm_frontier") or []]})
        print(json.dumps(rows[-1])[:600], flush=True)
    user = per_user(a.model, a.data, a.embed, out / f"k{a.user_k}", out / "per_user", a.bootstrap, a.permutations) \
        if a.user_k in [r["k"] for r in rows] else None
    if user:
        print(json.dumps({k: v for k, v in user.items() if k != "harm_frontier"})[:600], flush=True)
    result = {"model": a.model, "n_ads": a.n_ads, "top_k": a.top_k, "clusters": rows, "per_user": user,
              "workdir": str(out)}
    save(a.name, result)
    log_mlflow(result, env["MLFLOW_TRACKING_URI"])
    print(f"{'K':>8} {'generations':>11} {'personalized':>12} {'fit vs original [95% CI] (MDE)':>42} "
          f"{'fit vs other, perm p':>22}")
    for r in rows + ([{"k": "per user", **user}] if user else []):
        fo, fx = r["fit_original"], r["fit_other"]
        print(f"{r['k']!s:>8} {r['generations']:>11} {100 * (r['served_personalized_share'] or 0):>11.0f}% "
              f"{fo['mean']:+.4f} [{fo['ci_low']:+.4f}, {fo['ci_high']:+.4f}] ({fo['mde']:.4f}) "
              f"{(fx['mean'] or 0):+.4f}, p {r['fit_other_permutation_p']}")


if __name__ == "__main__":
    main()
