"""A refresh without retraining: a served bundle + an advertiser's ad feed -> a new bundle version.

The paper's Item LLM reads an ad's text, so an ad with no clicks can be scored: nothing is trained.
Steps (each an MLflow step run nested under one ``refresh`` parent run, as the main pipeline's):

1. ``refresh-prepare`` (:func:`prepare`): check the feed against the bundle's catalog
   (``data.feed``: missing title, duplicate ad_id, an id that names a catalog item of other text...),
   write the refresh dataset (the bundle's catalog + the feed's new ads as items without clicks, and
   the training dataset's interactions: ``--data``, checked against the bundle's record of them) and
   the bundle's clusters as a cluster dir (centroids, slots, assignments): nothing is re-clustered;
2. ``match``: embed the feed's ads with the bundle's Item LLM and score them against the existing
   clusters (``infer.match``, ``ads_from`` = the feed);
3. ``generate``: titles for the selected (ad, cluster) pairs through the gate (``infer.generate``,
   unchanged: the advertiser's selling points are the ad record's ``selling_points``);
4. ``gsb-eval`` (when a judge is given) and ``personalization`` on held-out users (the feed's ads);
5. ``publish`` (:func:`merge_and_publish`): the bundle's matches/creatives with the feed's ads'
   replaced or added, the merged catalog, item embeddings reused from the old bundle (only the new
   ads' rows are new, and those were computed by match), checked by loading, registered as a new
   version with alias ``candidate``: ready for the canary flow (docs/deploy.md).

``pipelines/refresh_pipeline.py`` runs the same steps as a KFP pipeline (local runner: ``hllm-creator
refresh --kfp``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from hllm_creator import tracking
from hllm_creator.data import load_dataset
from hllm_creator.data.feed import FEED_FILE, feed_hash, feed_items, load_feed
from hllm_creator.data.prepare import prepare as prepare_dataset
from hllm_creator.data.schema import DataError, dataset_fingerprint
from hllm_creator.evaluate.config import PersonalizationConfig
from hllm_creator.evaluate.personalization import run as pers_run
from hllm_creator.infer import generate as G
from hllm_creator.infer import match as M
from hllm_creator.infer.common import (
    ASSIGNMENTS,
    CENTROIDS,
    CLUSTER_META,
    CREATIVES,
    MATCHES,
    MEDOIDS,
    MEMBER_MEANS,
    read_json,
    resolve_file,
)
from hllm_creator.infer.embed import load_model
from hllm_creator.io import atomic_dir, write_json, write_parquet
from hllm_creator.publish.bundle import BundleInputs, _link_or_copy
from hllm_creator.publish.publish import publish
from hllm_creator.publish.refresh_config import RefreshConfig
from hllm_creator.serving.bundle import ARTIFACTS, bundle_paths, read_manifest
from hllm_creator.teacher.gsb import GSBConfig, log_gsb, run_gsb, write_outputs

log = logging.getLogger(__name__)

REFRESH_META = "refresh_meta.json"


# ---- 1. prepare -----------------------------------------------------------------------------------
def _interactions_sha(data_dir: Path) -> str | None:
    m = data_dir / "manifest.json"
    return (read_json(m).get("sha256") or {}).get("interactions.parquet") if m.exists() else None


def check_data(manifest: dict, data_dir: Path) -> None:
    """``data_dir`` must be the bundle's dataset (its hash) or hold the interactions the bundle records."""

    _, h = dataset_fingerprint(data_dir)
    want_i = manifest.get("interactions_sha256")
    if h == manifest.get("dataset_hash") or (want_i and want_i == _interactions_sha(data_dir)):
        return
    raise DataError(f"--data is dataset {h}, the bundle was built on {manifest.get('dataset_hash')} "
                    f"(dataset {manifest.get('dataset')!r}): give the dataset dir the bundle's model was trained on",
                    file=str(data_dir))


