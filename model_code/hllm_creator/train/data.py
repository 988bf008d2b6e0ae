"""Training data: the creative rows (teacher parquet or a stand-in), the cls users, step bundles.

A *bundle* is one optimizer step's worth of examples: ``creative_per_step`` rows of the training
parquet (creative + recon + align) and ``cls_per_step`` users of the dataset (cls: history ->
next item). The HF Trainer iterates bundles with batch size 1; ``BundleCollator`` turns one bundle
into tensors. All bundles have the same size, so cross-rank gathers line up.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hllm_creator.creative.prompts import creative_prompts, frame
from hllm_creator.data.schema import DataError
from hllm_creator.data.text import item_text
from hllm_creator.model.collate import fact_batch

log = logging.getLogger(__name__)

TRAIN_COLUMNS = ["user_profile", "original_title", "original_description", "prompt1", "prompt2", "response",
                 "title_list", "item_id_list", "user_id", "target_item_id"]
REQUIRED = ["user_profile", "response", "item_id_list"]
STANDIN_NOTE = ("STAND-IN training rows built deterministically from the dataset (response = the ad's "
                "original title, profile = a template over the history's categories/brands); "
                "this is NOT teacher data")


def _list(v) -> list:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return []
    return list(v.tolist() if hasattr(v, "tolist") else v)


def template_profile(history_items: list[dict]) -> str:
    """A short templated interest profile: top leaf categories, top brands, the latest item."""
    cats = Counter(list(it["categories"])[-1] for it in history_items if it.get("categories") is not None
                   and len(it["categories"]))
    brands = Counter(it["brand"] for it in history_items if it.get("brand"))
    parts = []
    if cats:
        parts.append("Interested in " + ", ".join(c for c, _ in cats.most_common(3)))
    if brands:
        parts.append("likes brands " + ", ".join(b for b, _ in brands.most_common(2)))
    last = str(history_items[-1]["title"])[:60] if history_items else ""
    if last:
        parts.append(f"recently viewed {last}")
    return "; ".join(parts) + "."


def build_standin(ds, users: pd.DataFrame, n_rows: int, seed: int = 0) -> pd.DataFrame:
    """Deterministic stand-in for the teacher's training parquet (reference schema).

    For ``n_rows`` users (seeded sample): history = the user's train history, ad = the valid target
    (never the held-out test target), prompts from ``creative_prompts``, response = original title.
    """
    items = ds.items.set_index("item_id", drop=False)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(users), size=min(n_rows, len(users)), replace=False)
    rows = []
    for i in sorted(pick.tolist()):
        u = users.iloc[i]
        hist = list(u["history"])
        hitems = [items.loc[x].to_dict() for x in hist]
        ad = items.loc[u["valid_target"]].to_dict()
        ad_d = {"title": ad["title"], "description": ad["description"], "selling_points": _list(ad["selling_points"])}
        p1, p2 = creative_prompts(ad_d)
        rows.append({"user_profile": template_profile(hitems), "original_title": ad["title"],
                     "original_description": ad["description"], "prompt1": p1, "prompt2": p2,
                     "response": " ".join(str(ad["title"]).split()[:20]),
                     "title_list": [h["title"] for h in hitems], "item_id_list": hist,
                     "user_id": u["user_id"], "target_item_id": u["valid_target"],
                     "teacher_model": "standin-template", "prompt_version": "standin-v2"})
    return pd.DataFrame(rows)


def load_train_parquet(path: str | Path, item_index: dict[str, int], *, allow_empty: bool = False) -> pd.DataFrame:
    """Read and validate the teacher's training parquet; errors name file, column and row."""
    path = Path(path)
    if not path.exists():
        raise DataError("training parquet not found", file=str(path))
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read parquet: {e}", file=str(path)) from e
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {list(df.columns)}", file=str(path), column=missing[0])
    if "split" in df.columns:  # construct's held-out rows are for evaluation only, never trained on
        n_held = int((df["split"] != "train").sum())
        df = df[df["split"] == "train"]
        if n_held:
            log.info("%s: %d held-out rows left out of training (evaluation only)", path, n_held)
    if len(df) == 0:
        if allow_empty:
            return df
        raise DataError("no rows", file=str(path))
    df = df.reset_index(drop=True).copy()
    p1s, p2s = [], []
    for i, r in df.iterrows():
        for c in ("user_profile", "response"):
            if not isinstance(r[c], str) or not r[c].strip():
                raise DataError("empty or non-string value", file=str(path), column=c, row=int(i))
        ids = [str(x) for x in _list(r["item_id_list"])]
        if not ids:
            raise DataError("empty history", file=str(path), column="item_id_list", row=int(i))
        bad = [x for x in ids if x not in item_index]
        if bad:
            raise DataError(f"item id {bad[0]!r} is not in the dataset's items.parquet", file=str(path),
                            column="item_id_list", row=int(i))
        p1, p2 = r.get("prompt1"), r.get("prompt2")
        if not (isinstance(p1, str) and isinstance(p2, str) and p2.strip()):
            if not isinstance(r.get("original_title"), str) or not r["original_title"].strip():
                raise DataError("no prompt1/prompt2 and no original_title to build them", file=str(path),
                                column="prompt2", row=int(i))
            p1, p2 = creative_prompts({"title": r["original_title"],
                                       "description": r.get("original_description") or ""})
        p1, p2 = frame(p1, p2)  # the same chat frame as HLLMCreator.build_prompts at inference
        p1s.append(p1)
        p2s.append(p2)
    df["prompt1"], df["prompt2"] = p1s, p2s
    df["item_id_list"] = [[str(x) for x in _list(v)] for v in df["item_id_list"]]
    return df


