"""The rankers of ``benchmarks/recommendation.py`` and the one protocol they share.

Protocol (plain leave-last-out, the same for every ranker): a user's clicks, oldest first, are
``history + [valid_target, test_target]`` (``hllm_creator.data.leave_last_out``).

- training: every next-item position of every user's ``history`` (prefix -> next history item);
  no valid or test target is ever a training input or target;
- validation (epochs, early stopping and hyperparameters): ``history -> valid_target`` of every user;
- test: ``history + [valid_target] -> test_target`` of every user;
- full ranking over the whole catalog, the items of the input (the user's clicks so far) excluded;
  Recall@10, NDCG@10, MRR per user.

Each trained ranker is tuned with the same budget (``tune``): ``n_configs`` configurations drawn
(seeded) from its grid, each trained with early stopping on validation NDCG@10 (checked every
``eval_every`` epochs/steps, stopped after ``patience`` checks without a gain, at most ``max_epochs``);
the configuration and epoch with the best validation NDCG@10 is kept and scored once on the test targets.

Rankers: ``popularity``; ``sasrec`` (this project's, plain: every position of every user);
``recbole_sasrec`` / ``recbole_bert4rec`` (RecBole's model classes, dataset and dataloaders fed our
split as benchmark atomic files; our optimizer loop and our evaluation, because RecBole's own
full-sort evaluation of sequential models does not exclude the seen items); ``hllm`` (a trained
HLLM-Creator model dir: its frozen User/Item LLMs, the Item-User predictor head re-fitted on the
protocol's training positions, tuned like the others).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


# ----------------------------------------------------------------------------- the split
@dataclass
class Split:
    item_ids: list[str]           # catalog order (column j of every score matrix = item j)
    hist: list[list[int]]         # per user: history (catalog indices, oldest first)
    valid: np.ndarray             # per user: valid target
    test: np.ndarray              # per user: test target
    user_ids: list[str] = field(default_factory=list)
    refit: bool = False  # see refit_split: its "valid" stage is the test protocol, it has no "test" stage

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.hist)

    def inputs(self, stage: str) -> list[list[int]]:
        """The ranker's input per user: ``history`` (valid) or ``history + [valid_target]`` (test)."""
        if stage == "test" and self.refit:
            raise ValueError("a refit split has no test stage: its 'valid' stage is the test protocol")
        if stage == "valid":
            return [list(h) for h in self.hist]
        if stage == "test":
            return [list(h) + [int(v)] for h, v in zip(self.hist, self.valid)]
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")

    def targets(self, stage: str) -> np.ndarray:
        if stage not in ("valid", "test"):
            raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
        return self.valid if stage == "valid" else self.test

    def train_examples(self, maxlen: int | None = None) -> list[tuple[int, list[int], int]]:
        """Every next-item position of every user's history: (user, prefix (last ``maxlen``), target)."""
        out = []
        for u, h in enumerate(self.hist):
            for t in range(1, len(h)):
                out.append((u, list(h[max(0, t - maxlen) if maxlen else 0:t]), int(h[t])))
        return out

    def refit_split(self) -> Split:
        """The refit diagnostic's split: training on every position of ``history + [valid_target]`` (all
        that is known at test time), with no selection (the epochs chosen on the plain split); its
        "valid" stage is exactly the test protocol (input history + valid, target the test target)."""
        return Split(self.item_ids, [list(h) + [int(v)] for h, v in zip(self.hist, self.valid)], self.test.copy(),
                     self.test.copy(), self.user_ids, refit=True)

    def popularity(self, stage: str) -> np.ndarray:
        """Clicks per item in every user's input at that stage (what a ranker may know then)."""
        pop = np.zeros(self.n_items, dtype=np.int64)
        for s in self.inputs(stage):
            np.add.at(pop, s, 1)
        return pop


