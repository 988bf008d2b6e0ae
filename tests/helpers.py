"""Test helpers: small real datasets, tiny random models, a tiny serving stack, tracking isolation.

Only tests (``tests/``, ``components/*/tests/``; the root ``conftest.py`` puts this folder on
``sys.path``) and benchmarks import this module: nothing in the library does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hllm_creator.infer.common import CREATIVES, MATCHES


# ---- data ------------------------------------------------------------------------------------------
def small_dataset(out: str | Path, n_users: int = 60, *, source: str | Path | None = None):
    """A real slice of the bundled data: the first ``n_users`` users (sorted ids), their clicks, their
    items, prepared into a dataset dir at ``out`` (same contract and checks as the full dataset).
    ``source``: a prepared dataset dir to slice (default: the bundled data, prepared in a temp dir)."""
    from hllm_creator.data import load_dataset
    from hllm_creator.data.prepare import prepare, prepare_bundled

    if source is None:
        import shutil

        tmp = Path(tempfile.mkdtemp(prefix="hllm-bundled-"))
        try:
            full = prepare_bundled(tmp / "amazon_scientific")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        full = load_dataset(source)
    users = sorted(full.interactions["user_id"].unique())[:n_users]
    inter = full.interactions[full.interactions["user_id"].isin(set(users))]
    items = full.items[full.items["item_id"].isin(set(inter["item_id"]))]
    return prepare(items.reset_index(drop=True), inter.reset_index(drop=True), out, name=f"bundled-{n_users}u",
                   source=f"first {n_users} users of the bundled dataset", license="see bundled dataset")


# ---- models ----------------------------------------------------------------------------------------
def tiny_model(seed: int = 0, **overrides):
    """An untrained tiny-llama HLLMCreator (hidden 64, 2 layers per LLM; SmolLM2 tokenizer)."""
    from hllm_creator.model.config import ModelConfig
    from hllm_creator.model.hllm import HLLMCreator

    cfg = ModelConfig(item_llm="tiny-llama", user_llm="tiny-llama", creative_llm="tiny-llama",
                      predictor_dim=32, predictor_hidden=64, **overrides)
    return HLLMCreator.from_config(cfg, seed=seed)


def tiny_model_dir(path: str | Path, seed: int = 0, **overrides) -> Path:
    """An untrained tiny-llama HLLMCreator saved as a model dir at ``path`` (``HLLMCreator.load``
    reads it; the files of a trained dir, with an ``eval.json`` marked ``"untrained": true``)."""
    m = tiny_model(seed=seed, **overrides)
    return m.save(path, json_files={"eval.json": {"untrained": True, "note": "tiny random model for tests"}})


def tiny_workflow(root: str | Path, n_users: int = 60):
    """(dataset dir, tiny untrained model dir) under ``root`` for end-to-end tests."""
    root = Path(root)
    data = root / "data"
    small_dataset(data, n_users)
    model = tiny_model_dir(root / "model")
    return data, Path(model)


_SHARED: dict = {}


def shared_tiny_workflow(n_users: int = 60):
    """``tiny_workflow`` built once per process (a temp dir); the ``infer_workflow`` fixture of the root
    conftest.py. Read-only: do not write into it."""
    if n_users not in _SHARED:
        import atexit
        import shutil

        root = Path(tempfile.mkdtemp(prefix="hllm-infer-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _SHARED[n_users] = tiny_workflow(root, n_users)
    return _SHARED[n_users]


def tiny_clusters_and_matches(root: str | Path, *, k: int, n_ads: int, top_k: int = 2):
    """On the shared tiny workflow, what the cluster and match steps write, made by the library:
    ``root/clusters`` and ``root/matches/matches.parquet``. Returns (data dir, model dir, dataset,
    matches DataFrame)."""
    from hllm_creator.data import load_dataset
    from hllm_creator.infer import cluster as cl
    from hllm_creator.infer import embed as E
    from hllm_creator.infer import match as M

    root = Path(root)
    data, mdir = shared_tiny_workflow()
    ds = load_dataset(data)
    model = E.load_model(mdir)
    ids, emb = E.embed_users(model, ds.items, E.histories(ds.interactions), progress=False)
    res = cl.cluster(emb, cl.ClusterConfig(k=k, min_cluster_size=2), progress=False)
    cl.write(res, ids, root / "clusters")
    cfg = M.MatchConfig(model_dir=str(mdir), data_dir=str(data), clusters_dir=str(root / "clusters"), n_ads=n_ads,
                        top_k=top_k, item_cache=str(root / "c.parquet"))
    m, _ = M.match(model, ds.items, M.default_ads(ds.items, ds.interactions, n_ads), res.member_means, res.sizes,
                   cfg, progress=False)
    (root / "matches").mkdir()
    m.to_parquet(root / "matches" / "matches.parquet")
    return data, mdir, ds, m


def tiny_embed_and_cluster(root: str | Path, data, mdir, *, k: int = 4):
    """``embed`` and ``cluster`` runs (library ``run`` functions, MLflow runs included) into
    ``root/emb`` and ``root/clusters``; returns the loaded model."""
    from hllm_creator.infer import cluster as cl
    from hllm_creator.infer import embed as E

    root = Path(root)
    model = E.load_model(mdir)
    E.run(E.EmbedConfig(model_dir=str(mdir), data_dir=str(data), item_cache=str(root / "c.parquet")),
          root / "emb", progress=False, model=model)
    cl.run(root / "emb", root / "clusters", cl.ClusterConfig(k=k, min_cluster_size=2), progress=False)
    return model


# ---- tracking --------------------------------------------------------------------------------------
def module_store(root: str | Path):
    """A context manager: HLLM_WORKDIR + a sqlite MLflow store under ``root`` for a module's fixtures
    (servers started as subprocesses inherit them), no parent run inherited; restored on exit."""
    import contextlib

    import pytest

    @contextlib.contextmanager
    def ctx():
        with pytest.MonkeyPatch.context() as mp:
            use_store(mp, root)
            mp.delenv("HLLM_PARENT_RUN_ID", raising=False)
            yield Path(root)

    return ctx()


def use_store(monkeypatch, root: str | Path) -> None:
    """Point HLLM_WORKDIR and MLFLOW_TRACKING_URI at ``root`` (a module's shared store)."""
    monkeypatch.setenv("HLLM_WORKDIR", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{Path(root) / 'mlflow.db'}")


def init_tracking_store() -> None:
    """Create the sqlite store's tables now, so parallel subprocess tasks do not race to migrate it."""
    from hllm_creator.tracking import ensure_experiment

    ensure_experiment()


def kfp_local(root: str | Path) -> Path:
    """The KFP local SubprocessRunner on this venv, pipeline root ``root/kfp``, the tracking store
    ready (for a component's local-runner test); returns the pipeline root."""
    import kfp.local

    init_tracking_store()
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(Path(root) / "kfp"))
    return Path(root) / "kfp"


def metric(text: str, sample: str, **labels) -> float:
    """One sample of a Prometheus text exposition (0 when absent), parsed by prometheus_client."""
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


# ---- serving -----------------------------------------------------------------------------------------
def tiny_serving_stack(out: str | Path, *, n_users: int = 48, k: int = 3, n_ads: int = 12, top_k: int = 1,
                       seed: int = 0, generate: bool = True, data_dir: str | Path | None = None) -> dict:
    """Untrained tiny-llama model + real inference outputs on a slice of the bundled dataset.

    Built with the real library steps (``infer.embed.embed_users``, ``infer.cluster.fit/write``,
    ``infer.match.score_pairs/select``, ``infer.generate.generate_pairs``). A random model rarely
    writes a grounded title, so the first selected pair's creative is replaced by a title made of
    the ad's own first words (checked by the real grounding check), so the personalized path of the
    predictor is exercised too. Returns paths and ids: model_dir, artifacts, items, users
    (user_id -> history item ids), ads, selected (list of (ad, cluster)), personalized pair.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: 1 thread is faster, and far faster on a busy shared CPU
    try:
        return _tiny_serving_stack(Path(out), n_users=n_users, k=k, n_ads=n_ads, top_k=top_k, seed=seed,
                                   generate=generate, data_dir=data_dir)
    finally:
        torch.set_num_threads(threads)


def _tiny_serving_stack(out: Path, *, n_users: int, k: int, n_ads: int, top_k: int, seed: int, generate: bool,
                        data_dir: str | Path | None) -> dict:
    import pandas as pd

    from hllm_creator.data.prepare import prepare_bundled
    from hllm_creator.infer import cluster as cl
    from hllm_creator.infer.embed import embed_users, histories
    from hllm_creator.io import write_parquet

    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir) if data_dir is not None else out / "data"
    if not (data_dir / "items.parquet").exists():
        prepare_bundled(data_dir)
    items = pd.read_parquet(data_dir / "items.parquet")
    inter = pd.read_parquet(data_dir / "interactions.parquet")
    hist = histories(inter)
    hist = hist[hist.map(len) >= 3].sort_index().iloc[:n_users]
    used = sorted({i for h in hist for i in h})
    clicks = inter[inter["item_id"].isin(used)].groupby("item_id").size().sort_values(ascending=False)
    ads = sorted(clicks.index[:n_ads].tolist())
    sub = items[items["item_id"].isin(set(used) | set(ads))].reset_index(drop=True)
    write_parquet(sub, out / "items.parquet")
    model_dir = tiny_model_dir(out / "model", seed=seed)
    from hllm_creator.model import HLLMCreator

    model = HLLMCreator.load(model_dir)
    users, emb = embed_users(model, sub, hist, progress=False)
    res = cl.fit(emb, k, cl.ClusterConfig(k=k, min_cluster_size=1, seed=seed))
    art = out / "artifacts"
    cl.write(res, users, art)
    from hllm_creator.data.text import item_text
    from hllm_creator.infer.match import score_pairs, select

    texts = {r["item_id"]: item_text(r) for r in sub.to_dict("records")}
    import torch

    with torch.inference_mode():
        item_emb = model.encode_items([texts[a] for a in ads]).numpy()
    scores = score_pairs(model, res.member_means, item_emb, progress=False)
    m = select(scores, ads, top_k)
    write_parquet(m, art / MATCHES)
    pairs = m[m["selected"]][["item_id", "cluster_id", "score"]].reset_index(drop=True)
    if generate:
        from hllm_creator.infer.generate import GenerateConfig, generate_pairs

        cfg = GenerateConfig(model_dir=str(model_dir), data_dir=str(data_dir), matches=str(art),
                             clusters_dir=str(art), do_sample=False, max_new_tokens=8, batch_size=16)
        cre = generate_pairs(model, pairs, sub, res.member_means, cfg, progress=False)
    else:
        cre = pd.DataFrame({"item_id": pairs["item_id"], "cluster_id": pairs["cluster_id"],
                            "original_title": [sub.set_index("item_id").loc[i, "title"] for i in pairs["item_id"]],
                            "llm_output": "", "score": pairs["score"], "grounded": False,
                            "reasons": [["not generated"]] * len(pairs)})
    from hllm_creator.creative.ad import Ad
    from hllm_creator.creative.copy import is_copy
    from hllm_creator.creative.gate import check_grounding

    def prefix(title: str) -> str:  # a strict prefix that still differs from the original once folded
        w = str(title).split()
        return " ".join(w[: max(2, min(6, len(w) - 1))])

    k = next((i for i, t in enumerate(cre["original_title"]) if not is_copy(prefix(t), t)), 0)
    if k:
        cre = pd.concat([cre.iloc[[k]], cre.drop(index=cre.index[k])]).reset_index(drop=True)
    first = cre.iloc[0]
    short = prefix(first["original_title"])
    ok = check_grounding(short, Ad(title=str(first["original_title"])))
    if not ok.ok:
        raise RuntimeError(f"fixture title {short!r} not grounded: {ok.reasons}")
    cre.loc[0, "llm_output"] = short
    cre.loc[0, "grounded"] = True
    cre.at[0, "reasons"] = []
    if "title" in cre.columns:
        cre.loc[0, "title"] = short
    for col, v in (("source", "generated"), ("personalized", True)):
        if col in cre.columns:
            cre.loc[0, col] = v
    write_parquet(cre, art / CREATIVES)
    asg = dict(zip(users, res.cluster_ids.tolist()))
    return {"model_dir": str(model_dir), "artifacts": str(art), "items": str(out / "items.parquet"),
            "users": {u: list(hist[u]) for u in users}, "assignments": asg, "ads": ads,
            "selected": [(str(a), int(c)) for a, c in zip(pairs["item_id"], pairs["cluster_id"])],
            "personalized": (str(first["item_id"]), int(first["cluster_id"]), short),
            "titles": dict(zip(sub["item_id"], sub["title"]))}