@dataclass
class TrainData:
    item_ids: list[str]                  # catalog order (index = position)
    item_texts: list[str]
    cls_hist: list[list[int]]            # per cls user: history indices (oldest first)
    cls_pos: list[int]                   # per cls user: target index (the valid target)
    rows: pd.DataFrame                   # creative rows
    row_hist: list[list[int]]
    popularity: np.ndarray               # clicks per item in training data (for the baseline + sampling)
    standin: bool
    # validation users: held out of every cls positive (not cls users, not creative rows); their
    # history -> valid target picks the predictor fit's step
    val_hist: list[list[int]] = None
    val_pos: list[int] = None
    val_user_ids: list[str] = None


def prepare_train_data(ds, split_users: pd.DataFrame, rows: pd.DataFrame, *, standin: bool,
                       cls_users: int | None = None, max_history: int = 50, seed: int = 0,
                       val_users: int = 0) -> TrainData:
    """``val_users`` > 0: that many seeded users (none of them behind a creative row) are held out of
    every cls positive; ``td.val_hist``/``td.val_pos`` (history -> valid target) validate the predictor."""
    item_ids = ds.items["item_id"].astype(str).tolist()
    index = {x: i for i, x in enumerate(item_ids)}
    texts = [item_text(r) for r in ds.items.to_dict("records")]
    users = split_users
    val = users.iloc[:0]
    if val_users:
        taken = set(rows["user_id"].astype(str)) if "user_id" in rows else set()
        free = users[~users["user_id"].astype(str).isin(taken)]
        if len(free) < val_users + 1:
            raise ValueError(f"val_users={val_users}: only {len(free)} users are not behind a creative row")
        val = free.sample(n=val_users, random_state=seed + 17).sort_index()
        users = users.drop(index=val.index)
    if cls_users is not None and cls_users < len(users):
        users = users.sample(n=cls_users, random_state=seed).sort_index()
    cls_hist = [[index[x] for x in h][-max_history:] for h in users["history"]]
    cls_pos = [index[x] for x in users["valid_target"]]
    pop = np.zeros(len(item_ids), dtype=np.int64)
    for h, v in zip(split_users["history"], split_users["valid_target"]):
        for x in list(h) + [v]:
            pop[index[x]] += 1
    row_hist = [[index[x] for x in h][-max_history:] for h in rows["item_id_list"]]
    return TrainData(item_ids, texts, cls_hist, cls_pos, rows.reset_index(drop=True), row_hist, pop, standin,
                     val_hist=[[index[x] for x in h][-max_history:] for h in val["history"]],
                     val_pos=[index[x] for x in val["valid_target"]],
                     val_user_ids=val["user_id"].astype(str).tolist())