def split_from_users(users, item_ids: list[str]) -> Split:
    """``leave_last_out(...).users`` (history, valid_target, test_target as item ids) -> Split."""
    index = {x: i for i, x in enumerate(item_ids)}
    try:
        hist = [[index[str(x)] for x in h] for h in users["history"]]
        valid = np.array([index[str(x)] for x in users["valid_target"]], dtype=np.int64)
        test = np.array([index[str(x)] for x in users["test_target"]], dtype=np.int64)
    except KeyError as e:
        raise ValueError(f"split: item {e.args[0]!r} is not in the catalog") from None
    return Split(list(item_ids), hist, valid, test, users["user_id"].astype(str).tolist())


def load_split(data_dir: str) -> Split:
    from hllm_creator.data import leave_last_out, load_dataset

    ds = load_dataset(data_dir)
    users = leave_last_out(ds.interactions).users.reset_index(drop=True)
    return split_from_users(users, ds.items["item_id"].astype(str).tolist())


# ----------------------------------------------------------------------------- metrics
def exclude_seen(scores: np.ndarray, seen: list[list[int]]) -> np.ndarray:
    for r, s in enumerate(seen):
        scores[r, s] = -np.inf
    return scores


def per_user(scores: np.ndarray, sp: Split, stage: str) -> dict[str, np.ndarray]:
    """Scores [users, items] -> per-user Recall@10, NDCG@10, MRR of that stage's targets, seen excluded."""
    from hllm_creator.train.evaluate import per_user_metrics, ranks

    if scores.shape != (sp.n_users, sp.n_items):
        raise ValueError(f"scores must be [{sp.n_users}, {sp.n_items}], got {list(scores.shape)}")
    s = exclude_seen(np.array(scores, dtype=np.float64), sp.inputs(stage))
    return per_user_metrics(ranks(s, sp.targets(stage)))


def mean_metrics(pu: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(v.mean()) for k, v in pu.items()}


# ----------------------------------------------------------------------------- tuning
def sample_configs(grid: dict[str, list], n: int, seed: int) -> list[dict]:
    """``n`` distinct configurations drawn (seeded) from the grid's product (all when it is smaller)."""
    keys = sorted(grid)
    product = [dict(zip(keys, v)) for v in itertools.product(*(grid[k] for k in keys))]
    if n >= len(product):
        return product
    pick = np.random.default_rng([seed, 29]).choice(len(product), size=n, replace=False)
    return [product[i] for i in sorted(pick.tolist())]


def early_stopping(train_epoch, val_ndcg, snapshot, *, max_epochs: int, eval_every: int, patience: int,
                   log=None) -> dict:
    """Generic loop: ``train_epoch(e)`` -> loss; every ``eval_every`` epochs ``val_ndcg()``; keeps the best
    ``snapshot()``; stops after ``patience`` checks without a gain. Returns best epoch/score/state/curve.
    ``val_ndcg=None``: no selection, exactly ``max_epochs`` epochs, the last state (the refit)."""
    best = {"epoch": 0, "val_ndcg@10": -1.0, "state": None}
    curve, since, t0 = [], 0, time.time()
    if val_ndcg is None:
        for ep in range(1, max_epochs + 1):
            curve.append({"epoch": ep, "loss": float(train_epoch(ep)), "seconds": time.time() - t0})
        return {"epoch": max_epochs, "val_ndcg@10": float("nan"), "state": snapshot(), "curve": curve,
                "seconds": time.time() - t0}
    for ep in range(1, max_epochs + 1):
        loss = train_epoch(ep)
        if ep % eval_every and ep != max_epochs:
            continue
        v = val_ndcg()
        curve.append({"epoch": ep, "loss": float(loss), "val_ndcg@10": float(v), "seconds": time.time() - t0})
        if log:
            log(f"    epoch {ep}: loss {loss:.4f} val NDCG@10 {v:.4f} ({time.time() - t0:.0f}s)")
        if v > best["val_ndcg@10"]:
            best, since = {"epoch": ep, "val_ndcg@10": float(v), "state": snapshot()}, 0
        else:
            since += 1
            if since >= patience:
                break
    best["curve"], best["seconds"] = curve, time.time() - t0
    return best


