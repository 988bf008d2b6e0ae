"""publish: the run's serving bundle, checked by loading and registered as one MLflow model version
(glue for ``hllm_creator.publish.publish.publish``)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from hllm_creator_kfp.components._images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def publish(
    model: Input[Model],
    dataset: Input[Dataset],
    clusters: Input[Dataset],
    matches: Input[Dataset],
    creatives: Input[Dataset],
    bundle: Output[Model],
    metrics: Output[Metrics],
    gsb_report: Input[Dataset] = None,
    personalization_report: Input[Dataset] = None,
    register: bool = True,
    check_creative: bool = True,
):
    """One serving bundle per run: model + inference outputs + item catalog + manifest.

    Args:
        model: Model dir written by the train step.
        dataset: Dataset dir (its items.parquet becomes the bundle's item catalog).
        clusters: Output dir of the cluster step (centroids.npy, cluster_meta.json, member_means.npy, medoids.npy).
        matches: Output dir of the match step (matches.parquet).
        creatives: Output dir of the generate step (creatives.parquet).
        bundle: Output dir: bundle.json, model/, artifacts/ (what `hllm-creator serve` and the KServe
            runtime load with no other argument).
        metrics: Bundle size and the load check's counts (items, clusters, creatives).
        gsb_report: Report dir of gsb-eval (gsb_summary.json), copied into the manifest's figures.
        personalization_report: Report dir of personalization-eval (personalization.json).
        register: Register the bundle as a version of hllm-creator with alias candidate.
        check_creative: Also generate once with the creative model in the load check.
    """
    from pathlib import Path

    from hllm_creator.publish.bundle import BundleInputs
    from hllm_creator.publish.publish import publish as run

    inp = BundleInputs(model=Path(model.path), clusters=Path(clusters.path), matches=Path(matches.path),
                       creatives=Path(creatives.path), data_dir=Path(dataset.path),
                       gsb=Path(gsb_report.path) if gsb_report is not None else None,
                       personalization=Path(personalization_report.path) if personalization_report is not None
                       else None)
    res = run(inp, bundle.path, register=register, check_creative=check_creative)
    man = res["manifest"]
    bundle.metadata.update({"bundle_id": man["bundle_id"], "dataset_hash": man["dataset_hash"],
                            "model_version": res.get("version", ""), "files": len(man["files"])})
    metrics.log_metric("bundle_mb", sum(f["bytes"] for f in man["files"].values()) / 2**20)
    for k in ("items", "clusters", "selected_pairs", "creatives"):
        metrics.log_metric(f"bundle_{k}", float(res["check"][k]))