def make_bundles(td: TrainData, *, creative_per_step: int, cls_per_step: int, cls_epochs: float,
                 creative_epochs: float, max_steps: int | None, seed: int,
                 group_by_length: int = 1) -> list[dict]:
    """Fixed-size bundles (one per optimizer step), deterministic for a seed.

    ``group_by_length`` = G > 1 sorts the cls users of every G consecutive steps by history length
    before cutting them into steps (each user still appears exactly as often)."""
    rng = np.random.default_rng(seed)
    n_cls, n_rows = len(td.cls_pos), len(td.rows)
    steps_cls = int(np.ceil(n_cls * cls_epochs / cls_per_step))
    steps_cre = int(np.ceil(n_rows * creative_epochs / creative_per_step)) if n_rows else 0
    steps = max(steps_cls, steps_cre, 1)
    if max_steps is not None:
        steps = max_steps

    def stream(n, k):
        out = []
        while len(out) < k:
            out += rng.permutation(n).tolist()
        return out[:k]

    cls_order = stream(n_cls, steps * cls_per_step)
    if group_by_length > 1 and n_cls:
        # like the HF Trainer's group_by_length: within each window of G steps, users of similar
        # history length share a step (little padding in the User LLM); step order is shuffled again
        lens = np.array([len(h) for h in td.cls_hist])
        win = group_by_length * cls_per_step
        grouped = []
        for w in range(0, len(cls_order), win):
            chunk = sorted(cls_order[w:w + win], key=lambda u: (lens[u], u))
            parts = [chunk[i:i + cls_per_step] for i in range(0, len(chunk), cls_per_step)]
            for j in rng.permutation(len(parts)):
                grouped += parts[j]
        cls_order = grouped
    cre_order = creative_stream(td.rows, steps * creative_per_step, rng) if n_rows else []
    return [{"step": s, "cls": cls_order[s * cls_per_step:(s + 1) * cls_per_step],
             "rows": cre_order[s * creative_per_step:(s + 1) * creative_per_step] if n_rows else []}
            for s in range(steps)]


def contrast_pairs(rows: pd.DataFrame) -> list[tuple[int, int]]:
    """Pairs of row indices for the same ad (``target_item_id``) with different responses: the
    contrast that teaches the user slot. Each row is in at most one pair per call."""
    if "target_item_id" not in rows.columns or len(rows) < 2:
        return []
    pairs = []
    for _, g in rows.groupby("target_item_id", sort=True):
        by_resp: dict[str, list[int]] = {}
        for i, r in zip(g.index, g["response"]):
            by_resp.setdefault(str(r), []).append(int(i))
        groups = sorted(by_resp.values(), key=len, reverse=True)
        # round-robin over the responses: consecutive picks come from different responses
        order = [grp[k] for k in range(max(map(len, groups))) for grp in groups if k < len(grp)]
        resp = {i: r for r, idx in by_resp.items() for i in idx}
        k = 0
        while k + 1 < len(order):
            if resp[order[k]] != resp[order[k + 1]]:
                pairs.append((order[k], order[k + 1]))
                k += 2
            else:
                k += 1
    return pairs


def creative_stream(rows: pd.DataFrame, n: int, rng) -> list[int]:
    """``n`` row indices for the creative objective: contrast pairs first (shuffled each pass, a pair
    stays adjacent), then the rows no pair holds; repeated until ``n``."""
    pairs = contrast_pairs(rows)
    paired = {i for p in pairs for i in p}
    single = [i for i in range(len(rows)) if i not in paired]
    out: list[int] = []
    while len(out) < n:
        units = [list(p) for p in pairs] + [[i] for i in single]
        for j in rng.permutation(len(units)):
            out += units[j]
    return out[:n]


def swap_index(rows: pd.DataFrame) -> list[int]:
    """For a bundle's creative rows: each row's partner (same ad, different response, the row next to
    it in the stream), or itself when it has none."""
    idx = list(range(len(rows)))
    if "target_item_id" not in rows.columns:
        return idx
    ads, resp = rows["target_item_id"].tolist(), rows["response"].tolist()
    for k in range(0, len(rows) - 1, 2):
        if ads[k] == ads[k + 1] and resp[k] != resp[k + 1]:
            idx[k], idx[k + 1] = k + 1, k
    return idx


