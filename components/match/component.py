"""match: score (ad, cluster) pairs with the Item-User predictor, pick the top-k clusters per ad
(glue for ``hllm_creator.infer.match.run``)."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from hllm_creator_kfp.components._images import CPU_IMAGE
from hllm_creator_kfp.components._params import describe


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def match(
    model: Input[Model],
    dataset: Input[Dataset],
    clusters: Input[Dataset],
    matches: Output[Dataset],
    metrics: Output[Metrics],
    feed: Input[Dataset] = None,
    ads: Optional[str] = None,
    n_ads: int = 20,
    top_k: int = 3,
    threshold: Optional[float] = None,
    batch_size: int = 256,
):
    """Match scores of every (ad, cluster) pair; the top_k clusters per ad are selected.

    Args:
        model: Model dir written by the train step (HLLMCreator, its Item-User predictor).
        dataset: Dataset dir (items.parquet, interactions.parquet, manifest.json) from data prepare.
        clusters: Output dir of the cluster step.
        matches: Output dir: matches.parquet (item_id, cluster_id, score, rank, selected) + match_meta.json.
        metrics: Pairs scored/selected, mean and min coverage.
        feed: A checked ad feed (refresh-prepare's feed output): its ad_ids are the ads (overrides ads/n_ads).
        ads: Comma-separated ad item ids (None = the n_ads most-clicked items).
    """
    from hllm_creator.infer.match import MatchConfig, run

    cfg = MatchConfig(model_dir=model.path, data_dir=dataset.path, clusters_dir=clusters.path,
                      ads=[a.strip() for a in (ads or "").split(",") if a.strip()], n_ads=n_ads, top_k=top_k,
                      ads_from=feed.path if feed is not None else None,
                      threshold=threshold, batch_size=batch_size)
    meta = run(cfg, matches.path, progress=False)
    matches.metadata.update({"ads": len(meta["ads"]), "k": meta["k"], "pairs_selected": meta["pairs_selected"]})
    for name in ("pairs_scored", "pairs_selected", "mean_coverage", "min_coverage"):
        metrics.log_metric(name, float(meta[name]))


describe(match)  # input descriptions from the config's fields, written once