def tune(name: str, grid: dict[str, list], fit, *, n_configs: int, seed: int, log=print) -> dict:
    """``fit(config)`` -> (best dict of ``early_stopping``, a ``score(stage) -> [users, items]`` of that
    best state). Returns the tuning record and the winner's scorer."""
    trials, winner, t0 = [], None, time.time()
    for i, cfg in enumerate(sample_configs(grid, n_configs, seed)):
        log(f"  {name} config {i + 1}/{n_configs}: {cfg}")
        best, scorer = fit(cfg)
        trials.append({"config": cfg, "best_epoch": best["epoch"], "val_ndcg@10": best["val_ndcg@10"],
                       "seconds": best["seconds"], "curve": best["curve"]})
        log(f"  -> val NDCG@10 {best['val_ndcg@10']:.4f} at epoch {best['epoch']} ({best['seconds']:.0f}s)")
        if winner is None or best["val_ndcg@10"] > winner[0]["val_ndcg@10"]:
            winner = (trials[-1], scorer)
        else:
            del scorer
    rec = {"grid": grid, "n_configs": n_configs, "trials": trials, "chosen": winner[0]["config"],
           "chosen_epoch": winner[0]["best_epoch"], "val_ndcg@10": winner[0]["val_ndcg@10"],
           "tune_seconds": time.time() - t0, "train_seconds_chosen": winner[0]["seconds"]}
    return {"record": rec, "score": winner[1]}


# ----------------------------------------------------------------------------- popularity
def popularity_scores(sp: Split, stage: str) -> np.ndarray:
    p = np.log1p(sp.popularity(stage)) + np.arange(sp.n_items) * 1e-9  # deterministic ties
    return np.repeat(p[None], sp.n_users, 0)


# ----------------------------------------------------------------------------- own SASRec
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
            for _, w in self.named_parameters():  # xavier, as the reference PyTorch SASRec
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
        s = list(s)[-maxlen:]
        if s:
            out[i, maxlen - len(s):] = torch.tensor(s) + 1
    return out


SASREC_GRID = {"lr": [5e-4, 1e-3, 2e-3, 5e-3], "dropout": [0.1, 0.2, 0.3, 0.5], "maxlen": [10, 20, 50]}