def prepare(bundle: str | Path, feed: str | Path, data_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Check the feed, write ``out/dataset`` (refresh dataset), ``out/clusters`` (the bundle's clusters)
    and ``out/feed/feed.parquet`` (the checked feed). Returns paths and counts."""

    bundle, out, data_dir = Path(bundle), Path(out), Path(data_dir)
    man = read_manifest(bundle)
    model_dir, art, items_f = bundle_paths(bundle)
    for name in (CENTROIDS, CLUSTER_META, ASSIGNMENTS):
        if not (art / name).exists():
            raise DataError(f"the bundle lacks {name} (published before refreshes existed): re-publish the run "
                            f"(`hllm-creator publish RUN_DIR`) to refresh it", file=str(art / name))
    check_data(man, data_dir)
    ds = load_dataset(data_dir)
    catalog = pd.read_parquet(items_f)
    fd = load_feed(feed, catalog)
    new = feed_items(fd)
    ds_out = prepare_dataset(pd.concat([catalog, new], ignore_index=True), ds.interactions, out / "dataset",
                             name=f"{man.get('dataset')}+feed-{feed_hash(fd)}",
                             source=f"bundle {man.get('bundle_id')} catalog + ad feed {Path(feed).name}",
                             license=str(ds.manifest.get("license", "unknown")), items_file=str(feed))
    with atomic_dir(out / "clusters") as tmp:
        for name in (CENTROIDS, CLUSTER_META, MEMBER_MEANS, MEDOIDS, ASSIGNMENTS):
            if (art / name).exists():
                _link_or_copy(art / name, tmp / name)
    write_parquet(fd, out / "feed" / FEED_FILE)
    return {"bundle": str(bundle), "bundle_id": man.get("bundle_id"), "model_dir": str(model_dir),
            "artifacts": str(art), "dataset": str(out / "dataset"), "clusters": str(out / "clusters"),
            "feed": str(out / "feed" / FEED_FILE), "feed_hash": feed_hash(fd), "ads": fd["ad_id"].tolist(),
            "new_ads": int(len(new)), "catalog_ads_in_feed": int(fd["in_catalog"].sum()),
            "advertiser_selling_points": int(fd["advertiser_selling_points"].sum()),
            "catalog_items": int(len(ds_out.items))}


def run_prepare(bundle: str | Path, feed: str | Path, data_dir: str | Path, out: str | Path,
                config=None) -> dict[str, Any]:
    """:func:`prepare` as the step ``refresh-prepare``: an MLflow step run (nested under the refresh's
    parent run) with its counts as metrics."""

    params = config if config is not None else {"bundle": str(bundle), "feed": str(feed), "data_dir": str(data_dir)}
    with tracking.step_run("refresh-prepare", params):
        res = prepare(bundle, feed, data_dir, out)
        tracking.log_metrics({k: res[k] for k in ("new_ads", "catalog_ads_in_feed", "advertiser_selling_points",
                                                  "catalog_items")})
    return res


# ---- 5. merge + publish --------------------------------------------------------------------------
def merge_outputs(bundle_art: str | Path, matches_dir: str | Path, creatives_dir: str | Path,
                  out: str | Path) -> dict[str, int]:
    """The bundle's matches/creatives with the new ads' rows added (an ad of both: the new rows) ->
    ``out/matches`` and ``out/creatives`` (plus the bundle's member_id_parts.npy: same clusters)."""

    art, out = Path(bundle_art), Path(out)
    counts = {}
    for name, src, dst in ((MATCHES, matches_dir, "matches"), (CREATIVES, creatives_dir, "creatives")):
        old = pd.read_parquet(art / name)
        new = pd.read_parquet(resolve_file(src, name))
        ads = set(new["item_id"].astype(str))
        kept = old[~old["item_id"].astype(str).isin(ads)]
        merged = pd.concat([kept, new], ignore_index=True) if len(kept) else new.reset_index(drop=True)
        write_parquet(merged, out / dst / name)
        counts[f"{dst}_rows"] = int(len(merged))
        counts[f"{dst}_new_rows"] = int(len(new))
    for f in ("member_id_parts.npy", "match_meta.json"):
        src = art / f if f == "member_id_parts.npy" else resolve_file(matches_dir, f)
        if src.exists():
            _link_or_copy(src, out / "matches" / f)
    gm = Path(creatives_dir) / "generate_meta.json"
    if gm.exists():
        _link_or_copy(gm, out / "creatives" / "generate_meta.json")
    return counts


def merge_and_publish(bundle: str | Path, prepared: dict, matches_dir: str | Path, creatives_dir: str | Path,
                      out: str | Path, *, gsb: str | Path | None = None, personalization: str | Path | None = None,
                      parent_run_id: str | None = None, register: bool = True,
                      bundle_out: str | Path | None = None) -> dict[str, Any]:
    """Merge the new ads into the bundle's outputs (under ``out/merged``) and publish the new bundle at
    ``bundle_out`` (default ``out/bundle``)."""

    bundle, out = Path(bundle), Path(out)
    man = read_manifest(bundle)
    counts = merge_outputs(bundle / ARTIFACTS, matches_dir, creatives_dir, out / "merged")
    inp = BundleInputs(model=bundle / "model", clusters=Path(prepared["clusters"]),
                       matches=out / "merged" / "matches", creatives=out / "merged" / "creatives",
                       data_dir=Path(prepared["dataset"]), gsb=Path(gsb) if gsb else None,
                       personalization=Path(personalization) if personalization else None,
                       mlflow_run_id=parent_run_id, train_run_id=man.get("train_run_id"),
                       extra={"model_hash": man.get("model_hash")})
    info = {"refreshed_from": man.get("bundle_id"), "refresh_feed_hash": prepared.get("feed_hash"),
            "refresh_new_ads": prepared.get("new_ads"), "train_run_id": man.get("train_run_id"),
            "interactions_sha256": man.get("interactions_sha256") or _interactions_sha(Path(prepared["dataset"]))}
    res = publish(inp, bundle_out or (out / "bundle"), register=register, reuse_embeddings=[bundle / ARTIFACTS], run_info=info)
    res["merge"] = counts
    return res


# ---- the CLI path: every step in this process ------------------------------------------------------
def run(cfg: RefreshConfig, out: str | Path, *, llm=None, progress: bool = True) -> dict[str, Any]:
    """All steps in-process under one MLflow parent run ``refresh``; returns what was written and measured."""

    t0 = time.time()
    out = Path(out).resolve()
    secs: dict[str, float] = {}
    with tracking.parent_run("refresh", tags={"pipeline": "refresh", "base_bundle": str(cfg.bundle)}) as parent:
        tracking.log_config(cfg)
        t = time.time()
        prep = run_prepare(cfg.bundle, cfg.feed, cfg.data_dir, out, config=cfg)
        ds_name, ds_hash = dataset_fingerprint(prep["dataset"])
        client = tracking.mlflow_utils._mlflow().MlflowClient()
        for k, v in {"dataset": ds_name, "dataset_hash": ds_hash, "feed_hash": prep["feed_hash"],
                     "base_bundle_id": str(prep["bundle_id"])}.items():
            client.set_tag(parent.info.run_id, k, v)
        secs["prepare"] = time.time() - t
        model = load_model(prep["model_dir"])
        t = time.time()
        mcfg = M.MatchConfig(model_dir=prep["model_dir"], data_dir=prep["dataset"], clusters_dir=prep["clusters"],
                             ads_from=prep["feed"], top_k=cfg.top_k, threshold=cfg.threshold)
        mmeta = M.run(mcfg, out / "match", progress=progress, model=model)
        secs["match"] = time.time() - t
        t = time.time()
        gcfg = G.GenerateConfig(model_dir=prep["model_dir"], data_dir=prep["dataset"], matches=str(out / "match"),
                                clusters_dir=prep["clusters"], select=cfg.select, max_new_tokens=cfg.max_new_tokens,
                                batch_size=cfg.batch_size, bf16=cfg.bf16)
        gmeta = G.run(gcfg, out / "generate", progress=progress, model=model)
        secs["generate"] = time.time() - t
        gsb_dir = None
        if cfg.judge_samples:
            t = time.time()
            gsb_dir = out / "gsb"
            scfg = GSBConfig(input=str(out / "generate" / "creatives.parquet"), out=str(gsb_dir), data=prep["dataset"],
                             assignments=str(Path(prep["clusters"]) / "assignments.parquet"),
                             samples=cfg.judge_samples, **({"llm": llm} if llm is not None else {}))
            with tracking.step_run("gsb-eval", scfg):
                verdicts, summary = run_gsb(scfg)
                write_outputs(verdicts, summary, gsb_dir)
                log_gsb(summary, gsb_dir)
            secs["gsb"] = time.time() - t
        pers_dir, pres = None, {}
        if cfg.personalization:
            t = time.time()
            pers_dir = out / "personalization"
            pcfg = PersonalizationConfig(model_dir=prep["model_dir"], data_dir=prep["dataset"],
                                         clusters_dir=prep["clusters"], matches=str(out / "match"),
                                         creatives=str(out / "generate"), max_ads=cfg.max_ads,
                                         heldout_share=cfg.heldout_share, permutations=cfg.permutations,
                                         max_new_tokens=min(cfg.max_new_tokens, 24), bf16=cfg.bf16,
                                         swap_pairs=cfg.swap_pairs, batch_size=cfg.batch_size)
            pres = pers_run(pcfg, pers_dir, model=model, progress=progress)
            secs["personalization"] = time.time() - t
        del model
        t = time.time()
        pub = merge_and_publish(cfg.bundle, prep, out / "match", out / "generate", out, gsb=gsb_dir,
                                personalization=pers_dir, parent_run_id=parent.info.run_id, register=cfg.register)
        secs["publish"] = time.time() - t
        total = time.time() - t0
        res = {"prepare": prep, "match": {k: mmeta[k] for k in ("pairs_scored", "pairs_selected", "mean_coverage")},
               "generate": {k: gmeta.get(k) for k in ("generations", "changed_titles", "copy_rate", "fallback_rate",
                                                      "distinct_titles_per_ad")},
               "personalization": (pres.get("metrics") if cfg.personalization else None),
               "bundle": pub["bundle"], "bundle_id": pub["manifest"]["bundle_id"], "version": pub.get("version"),
               "merge": pub["merge"], "seconds": {k: round(v, 1) for k, v in secs.items()},
               "total_seconds": round(total, 1), "parent_run_id": parent.info.run_id}
        tracking.log_metrics({f"refresh_{k}_seconds": v for k, v in secs.items()} | {"refresh_seconds": total,
                             "refresh_new_ads": prep["new_ads"], **(pres.get("metrics") or {})})
        write_json(res, out / REFRESH_META)
        tracking.log_json(res, REFRESH_META)
    return res
