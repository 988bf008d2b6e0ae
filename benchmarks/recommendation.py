"""Recommendation quality, side by side: popularity, a plain SASRec and the HLLM Item-User predictor.

Same split and protocol as ``hllm_creator.train.evaluate`` (leave-last-out): each user's history +
valid target is the input, the test target is ranked among every catalog item the user has not
clicked. Reported per ranker: Recall@10, NDCG@10, MRR (means over users) with a bootstrap 95% CI
over users, the paired bootstrap CI of the difference to SASRec, and training seconds.

Training data, the same for every trained ranker: every next-item position of history + valid
target of all users except ``--val-users`` seeded validation users, who are held out of every
positive and only pick the SASRec epoch (their history -> valid target). Test targets are never
trained on.

- ``popularity``: clicks in history + valid of all users.
- ``sasrec``: 2 causal self-attention blocks, 64 dims, 1 head, learned positions, item-ID
  embeddings tied with the output layer, dropout 0.2, full-softmax next-item cross-entropy over
  every position, Adam 1e-3, batch 128, max length 50; the epoch with the best validation NDCG@10
  is kept (checked every ``--eval-every`` epochs).
- ``hllm``: the predictor of a trained model dir (``--model DIR``), or trained here with
  ``--train-preset cpu`` (``hllm-creator train`` with the preset, creative/recon/align weights 0
  unless ``--both-objectives``).

    .venv/bin/python benchmarks/recommendation.py [--data DIR] [--model DIR | --train-preset cpu]
        [--sasrec-epochs 40] [--eval-users N] [--out benchmarks/results/recommendation.json]

Without ``--model``/``--train-preset`` the HLLM row is left out (``make bench`` runs it that way
unless ``HLLM_BENCH_MODEL`` names a model dir).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "model_code"))


# ----------------------------------------------------------------------------- data
def load_split(data_dir: str, val_users: int, seed: int) -> dict:
    from hllm_creator.data import leave_last_out, load_dataset

    ds = load_dataset(data_dir)
    users = leave_last_out(ds.interactions).users.reset_index(drop=True)
    item_ids = ds.items["item_id"].astype(str).tolist()
    index = {x: i for i, x in enumerate(item_ids)}
    hist = [[index[x] for x in h] for h in users["history"]]
    valid = np.array([index[x] for x in users["valid_target"]])
    test = np.array([index[x] for x in users["test_target"]])
    n = len(users)
    val = np.sort(np.random.default_rng([seed, 11]).permutation(n)[:val_users])
    is_val = np.zeros(n, dtype=bool)
    is_val[val] = True
    pop = np.zeros(len(item_ids), dtype=np.int64)
    for h, v in zip(hist, valid):
        np.add.at(pop, h + [int(v)], 1)
    return {"ds": ds, "users": users, "item_ids": item_ids, "index": index, "hist": hist, "valid": valid,
            "test": test, "val": val, "is_val": is_val, "pop": pop, "n_items": len(item_ids)}


def exclude_seen(scores: np.ndarray, rows: np.ndarray, sp: dict, with_valid: bool = True) -> np.ndarray:
    for r, u in enumerate(rows):
        seen = sp["hist"][u] + ([int(sp["valid"][u])] if with_valid else [])
        scores[r, seen] = -np.inf
    return scores


# ----------------------------------------------------------------------------- SASRec
def build_sasrec(n_items: int, d: int = 64, layers: int = 2, heads: int = 1, maxlen: int = 50,
                 dropout: float = 0.2):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
            self.ff = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d, d),
                                    nn.Dropout(dropout))

        def forward(self, x, causal, pad):
            q = self.ln1(x)
            x = x + self.attn(q, q, q, attn_mask=causal, key_padding_mask=pad, need_weights=False)[0]
            return x + self.ff(self.ln2(x))

    class SASRec(nn.Module):
        """Kang & McAuley 2018, item ids 1..n (0 = padding), left-padded sequences."""

        def __init__(self):
            super().__init__()
            self.item = nn.Embedding(n_items + 1, d, padding_idx=0)
            self.pos = nn.Embedding(maxlen, d)
            self.drop = nn.Dropout(dropout)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln = nn.LayerNorm(d)
            self.maxlen = maxlen
            for name, w in self.named_parameters():  # xavier, as the reference PyTorch SASRec
                if w.dim() > 1:
                    nn.init.xavier_normal_(w)
            with torch.no_grad():
                self.item.weight[0].zero_()

        def forward(self, seq):  # [B, T] -> hidden [B, T, d]
            T = seq.shape[1]
            x = self.item(seq) * d ** 0.5 + self.pos(torch.arange(T, device=seq.device))[None]
            pad = seq == 0
            x = self.drop(x) * (~pad)[..., None]
            causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=seq.device), 1)
            for b in self.blocks:
                x = b(x, causal, pad) * (~pad)[..., None]
            return self.ln(x)

        def logits(self, h):
            return h @ self.item.weight[1:].T  # column j = item j (0-based catalog index)

    return SASRec()


def left_pad(seqs: list[list[int]], maxlen: int):
    import torch

    out = torch.zeros(len(seqs), maxlen, dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[-maxlen:]
        if s:
            out[i, maxlen - len(s):] = torch.tensor(s) + 1
    return out


def train_sasrec(sp: dict, *, epochs: int, eval_every: int, seed: int, batch: int = 128, lr: float = 1e-3,
                 maxlen: int = 50, log=None) -> tuple:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = build_sasrec(sp["n_items"], maxlen=maxlen)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98))
    train_u = np.flatnonzero(~sp["is_val"])
    seqs = [sp["hist"][u] + [int(sp["valid"][u])] for u in train_u]
    full = left_pad(seqs, maxlen + 1)
    inp, tgt = full[:, :-1], full[:, 1:] - 1  # target -1 = padding (ignored)
    rng = np.random.default_rng(seed)
    val = sp["val"]
    val_inp = left_pad([sp["hist"][u] for u in val], maxlen)
    best = {"ndcg@10": -1.0, "epoch": 0, "state": None}
    curve = []
    log = log or (lambda m: print(m, flush=True))
    t0 = time.time()
    for ep in range(1, epochs + 1):
        model.train()
        perm = rng.permutation(len(inp))
        tot = 0.0
        for s in range(0, len(perm), batch):
            b = torch.as_tensor(perm[s:s + batch])
            t = tgt[b]
            keep = t >= 0  # the softmax only at real positions (most of a left-padded batch is padding)
            loss = F.cross_entropy(model.logits(model(inp[b])[keep]), t[keep])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(b)
        if ep % eval_every == 0 or ep == epochs:
            s = sasrec_scores(model, val_inp)
            m = metrics(exclude_seen(s, val, sp, with_valid=False), sp["valid"][val])
            curve.append({"epoch": ep, "loss": tot / len(perm), "val_ndcg@10": m["ndcg@10"],
                          "val_recall@10": m["recall@10"], "seconds": time.time() - t0})
            log(f"  sasrec epoch {ep}: loss {tot / len(perm):.3f} val R@10 {m['recall@10']:.4f} "
                f"NDCG@10 {m['ndcg@10']:.4f} ({time.time() - t0:.0f}s)")
            if m["ndcg@10"] > best["ndcg@10"]:
                best = {"ndcg@10": m["ndcg@10"], "epoch": ep,
                        "state": {k: v.clone() for k, v in model.state_dict().items()}}
    model.load_state_dict(best["state"])
    return model, {"seconds": time.time() - t0, "best_epoch": best["epoch"], "curve": curve}


def sasrec_scores(model, inp, chunk: int = 512) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return torch.cat([model.logits(model(inp[s:s + chunk])[:, -1]) for s in range(0, len(inp), chunk)]).numpy()


# ----------------------------------------------------------------------------- HLLM
def hllm_scores(model_dir: str, sp: dict, rows: np.ndarray, bf16: bool = True) -> np.ndarray:
    import pandas as pd
    import torch

    from hllm_creator.model.hllm import HLLMCreator

    model = HLLMCreator.load(model_dir)
    f = Path(model_dir) / "item_embeddings.parquet"
    if f.exists():
        df = pd.read_parquet(f)
        pos = {x: i for i, x in enumerate(df["item_id"].astype(str))}
        emb = torch.tensor(np.stack(df["embedding"].to_numpy())[[pos[x] for x in sp["item_ids"]]])
    else:
        from hllm_creator.data.text import item_text

        emb = model.encode_items([item_text(r) for r in sp["ds"].items.to_dict("records")], autocast_bf16=bf16)
    H = model.cfg.max_history
    inputs = [(sp["hist"][u] + [int(sp["valid"][u])])[-H:] for u in rows]
    ue = model.encode_users([emb[h] for h in inputs], autocast_bf16=bf16, progress=True, desc="hllm users")
    # the hybrid predictor's ID parts (None when the model has no ID embeddings)
    recent = model.recent_index([[sp["item_ids"][i] for i in h] for h in inputs])
    ids = model.item_index(sp["item_ids"])
    with torch.no_grad():
        return torch.cat([model.predictor(ue[s:s + 256], emb.float(), recent=None if recent is None else
                                          recent[s:s + 256], item_ids=ids) for s in range(0, len(ue), 256)]).numpy()


def train_hllm(preset: str, data: str, out: str, both: bool, seed: int) -> dict:
    from hllm_creator.train.config import build_config
    from hllm_creator.train.trainer import run_train

    weights = None if both else {"creative": 0.0, "recon": 0.0, "align": 0.0}
    cfg = build_config(preset, data=data, out=out, weights=weights, register_model=False, seed=seed)
    return run_train(cfg)


# ----------------------------------------------------------------------------- metrics
def metrics(scores: np.ndarray, target: np.ndarray) -> dict:
    from hllm_creator.train.evaluate import per_user_metrics, ranks

    return {k: float(v.mean()) for k, v in per_user_metrics(ranks(scores, target)).items()}


def per_user(scores: np.ndarray, target: np.ndarray) -> dict:
    from hllm_creator.train.evaluate import per_user_metrics, ranks

    return per_user_metrics(ranks(scores, target))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="dataset dir (default: prepare the bundled one under .hllm/data)")
    ap.add_argument("--model", default=os.environ.get("HLLM_BENCH_MODEL"), help="trained HLLM-Creator model dir")
    ap.add_argument("--train-preset", default=None, help="train the HLLM here with this preset (e.g. cpu)")
    ap.add_argument("--both-objectives", action="store_true", help="with --train-preset: keep the creative losses")
    ap.add_argument("--sasrec-epochs", type=int, default=40)
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument("--val-users", type=int, default=500)
    ap.add_argument("--eval-users", type=int, default=None, help="test users (seeded sample; default all)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/recommendation.json"))
    ap.add_argument("--reuse-sasrec", default=None, help="a previous run's JSON: reuse its SASRec and popularity "
                    "per-user metrics (<json>.per_user.npz, same data/users/seed) instead of training SASRec again")
    a = ap.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    data = a.data
    if data is None:
        data = str(ROOT / ".hllm/data/amazon_scientific")
        if not (Path(data) / "manifest.json").exists():
            from hllm_creator.data.prepare import prepare_bundled

            prepare_bundled(data)
    sp = load_split(data, a.val_users, a.seed)
    n = len(sp["users"])
    rows = np.arange(n)
    if a.eval_users and a.eval_users < n:
        rows = np.sort(np.random.default_rng([a.seed, 13]).permutation(n)[:a.eval_users])
    target = sp["test"][rows]
    res: dict = {"protocol": "leave-last-out; input history + valid target; test target ranked among all items "
                 "the user has not clicked; bootstrap 95% CI over users", "data": data, "n_users": int(len(rows)),
                 "n_items": sp["n_items"], "val_users": a.val_users, "rankers": {}}
    try:
        import subprocess

        res["load_before"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    pu = {}
    s = np.repeat((np.log1p(sp["pop"]) + np.arange(sp["n_items"]) * 1e-9)[None], len(rows), 0)
    pu["popularity"] = per_user(exclude_seen(s, rows, sp), target)
    res["rankers"]["popularity"] = {"train_seconds": 0.0}

    if a.reuse_sasrec:
        prev = json.loads(Path(a.reuse_sasrec).read_text())
        z = np.load(Path(a.reuse_sasrec).with_suffix(".per_user.npz"))
        if not np.array_equal(z["rows"], rows) or (prev["data"], prev["val_users"]) != (data, a.val_users):
            raise SystemExit(f"--reuse-sasrec {a.reuse_sasrec}: another data dir, user sample or val_users")
        pu["sasrec"] = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("sasrec/")}
        res["rankers"]["sasrec"] = {k: v for k, v in prev["rankers"]["sasrec"].items()
                                    if k in ("train_seconds", "best_epoch", "curve", "config")}
        res["rankers"]["sasrec"]["reused_from"] = str(a.reuse_sasrec)
    else:
        print(f"SASRec: {a.sasrec_epochs} epochs on {n - a.val_users} users ...", flush=True)
        sas, info = train_sasrec(sp, epochs=a.sasrec_epochs, eval_every=a.eval_every, seed=a.seed)
        s = sasrec_scores(sas, left_pad([sp["hist"][u] + [int(sp["valid"][u])] for u in rows], 50))
        pu["sasrec"] = per_user(exclude_seen(s, rows, sp), target)
        res["rankers"]["sasrec"] = {"train_seconds": info["seconds"], "best_epoch": info["best_epoch"],
                                    "curve": info["curve"], "config": "2 blocks, 64 dims, 1 head, dropout 0.2, "
                                    "full softmax, Adam 1e-3, batch 128, maxlen 50"}

    model_dir = a.model
    if a.train_preset:
        import tempfile

        model_dir = tempfile.mkdtemp(prefix="bench_hllm_")
        r = train_hllm(a.train_preset, data, model_dir, a.both_objectives, a.seed)
        res["rankers"]["hllm"] = {"train_seconds": r["metrics"].get("train_seconds", 0) +
                                  r["metrics"].get("head_fit_seconds", 0), "preset": a.train_preset,
                                  "both_objectives": a.both_objectives}
    if model_dir:
        t = time.time()
        s = hllm_scores(model_dir, sp, rows)
        pu["hllm"] = per_user(exclude_seen(s, rows, sp), target)
        info = res["rankers"].setdefault("hllm", {})
        info["model_dir"] = str(model_dir)
        info["score_seconds"] = time.time() - t
        summ = Path(model_dir) / "train_summary.json"
        if "train_seconds" not in info and summ.exists():
            js = json.loads(summ.read_text())
            # joint steps (both objectives when trained so) + the predictor fit
            info["train_seconds"] = js.get("train_seconds", 0) + js.get("head_fit_seconds", js.get("rec_fit_seconds", 0))
            info["preset"] = js.get("config", {}).get("preset")
    from hllm_creator.train.evaluate import bootstrap_ci

    for name, v in pu.items():
        res["rankers"][name].update(bootstrap_ci(v, baseline=None if name == "sasrec" else pu["sasrec"],
                                                 n_boot=a.bootstrap, seed=a.seed))
    try:
        import subprocess

        res["load_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    print(f"\n{'ranker':<12}{'Recall@10':>26}{'NDCG@10':>26}{'MRR':>26}{'train s':>10}")
    for name, r in res["rankers"].items():
        cells = [f"{r[k]['mean']:.4f} [{r[k]['ci'][0]:.4f},{r[k]['ci'][1]:.4f}]" for k in ("recall@10", "ndcg@10", "mrr")]
        print(f"{name:<12}" + "".join(f"{c:>26}" for c in cells) + f"{r.get('train_seconds', 0):>10.0f}")
        if "diff" in r["recall@10"]:
            d = [f"{r[k]['diff']:+.4f} [{r[k]['diff_ci'][0]:+.4f},{r[k]['diff_ci'][1]:+.4f}]"
                 for k in ("recall@10", "ndcg@10", "mrr")]
            print(f"{'  - sasrec':<12}" + "".join(f"{c:>26}" for c in d))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    np.savez_compressed(Path(a.out).with_suffix(".per_user.npz"), rows=rows,
                        **{f"{name}/{k}": v for name, d in pu.items() for k, v in d.items()})
    print(f"wrote {a.out}")
    if not a.no_mlflow:
        from hllm_creator import tracking

        with tracking.step_run("bench_recommendation", None, tags={"benchmark": "recommendation"}):
            tracking.log_metrics({f"{name}_{k.replace('@', '_at_')}": r[k]["mean"] for name, r in res["rankers"].items()
                                  for k in ("recall@10", "ndcg@10", "mrr")})
            tracking.log_json(res, "recommendation.json")
    return res


if __name__ == "__main__":
    main()