def fit_sasrec(sp: Split, cfg: dict, *, max_epochs: int, eval_every: int, patience: int, seed: int,
               batch: int = 128, log=None, select: bool = True):
    """The project's SASRec, plain: full-softmax next-item cross-entropy at every position of every
    user's history (Adam, betas 0.9/0.98, batch 128 users); early stopping on validation NDCG@10."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    maxlen = int(cfg["maxlen"])
    model = build_sasrec(sp.n_items, maxlen=maxlen, dropout=float(cfg["dropout"]))
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]), betas=(0.9, 0.98))
    seqs = [h for h in sp.hist if len(h) >= 2]  # a 1-click history has no next-item position
    full = left_pad(seqs, maxlen + 1)
    inp, tgt = full[:, :-1], full[:, 1:] - 1  # target -1 = padding (ignored)
    rng = np.random.default_rng([seed, 3])

    def train_epoch(_):
        model.train()
        perm, tot = rng.permutation(len(inp)), 0.0
        for s in range(0, len(perm), batch):
            b = torch.as_tensor(perm[s:s + batch])
            t = tgt[b]
            keep = t >= 0
            loss = F.cross_entropy(model.logits(model(inp[b])[keep]), t[keep])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(b)
        return tot / len(perm)

    def score(stage: str) -> np.ndarray:
        return sasrec_scores(model, left_pad(sp.inputs(stage), maxlen))

    def val_ndcg():
        return mean_metrics(per_user(score("valid"), sp, "valid"))["ndcg@10"]

    def snapshot():
        return {k: v.clone() for k, v in model.state_dict().items()}

    best = early_stopping(train_epoch, val_ndcg if select else None, snapshot, max_epochs=max_epochs,
                          eval_every=eval_every, patience=patience, log=log)
    model.load_state_dict(best.pop("state"))
    return best, score


def sasrec_scores(model, inp, chunk: int = 512) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return torch.cat([model.logits(model(inp[s:s + chunk])[:, -1]) for s in range(0, len(inp), chunk)]).numpy()


# ----------------------------------------------------------------------------- RecBole
RECBOLE_GRID = {"lr": [5e-4, 1e-3, 2e-3, 5e-3], "dropout": [0.1, 0.2, 0.3, 0.5], "maxlen": [10, 20, 50]}


def recbole_available() -> bool:
    try:
        import recbole  # noqa: F401
    except ImportError:
        return False
    return True


def write_atomic(sp: Split, root: Path, name: str, maxlen: int) -> Path:
    """Our split as RecBole benchmark atomic files (``<name>.{train,valid,test}.inter`` + ``<name>.item``):
    train = every next-item position of every history (the rows RecBole's own augmentation makes),
    valid = history -> valid target, test = history + valid -> test target; sequences cut to the last
    ``maxlen`` items. Item tokens are our catalog ids, so every catalog item has a RecBole id."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    tok = sp.item_ids
    head = "user_id:token\titem_id_list:token_seq\titem_id:token\n"

    def rows(examples):
        return head + "".join(f"{sp.user_ids[u] if sp.user_ids else u}\t{' '.join(tok[i] for i in p[-maxlen:])}\t"
                              f"{tok[t]}\n" for u, p, t in examples)

    for stage in ("valid", "test"):
        ex = [(u, s, int(t)) for u, (s, t) in enumerate(zip(sp.inputs(stage), sp.targets(stage)))]
        (d / f"{name}.{stage}.inter").write_text(rows(ex))
    (d / f"{name}.train.inter").write_text(rows(sp.train_examples(maxlen)))
    (d / f"{name}.item").write_text("item_id:token\n" + "".join(f"{x}\n" for x in tok))
    return d


def recbole_numpy_compat() -> list[str]:
    """RecBole 1.2.1's ``Config.compatibility_settings`` aliases ``np.float = np.float_`` etc.; NumPy 2
    removed ``np.float_``, ``np.complex_`` and ``np.unicode_``. Put back exactly those three aliases (to the
    NumPy 2 types they named) in this process, so RecBole's own shim runs; RecBole's source is untouched.
    Returns the names set."""
    done = []
    for old, new in (("float_", "float64"), ("complex_", "complex128"), ("unicode_", "str_")):
        if old not in np.__dict__:
            setattr(np, old, getattr(np, new))
            done.append(old)
    return done


def recbole_model(model_name: str, sp: Split, cfg: dict, *, work: Path, seed: int, batch: int = 256):
    """RecBole Config + dataset (our split's atomic files) + dataloaders + model instance."""
    import warnings

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, init_seed

    recbole_numpy_compat()
    # RecBole's dataset loader calls pandas' chained inplace fillna (a FutureWarning per field)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")
    maxlen = int(cfg["maxlen"])
    name = f"split_l{maxlen}"
    write_atomic(sp, work, name, maxlen)
    conf = {
        "data_path": str(work), "checkpoint_dir": str(work / "saved"), "show_progress": False,
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": None,
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"], "item": ["item_id"]},
        "alias_of_item_id": ["item_id_list"], "benchmark_filename": ["train", "valid", "test"],
        "MAX_ITEM_LIST_LENGTH": maxlen, "train_neg_sample_args": None, "loss_type": "CE",
        "eval_args": {"order": "TO", "mode": "full", "group_by": "user"}, "seed": seed,
        "reproducibility": True, "train_batch_size": batch, "eval_batch_size": 512,
        "hidden_dropout_prob": float(cfg["dropout"]), "attn_dropout_prob": float(cfg["dropout"]),
        "learning_rate": float(cfg["lr"]), "device": "cpu", "use_gpu": False, "log_wandb": False,
        "user_inter_num_interval": None, "item_inter_num_interval": None, "filter_inter_by_user_or_item": False,
        "worker": 0,
    }
    config = Config(model=model_name, dataset=name, config_dict=conf)
    # importing recbole.model.sequential_recommender runs sine.py's module-level
    # torch.autograd.set_detect_anomaly(True): every backward of the process then runs in anomaly mode
    # (several times slower, and a NaN gradient raises). Turned off again here.
    import recbole.model.sequential_recommender  # noqa: F401
    import torch

    torch.autograd.set_detect_anomaly(False)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    model = get_model(config["model"])(config, dataset).to("cpu")
    ids = dataset.token2id("item_id", sp.item_ids)  # our catalog index -> RecBole item id
    return config, dataset, train_data, model, np.asarray(ids, dtype=np.int64)


def recbole_scores(model, model_name: str, sp: Split, stage: str, ids: np.ndarray, maxlen: int,
                   chunk: int = 512) -> np.ndarray:
    """``model.full_sort_predict`` for every user's input -> [users, our catalog] (RecBole's column 0
    is padding). BERT4Rec: RecBole 1.2.1's ``reconstruct_test_data`` shifts the sequence one place left
    to append the mask (the oldest item falls off); a leading padding slot is prepended so the whole
    input (its last ``maxlen - 1`` items, + mask = ``maxlen`` positions) is kept."""
    import torch
    from recbole.data.interaction import Interaction

    bert = model_name.lower() == "bert4rec"
    keep = maxlen - 1 if bert else maxlen
    seqs = [[int(ids[i]) for i in s[-keep:]] for s in sp.inputs(stage)]
    lead = 1 if bert else 0
    width = keep + lead
    out = []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(seqs), chunk):
            b = seqs[s:s + chunk]
            seq = torch.zeros(len(b), width, dtype=torch.long)
            for r, x in enumerate(b):
                seq[r, lead:lead + len(x)] = torch.tensor(x)
            inter = Interaction({"item_id_list": seq, "item_length": torch.tensor([len(x) + lead for x in b])})
            out.append(model.full_sort_predict(inter).float()[:, torch.as_tensor(ids)])
    return torch.cat(out).numpy()


