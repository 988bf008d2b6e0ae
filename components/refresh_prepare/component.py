"""refresh_prepare: check an ad feed against a served bundle, write the refresh dataset (catalog + new
ads without clicks), the bundle's clusters and model as step outputs (glue for
``hllm_creator.publish.refresh.run_prepare``)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from hllm_creator_kfp.components._images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def refresh_prepare(
    bundle: Input[Model],
    feed: Input[Dataset],
    dataset: Input[Dataset],
    refresh_dataset: Output[Dataset],
    clusters: Output[Dataset],
    checked_feed: Output[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
):
    """The refresh's inputs, checked: nothing is trained or re-clustered.

    Args:
        bundle: The served bundle dir (bundle.json, model/, artifacts/ with assignments.parquet).
        feed: The ad feed file (CSV/TSV/JSONL/parquet; data.feed's contract) or a dir holding one.
        dataset: The dataset dir the bundle's model was trained on (its interactions).
        refresh_dataset: Output dataset dir: the bundle's catalog + the feed's new ads, the same interactions.
        clusters: Output cluster dir: the bundle's centroids, slots and assignments.
        checked_feed: Output dir: feed.parquet (the checked feed; match reads its ad_ids).
        model: Output model dir: the bundle's model (hard links).
        metrics: New ads, catalog ads in the feed, ads with the advertiser's selling points.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from hllm_creator.publish.bundle import _copy_tree
    from hllm_creator.publish.refresh import run_prepare

    src = Path(feed.path)
    if src.is_dir():  # an imported dir: the one feed file in it
        files = sorted(p for p in src.iterdir() if p.suffix in (".csv", ".tsv", ".jsonl", ".parquet", ".ndjson"))
        if len(files) != 1:
            raise ValueError(f"feed dir {src} must hold exactly one .csv/.tsv/.jsonl/.parquet file, found {files}")
        src = files[0]
    work = Path(tempfile.mkdtemp(prefix="refresh-prepare-"))
    try:
        res = run_prepare(bundle.path, src, dataset.path, work)
        for key, art in (("dataset", refresh_dataset), ("clusters", clusters)):
            _copy_tree(Path(res[key]), Path(art.path))
        _copy_tree(Path(res["feed"]).parent, Path(checked_feed.path))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _copy_tree(Path(bundle.path) / "model", Path(model.path))
    checked_feed.metadata.update({"feed_hash": res["feed_hash"], "ads": len(res["ads"]),
                                  "base_bundle_id": str(res["bundle_id"])})
    for k in ("new_ads", "catalog_ads_in_feed", "advertiser_selling_points", "catalog_items"):
        metrics.log_metric(k, float(res[k]))