def fact_tensors(tokenizer, rows: pd.DataFrame, max_tokens: int = 16) -> dict:
    """Each row's fact phrases as token ids [R, F, T] (+ mask; ``collate.fact_batch``'s keys) and the
    teacher's chosen index [R] (-1 for a row without facts): the targets of the slot-fact loss."""
    facts = [[str(f) for f in _list(v)] for v in rows["facts"]]
    fb = fact_batch(tokenizer, facts, max_tokens)
    chosen = torch.tensor([int(i) if fs and i is not None and not (isinstance(i, float) and np.isnan(i)) else -1
                           for i, fs in zip(rows["fact_index"], facts)], dtype=torch.long)
    return {"fact_ids": fb.ids, "fact_mask": fb.mask, "fact_chosen": chosen}


class BundleDataset:
    """torch-style map dataset of bundles (the Trainer runs it with batch size 1)."""

    def __init__(self, bundles: list[dict]):
        self.bundles = bundles

    def __len__(self):
        return len(self.bundles)

    def __getitem__(self, i):
        return self.bundles[i]


class BundleCollator:
    """One bundle -> model inputs: histories, cls targets, sampled negatives, slot batches."""

    def __init__(self, model, td: TrainData, *, cls_negatives: int, weights: dict, seed: int = 0,
                 neg_sampling: str = "uniform", contrast_margin: float = 2.0, aux_rows: int | None = None,
                 next_item: bool = False):
        self.model, self.td, self.weights, self.seed = model, td, weights, seed
        self.k = min(cls_negatives, len(td.item_ids))  # >= the catalog: every item is a candidate
        self.contrast_margin, self.aux_rows = contrast_margin, aux_rows
        self.next_item = next_item
        if neg_sampling not in ("uniform", "pop"):
            raise ValueError(f"neg_sampling must be 'uniform' or 'pop', got {neg_sampling!r}")
        p = td.popularity.astype(np.float64) + 1.0
        # uniform: the predictor also learns how popular an item is (in-batch targets are already
        # popularity-distributed); pop: sqrt-popularity sampling, harder negatives
        self.neg_p = None if neg_sampling == "uniform" else p ** 0.5 / (p ** 0.5).sum()

    def __call__(self, batch: list[dict]) -> dict:
        if len(batch) != 1:
            raise ValueError("BundleCollator expects per_device_train_batch_size=1 (one bundle per step)")
        b = batch[0]
        td = self.td
        rows = td.rows.iloc[b["rows"]] if b["rows"] else td.rows.iloc[:0]
        hists = [td.row_hist[r] for r in b["rows"]] + [td.cls_hist[u] for u in b["cls"]]
        L = max(len(h) for h in hists)
        hist_idx = torch.zeros(len(hists), L, dtype=torch.long)
        for i, h in enumerate(hists):
            hist_idx[i, :len(h)] = torch.tensor(h)
        rng = np.random.default_rng([self.seed, int(b["step"])])
        neg = rng.choice(len(td.item_ids), size=self.k, replace=False, p=self.neg_p) if self.k else []
        out = {"hist_idx": hist_idx, "hist_len": torch.tensor([len(h) for h in hists]),
               "pos_idx": torch.tensor([td.cls_pos[u] for u in b["cls"]], dtype=torch.long),
               "neg_idx": torch.as_tensor(np.asarray(neg, dtype=np.int64)),
               "cre_rows": len(rows), "weights": self.weights}
        if self.next_item:
            out["next_item"] = True  # cls: every next-item position of each history (model.forward)
        if len(rows):
            m = self.model
            out["creative"] = m.creative_batch(rows["prompt1"].tolist(), rows["prompt2"].tolist(),
                                               rows["response"].tolist())
            out["swap"] = torch.tensor(swap_index(rows.reset_index(drop=True)), dtype=torch.long)
            if "facts" in rows.columns and "fact_index" in rows.columns:
                out.update(fact_tensors(m.tokenizers["creative"], rows))
            out["contrast_margin"] = self.contrast_margin
            aux = rows["user_profile"].tolist()[:self.aux_rows or None]  # recon/align on the first rows
            out["recon"] = m.recon_batch(aux)
            out["profile"] = m.profile_batch(aux)
        return out