def fit_recbole(model_name: str, sp: Split, cfg: dict, *, work: Path, max_epochs: int, eval_every: int,
                patience: int, seed: int, log=None):
    """RecBole's model class, dataset and train dataloader (its batching, shuffling and, for BERT4Rec,
    its ``mask_itemseq`` transform); Adam at ``lr`` (RecBole's default learner); our early stopping and
    evaluation on the protocol's validation targets."""
    import torch

    config, dataset, train_data, model, ids = recbole_model(model_name, sp, cfg, work=work, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]))

    skipped = {"batches": 0}

    def train_epoch(_):
        model.train()
        tot, n = 0.0, 0
        for inter in train_data:
            loss = model.calculate_loss(inter)
            if not torch.isfinite(loss):  # e.g. a BERT4Rec batch without a masked position (0 / 0)
                skipped["batches"] += 1
                continue
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(inter)
            n += len(inter)
        return tot / max(n, 1)

    def score(stage: str) -> np.ndarray:
        return recbole_scores(model, model_name, sp, stage, ids, int(cfg["maxlen"]))

    def val_ndcg():
        return mean_metrics(per_user(score("valid"), sp, "valid"))["ndcg@10"]

    def snapshot():
        return {k: v.clone() for k, v in model.state_dict().items()}

    best = early_stopping(train_epoch, val_ndcg, snapshot, max_epochs=max_epochs, eval_every=eval_every,
                          patience=patience, log=log)
    model.load_state_dict(best.pop("state"))
    best["skipped_nonfinite_batches"] = skipped["batches"]
    return best, score


# ----------------------------------------------------------------------------- HLLM predictor head
HEAD_GRID = {"lr": [1e-3, 2e-3, 5e-3], "weight_decay": [0.1, 0.3, 1.0, 3.0], "recent": [4, 8, 16],
             "negatives": [1024, 100000]}


