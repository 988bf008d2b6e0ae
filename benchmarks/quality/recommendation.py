"""Recommendation quality, side by side, under one plain leave-last-out protocol (``rec_rankers``):
popularity, the project's SASRec, RecBole's SASRec and BERT4Rec, and the HLLM Item-User predictor.

Every ranker trains on every next-item position of every user's history, picks its epoch and
hyperparameters on ``history -> valid_target`` (validation NDCG@10, the same tuning budget for each:
``--configs`` configurations drawn from its grid, early stopping), and is scored once on
``history + valid -> test_target`` of every user (full ranking, seen items excluded). Reported: Recall@10,
NDCG@10, MRR with bootstrap 95% CIs over users, the paired CI of each ranker minus the strongest
baseline (highest test NDCG@10 among the non-HLLM rankers), and seconds (tuning, the chosen
configuration's training, scoring).

The HLLM row needs a trained model dir (``--model``; read only): its User/Item LLMs stay frozen and
only its predictor head is re-fitted and tuned here, from ``--head-start`` (the predictor weights
after joint training, e.g. ``<model>.checkpoints/checkpoint-N/pytorch_model.bin``; default: the
model's own fitted head).

    .venv/bin/python benchmarks/recommendation.py [--data DIR] [--model DIR [--head-start FILE]]
        [--rankers popularity,sasrec,recbole_sasrec,recbole_bert4rec,hllm,hllm_as_trained] [--configs 5]
        [--refit]
        [--work DIR] [--out benchmarks/results/recommendation.json]

Each ranker's result is kept in ``--work`` (``<ranker>.json`` + ``<ranker>.npz``) and reused, so the
rankers can run one at a time (``--rankers``) and be assembled at the end (``--assemble-only``).
RecBole rankers need the ``bench`` extra (``pip install -e '.[bench]'``); without it they are skipped
with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from benchmarks._common import ROOT
from benchmarks.quality import rec_rankers as rr

RANKERS = ("popularity", "sasrec", "recbole_sasrec", "recbole_bert4rec", "hllm", "hllm_as_trained")
HLLM = ("hllm", "hllm_as_trained")
REFIT = ("sasrec", "hllm")  # --refit: these re-trained on history + valid with their chosen config (diagnostic)
PROTOCOL = ("plain leave-last-out: every ranker trains on every next-item position of every user's history; "
            "epochs and hyperparameters chosen on history -> valid target (validation NDCG@10); test: history + "
            "valid -> test target of every user, full ranking over the catalog, the input's items excluded; "
            "bootstrap 95% CI over users")


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def run_ranker(name: str, sp: rr.Split, a, log=print) -> tuple[dict, dict]:
    """Tune + test one ranker -> (record, per-user test metrics)."""
    kw = {"max_epochs": a.max_epochs, "eval_every": a.eval_every, "patience": a.patience, "seed": a.seed}
    t0 = time.time()
    if name == "popularity":
        t = time.time()
        s = rr.popularity_scores(sp, "test")
        rec = {"config": "log(1 + clicks in every user's input)", "score_seconds": time.time() - t,
               "val": rr.mean_metrics(rr.per_user(rr.popularity_scores(sp, "valid"), sp, "valid"))}
        return rec, rr.per_user(s, sp, "test")
    if name == "sasrec":
        tuned = rr.tune(name, rr.SASREC_GRID, lambda c: rr.fit_sasrec(sp, c, log=log, **kw),
                        n_configs=a.configs, seed=a.seed, log=log)
        fixed = "2 blocks, 64 dims, 1 head, full-softmax CE at every position, Adam (0.9, 0.98), batch 128 users"
    elif name.startswith("recbole_"):
        model_name = {"recbole_sasrec": "SASRec", "recbole_bert4rec": "BERT4Rec"}[name]
        work = Path(a.work) / "recbole"
        tuned = rr.tune(name, rr.RECBOLE_GRID,
                        lambda c: rr.fit_recbole(model_name, sp, c, work=work, log=log, **kw),
                        n_configs=a.configs, seed=a.seed, log=log)
        import recbole

        fixed = (f"RecBole {recbole.__version__} {model_name}, its default model config (2 layers, 2 heads, 64 "
                 "dims, inner 256; BERT4Rec mask_ratio 0.2), loss CE, batch 256 rows, Adam")
    elif name == "hllm_as_trained":  # a reference row: the model's own fitted head, not re-fitted or tuned here
        if not a.model:
            raise SystemExit("hllm_as_trained: --model DIR (a trained HLLM-Creator model dir) is needed")
        feat = rr.HLLMFeatures(a.model, sp, queries=False)
        t = time.time()
        s = feat.score_as_is("test")
        summ = Path(a.model) / "train_summary.json"
        js = json.loads(summ.read_text()) if summ.exists() else {}
        rec = {"config": f"model {a.model} as trained (its own head fit; not tuned here, not the protocol's "
                         f"training data: see docs/train.md)", "encode_seconds": feat.seconds,
               "score_seconds": time.time() - t, "joint_train_seconds": js.get("train_seconds"),
               "head_fit_seconds": js.get("head_fit_seconds"),
               "val": rr.mean_metrics(rr.per_user(feat.score_as_is("valid"), sp, "valid"))}
        return rec, rr.per_user(s, sp, "test")
    elif name == "hllm":
        if not a.model:
            raise SystemExit("hllm: --model DIR (a trained HLLM-Creator model dir) is needed")
        feat = rr.HLLMFeatures(a.model, sp, start_state=a.head_start)
        log(f"  hllm: {len(feat.q)} training queries, valid/test users encoded ({feat.seconds:.0f}s)")
        tuned = rr.tune(name, rr.HEAD_GRID,
                        lambda c: rr.fit_head(feat, sp, c, max_steps=a.head_steps, eval_every=a.head_eval_every,
                                              patience=a.patience, seed=a.seed, log=log),
                        n_configs=a.configs, seed=a.seed, log=log)
        summ = Path(a.model) / "train_summary.json"
        js = json.loads(summ.read_text()) if summ.exists() else {}
        fixed = (f"model {a.model} (preset {js.get('config', {}).get('preset')}): frozen User/Item LLMs; the "
                 f"predictor head re-fitted from {feat.start_source}: next-item sampled softmax, batch 1024 "
                 f"queries, AdamW + cosine, at most {a.head_steps} steps (one check = {a.head_eval_every} steps)")
        tuned["record"]["encode_seconds"] = feat.seconds
        tuned["record"]["joint_train_seconds"] = js.get("train_seconds")
        tuned["record"]["train_queries"] = int(len(feat.q))
    else:
        raise SystemExit(f"unknown ranker {name!r}; choose from {', '.join(RANKERS)}")
    rec = tuned["record"]
    rec["fixed"] = fixed
    t = time.time()
    s = tuned["score"]("test")
    rec["score_seconds"] = time.time() - t
    rec["total_seconds"] = time.time() - t0
    return rec, rr.per_user(s, sp, "test")


def run_refit(name: str, sp: rr.Split, a, work: Path, log=print) -> tuple[dict, dict]:
    """The refit diagnostic: the ranker's chosen config and epoch (steps), re-trained with no selection
    on every position of history + valid target, scored on the test protocol. Not the protocol's rows:
    it shows what the valid targets add when a ranker trains on them (as the HLLM's own joint training
    and head fit did for the users they trained on)."""
    prev = json.loads((work / f"{name}.json").read_text())
    cfg, ep = prev["chosen"], int(prev["chosen_epoch"])
    sp2 = sp.refit_split()
    if sp2.inputs("valid") != sp.inputs("test") or not np.array_equal(sp2.targets("valid"), sp.targets("test")):
        raise RuntimeError("refit split: its valid stage is not the test protocol")
    t0 = time.time()
    if name == "sasrec":
        best, score = rr.fit_sasrec(sp2, cfg, max_epochs=ep, eval_every=a.eval_every, patience=a.patience,
                                    seed=a.seed, select=False)
    else:
        feat = rr.HLLMFeatures(a.model, sp2, start_state=a.head_start)
        best, score = rr.fit_head(feat, sp2, cfg, max_steps=a.head_steps, eval_every=a.head_eval_every,
                                  patience=a.patience, seed=a.seed, stop_at=ep)
    t = time.time()
    s = score("valid")  # = the test protocol on the refit split
    rec = {"config": cfg, "epochs_or_steps": ep, "refit_of": name, "train_seconds": best["seconds"],
           "score_seconds": time.time() - t, "total_seconds": time.time() - t0,
           "note": "diagnostic: trained on history + valid target positions, no selection; not the protocol"}
    return rec, rr.per_user(s, sp2, "valid")


def assemble(sp: rr.Split, work: Path, names: list[str], a) -> dict:
    from hllm_creator.stats import bootstrap_ci

    pu, recs = {}, {}
    for n in list(names) + [f"{r}_refit" for r in REFIT]:
        f = work / f"{n}.npz"
        if f.exists():
            z = np.load(f)
            pu[n] = {k: z[k] for k in z.files}
            recs[n] = json.loads((work / f"{n}.json").read_text())
            if len(pu[n]["mrr"]) != sp.n_users:
                raise SystemExit(f"{f}: {len(pu[n]['mrr'])} users, the split has {sp.n_users}")
    base = [n for n in pu if n not in HLLM and not n.endswith("_refit")]
    if not base:
        raise SystemExit(f"{work}: no baseline results to assemble")
    strongest = max(base, key=lambda n: pu[n]["ndcg@10"].mean())
    res = {"protocol": PROTOCOL, "data": a.data, "n_users": sp.n_users, "n_items": sp.n_items,
           "tuning": {"configs_per_ranker": a.configs, "selection": "validation NDCG@10 (history -> valid target)",
                      "max_epochs": a.max_epochs, "eval_every": a.eval_every, "patience": a.patience,
                      "hllm_head_max_steps": a.head_steps, "hllm_head_eval_every": a.head_eval_every},
           "strongest_baseline": strongest, "rankers": {}}
    for n in pu:
        r = dict(recs[n])
        r.update(bootstrap_ci(pu[n], baseline=None if n == strongest else pu[strongest], n_boot=a.bootstrap,
                              seed=a.seed))
        res["rankers"][n] = r
    for h in HLLM:
        if h in pu:
            res[f"{h}_minus"] = {b: {k: {kk: v[kk] for kk in ("diff", "diff_ci")} for k, v in
                                     bootstrap_ci(pu[h], baseline=pu[b], n_boot=a.bootstrap, seed=a.seed).items()}
                                 for b in base}
    if "sasrec_refit" in pu and "hllm_refit" in pu:
        res["hllm_refit_minus_sasrec_refit"] = {k: {kk: v[kk] for kk in ("diff", "diff_ci")} for k, v in bootstrap_ci(
            pu["hllm_refit"], baseline=pu["sasrec_refit"], n_boot=a.bootstrap, seed=a.seed).items()}
    return res, pu


def print_table(res: dict) -> None:
    sb = res["strongest_baseline"]
    print(f"\n{'ranker':<18}{'Recall@10':>26}{'NDCG@10':>26}{'MRR':>26}{'tune s':>9}{'chosen s':>9}")
    for name, r in res["rankers"].items():
        cells = [f"{r[k]['mean']:.4f} [{r[k]['ci'][0]:.4f},{r[k]['ci'][1]:.4f}]" for k in ("recall@10", "ndcg@10", "mrr")]
        print(f"{name:<18}" + "".join(f"{c:>26}" for c in cells)
              + f"{r.get('tune_seconds', 0):>9.0f}{r.get('train_seconds_chosen', 0):>9.0f}")
        if "diff" in r["recall@10"]:
            d = [f"{r[k]['diff']:+.4f} [{r[k]['diff_ci'][0]:+.4f},{r[k]['diff_ci'][1]:+.4f}]"
                 for k in ("recall@10", "ndcg@10", "mrr")]
            print(f"{'  - ' + sb:<18}" + "".join(f"{c:>26}" for c in d))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="dataset dir (default: prepare the bundled one under .hllm/data)")
    ap.add_argument("--model", default=os.environ.get("HLLM_BENCH_MODEL"), help="trained HLLM-Creator model dir")
    ap.add_argument("--head-start", default=None, help="predictor weights to re-fit the head from (a joint-training "
                    "checkpoint's pytorch_model.bin); default: the model's fitted head")
    ap.add_argument("--rankers", default=",".join(RANKERS[:4]), help=f"comma list of {', '.join(RANKERS)}")
    ap.add_argument("--configs", type=int, default=5, help="tuning budget: configurations per trained ranker")
    ap.add_argument("--max-epochs", type=int, default=40)
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument("--patience", type=int, default=2, help="checks without a validation gain before stopping")
    ap.add_argument("--head-steps", type=int, default=1000, help="HLLM head: at most this many steps")
    ap.add_argument("--head-eval-every", type=int, default=100)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work", default=str(ROOT / ".hllm/bench_rec"), help="per-ranker results (reused)")
    ap.add_argument("--force", action="store_true", help="re-run rankers whose results are in --work")
    ap.add_argument("--assemble-only", action="store_true", help="only assemble what --work holds")
    ap.add_argument("--refit", action="store_true", help="diagnostic rows sasrec_refit / hllm_refit: the chosen config "
                    "re-trained on history + valid (no selection), scored on the test protocol")
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/recommendation.json"))
    a = ap.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.data is None:
        a.data = str(ROOT / ".hllm/data/amazon_scientific")
        if not (Path(a.data) / "manifest.json").exists():
            from hllm_creator.data.prepare import prepare_bundled

            prepare_bundled(a.data)
    names = [n.strip() for n in a.rankers.split(",") if n.strip()]
    bad = [n for n in names if n not in RANKERS]
    if bad:
        raise SystemExit(f"--rankers: unknown {bad}; choose from {', '.join(RANKERS)}")
    sp = rr.load_split(a.data)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if not a.assemble_only:
        for n in names:
            if (work / f"{n}.npz").exists() and not a.force:
                print(f"{n}: reusing {work / n}.npz")
                continue
            if n.startswith("recbole_") and not rr.recbole_available():
                print(f"{n}: skipped (RecBole is not installed: pip install -e '.[bench]')")
                continue
            print(f"{n}: tuning ({a.configs} configs) ...", flush=True)
            before = uptime()
            rec, pu = run_ranker(n, sp, a)
            rec["load_before"], rec["load_after"] = before, uptime()
            np.savez_compressed(work / f"{n}.npz", **pu)
            (work / f"{n}.json").write_text(json.dumps(rec, indent=2))
    if a.refit and not a.assemble_only:
        for n in REFIT:
            if not (work / f"{n}.json").exists() or ((work / f"{n}_refit.npz").exists() and not a.force):
                continue
            if n == "hllm" and not a.model:
                continue
            print(f"{n}_refit: the chosen config on history + valid ...", flush=True)
            before = uptime()
            rec, pu = run_refit(n, sp, a, work)
            rec["load_before"], rec["load_after"] = before, uptime()
            np.savez_compressed(work / f"{n}_refit.npz", **pu)
            (work / f"{n}_refit.json").write_text(json.dumps(rec, indent=2))
    res, pu = assemble(sp, work, list(RANKERS), a)
    print_table(res)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    np.savez_compressed(Path(a.out).with_suffix(".per_user.npz"),
                        **{f"{n}/{k}": v for n, d in pu.items() for k, v in d.items()})
    print(f"wrote {a.out}")
    if not a.no_mlflow:
        from benchmarks.quality.rec_report import log_run

        log_run(res, None, params={"configs_per_ranker": a.configs, "data": a.data, "model": a.model or ""})
    return res


if __name__ == "__main__":
    main()
