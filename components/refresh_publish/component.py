"""refresh_publish: the served bundle's outputs + the new ads' -> one new checked, registered bundle
version (glue for ``hllm_creator.publish.refresh.merge_and_publish``)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from hllm_creator_kfp.components._images import CPU_IMAGE
from hllm_creator_kfp.components._params import describe


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def refresh_publish(
    base_bundle: Input[Model],
    refresh_dataset: Input[Dataset],
    clusters: Input[Dataset],
    checked_feed: Input[Dataset],
    matches: Input[Dataset],
    creatives: Input[Dataset],
    bundle: Output[Model],
    metrics: Output[Metrics],
    gsb_report: Input[Dataset] = None,
    personalization_report: Input[Dataset] = None,
    register: bool = True,
):
    """A new bundle version with the old and the new ads (alias candidate): ready for the canary flow.

    Args:
        base_bundle: The served bundle the refresh started from.
        refresh_dataset: refresh-prepare's dataset (its items.parquet becomes the bundle's catalog).
        clusters: refresh-prepare's cluster dir (the bundle's clusters).
        checked_feed: refresh-prepare's checked feed (feed hash, counts).
        matches: Output dir of match for the new ads.
        creatives: Output dir of generate for the new ads.
        bundle: Output bundle dir (bundle.json, model/, artifacts/ with item embeddings for every ad).
        metrics: Rows of the merged matches/creatives, new rows, bundle size.
        gsb_report: Report dir of gsb-eval on the new ads' titles.
        personalization_report: Report dir of personalization-eval on the new ads.
    """
    import os
    import shutil
    import tempfile
    from pathlib import Path

    import pandas as pd

    from hllm_creator.data.feed import FEED_FILE
    from hllm_creator.publish.refresh import merge_and_publish

    fd = pd.read_parquet(Path(checked_feed.path) / FEED_FILE)
    prepared = {"dataset": refresh_dataset.path, "clusters": clusters.path,
                "feed_hash": checked_feed.metadata.get("feed_hash"), "new_ads": int((~fd["in_catalog"]).sum())}
    work = Path(tempfile.mkdtemp(prefix="refresh-publish-"))
    try:
        res = merge_and_publish(base_bundle.path, prepared, matches.path, creatives.path, work,
                                gsb=gsb_report.path if gsb_report is not None else None,
                                personalization=personalization_report.path if personalization_report is not None
                                else None, parent_run_id=os.environ.get("HLLM_PARENT_RUN_ID"), register=register,
                                bundle_out=bundle.path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    man = res["manifest"]
    bundle.metadata.update({"bundle_id": man["bundle_id"], "refreshed_from": str(man.get("refreshed_from")),
                            "model_version": res.get("version", ""), "files": len(man["files"])})
    for k, v in res["merge"].items():
        metrics.log_metric(k, float(v))
    metrics.log_metric("bundle_mb", sum(f["bytes"] for f in man["files"].values()) / 2**20)


describe(refresh_publish)  # input descriptions from the config's fields, written once