class HLLMFeatures:
    """A trained model dir's frozen parts, computed once: the User LLM's query states for every
    training position of the protocol (after each history item -> the next one; ``[USER]`` after
    ``history[:-1]`` -> ``history[-1]``), the ``[USER]`` states of the validation and test inputs, the
    item embeddings, and the head's start state (the predictor after joint training, before any fit
    that saw validation targets: ``start_state``)."""

    def __init__(self, model_dir: str, sp: Split, *, start_state: str | None = None, bf16: bool = True,
                 queries: bool = True):
        import pandas as pd
        import torch

        from hllm_creator.model.hllm import HLLMCreator
        from hllm_creator.train.head_fit import next_item_queries

        t0 = time.time()
        self.model = m = HLLMCreator.load(model_dir)
        f = Path(model_dir) / "item_embeddings.parquet"
        if f.exists():
            df = pd.read_parquet(f)
            pos = {x: i for i, x in enumerate(df["item_id"].astype(str))}
            miss = [x for x in sp.item_ids if x not in pos]
            if miss:
                raise ValueError(f"{f}: item {miss[0]!r} of the dataset has no embedding")
            self.item_emb = torch.tensor(np.stack(df["embedding"].to_numpy())[[pos[x] for x in sp.item_ids]]).float()
        else:
            from hllm_creator.data.text import item_text

            raise ValueError(f"{model_dir}: no item_embeddings.parquet (a model with a frozen Item LLM is "
                             f"expected; {item_text.__name__} would re-encode the catalog)")
        if m.predictor.n_ids and m.predictor.n_ids != sp.n_items:
            raise ValueError(f"{model_dir}: the predictor's ID catalog has {m.predictor.n_ids} items, "
                             f"the dataset {sp.n_items}")
        if start_state:
            sd = torch.load(start_state, map_location="cpu", weights_only=True)
            head = {k[len("predictor."):]: v for k, v in sd.items() if k.startswith("predictor.")}
            if not head:
                raise ValueError(f"{start_state}: no predictor.* weights")
            m.predictor.load_state_dict(head)
        self.start = {k: v.clone() for k, v in m.predictor.state_dict().items()}
        self.start_source = start_state or f"{model_dir} (the fitted head)"
        H = m.cfg.max_history

        class TD:  # the fields next_item_queries reads
            pass

        stages = ("valid",) if sp.refit else ("valid", "test")
        self.inputs = {st: [s[-H:] for s in sp.inputs(st)] for st in stages}
        self.users = {st: m.encode_users([self.item_emb[s] for s in self.inputs[st]], autocast_bf16=bf16,
                                         progress=False).float() for st in stages}
        self.q = self.q_pos = None
        self.q_upto = []
        if not queries:
            self.seconds = time.time() - t0
            return
        td = TD()
        users = [u for u, h in enumerate(sp.hist) if len(h) >= 2]
        td.cls_hist = [sp.hist[u][:-1][-H:] for u in users]
        td.cls_pos = [sp.hist[u][-1] for u in users]
        self.q, self.q_pos = next_item_queries(m, td, self.item_emb, bf16=bf16)
        # each query's clicks up to its position (the hybrid's user-side ID part), in next_item_queries' order
        order = sorted(range(len(td.cls_hist)), key=lambda u: len(td.cls_hist[u]))
        self.q_upto = []
        for s in range(0, len(order), 64):
            b = [td.cls_hist[u] for u in order[s:s + 64]]
            self.q_upto += [r[:t + 1] for r in b for t in range(len(r) - 1)] + b
        if len(self.q_upto) != len(self.q):
            raise RuntimeError(f"{len(self.q_upto)} recent rows for {len(self.q)} queries")
        self.seconds = time.time() - t0

    def score_as_is(self, stage: str) -> np.ndarray:
        """The predictor as it stands (e.g. the model's own fitted head), its ID parts reading the
        configured number of last clicks."""
        import torch

        from hllm_creator.model.predictor import recent_rows

        pred = self.model.predictor
        ids_on = bool(pred.n_ids)
        rec = recent_rows(self.inputs[stage], pred.id_recency.numel(), pred.n_ids) if ids_on else None
        items = torch.arange(len(self.item_emb)) if ids_on else None
        pred.eval()
        with torch.no_grad():
            u = self.users[stage]
            return torch.cat([pred(u[s:s + 512], self.item_emb, recent=None if rec is None else rec[s:s + 512],
                                   item_ids=items) for s in range(0, len(u), 512)]).float().numpy()


def fit_head(feat: HLLMFeatures, sp: Split, cfg: dict, *, max_steps: int, eval_every: int, patience: int,
             seed: int, batch: int = 1024, log=None, stop_at: int | None = None):
    """The predictor (towers + ID vectors) from ``feat.start`` trained on the cached training queries
    with HLLM's sampled-softmax next-item loss (``model.losses.next_item_loss``), AdamW + cosine
    schedule as ``train.head_fit``; ``recent`` = how many last clicks the user-side ID part reads
    (its recency weights re-initialized when that changes). One "epoch" here = ``eval_every`` steps."""
    import torch
    from transformers import get_cosine_schedule_with_warmup

    from hllm_creator.model.losses import next_item_loss
    from hllm_creator.model.predictor import recent_rows

    pred = feat.model.predictor
    recency = ("id_recency", "text_recency")  # the text bag's weights follow the ID part's length
    for name in recency:  # an earlier config changed their length: back to the start state's
        if name in feat.start and getattr(pred, name).numel() != feat.start[name].numel():
            setattr(pred, name, torch.nn.Parameter(torch.zeros(feat.start[name].numel())))
    pred.load_state_dict(feat.start)
    k = int(cfg["recent"])
    for name in recency:
        if pred.n_ids and hasattr(pred, name) and getattr(pred, name).numel() != k:
            setattr(pred, name, torch.nn.Parameter(torch.tensor([0.5 ** j for j in range(k)][::-1])))
    ids_on = bool(pred.n_ids)
    none = pred.n_ids
    recent_q = recent_rows(feat.q_upto, k, none) if ids_on else None
    torch.manual_seed(seed)
    params = list(pred.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    sched = get_cosine_schedule_with_warmup(opt, max(1, max_steps // 20), max_steps)
    rng = np.random.default_rng([seed, 7])
    n_q, n_neg = len(feat.q), min(int(cfg["negatives"]), sp.n_items)
    emb = feat.item_emb

    def train_epoch(_):
        pred.train()
        tot = 0.0
        for _ in range(eval_every):
            idx = torch.as_tensor(rng.choice(n_q, size=min(batch, n_q), replace=False))
            neg = torch.as_tensor(rng.choice(sp.n_items, size=n_neg, replace=False))
            loss = next_item_loss(pred, feat.q[idx], feat.q_pos[idx], lambda i: emb[i], neg,
                                  recent=recent_q[idx] if ids_on else None)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            tot += float(loss.detach())
        return tot / eval_every

    def val_ndcg():
        return mean_metrics(per_user(feat.score_as_is("valid"), sp, "valid"))["ndcg@10"]

    def snapshot():
        return {k_: v.clone() for k_, v in pred.state_dict().items()}

    # stop_at (the refit): exactly that many steps of the same schedule, no selection
    best = early_stopping(train_epoch, None if stop_at else val_ndcg, snapshot,
                          max_epochs=max(1, (stop_at or max_steps) // eval_every), eval_every=1, patience=patience,
                          log=log)
    state = best.pop("state")
    best["epoch"] *= eval_every  # in steps
    for c in best["curve"]:
        c["step"] = c.pop("epoch") * eval_every

    def scorer(stage: str, _state=state) -> np.ndarray:
        for name in recency:  # a later config may have changed their length
            if name in _state and getattr(pred, name).numel() != _state[name].numel():
                setattr(pred, name, torch.nn.Parameter(torch.zeros(_state[name].numel())))
        pred.load_state_dict(_state)
        return feat.score_as_is(stage)

    return best, scorer

