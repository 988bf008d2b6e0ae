"""personalization_eval: personalization on held-out users (glue for
``hllm_creator.evaluate.personalization.run``)."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from hllm_creator_kfp.components._images import GPU_IMAGE
from hllm_creator_kfp.components._params import describe


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def personalization_eval(
    model: Input[Model],
    dataset: Input[Dataset],
    clusters: Input[Dataset],
    matches: Input[Dataset],
    creatives: Input[Dataset],
    report: Output[Dataset],
    metrics: Output[Metrics],
    train_set: Input[Dataset] = None,
    judge_base_url: str = "",
    judge_model: str = "",
    judge_samples: int = 0,
    judge_max_tokens: int = 64,
    concurrency: int = 4,
    max_ads: int = 20,
    members_per_cluster: int = 0,
    permutations: int = 2000,
    heldout_share: float = 0.1,
    swap_pairs: int = 0,
    nll_rows: int = 128,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    bf16: bool = False,
    slot: str = "medoid",
    bootstrap: int = 2000,
    seed: int = 0,
    cache_path: Optional[str] = None,
):
    """Copy rate, distinct titles per ad, slot sensitivity (greedy swap, NLL own vs shuffled), audience
    fit (MiniLM ruler) and cross-cluster GSB on held-out users, each with a bootstrap 95% CI.

    Args:
        model: Model dir written by the train step.
        dataset: Dataset dir (items.parquet, interactions.parquet, manifest.json) from data prepare.
        clusters: Output dir of the cluster step (assignments.parquet, member_means.npy).
        matches: Output dir of the match step.
        creatives: Output dir of the generate step (creatives.parquet: the served `title`).
        report: Output dir: personalization.json, per_ad.parquet, audience_fit/slot_swap/nll/xgsb parquets, plots.
        metrics: pers_* figures with their ci_low / ci_high.
        train_set: Output dir of dataset-construct (train.parquet): held-out rows for the NLL test.
        members_per_cluster: At most N held-out members per cluster (seeded sample; 0 = all).
        swap_pairs: At most N pairs for the greedy swap (0 = all).
        judge_max_tokens: Max tokens of each judge reply.
        batch_size: Generation / NLL batch.
        seed: Seed of member sampling, the shuffle and the bootstrap.
        cache_path: sqlite judge-reply cache (None = default under $HLLM_WORKDIR).
    """
    import os

    from hllm_creator.evaluate.config import PersonalizationConfig
    from hllm_creator.evaluate.personalization import run
    from hllm_creator.llm.client import LLMConfig, default_cache_path

    llm = LLMConfig(base_url=judge_base_url or None, model=judge_model or None, concurrency=concurrency,
                    progress=False, cache_path=cache_path or default_cache_path())
    cfg = PersonalizationConfig(model_dir=model.path, data_dir=dataset.path, clusters_dir=clusters.path,
                                matches=matches.path, creatives=creatives.path,
                                train_set=train_set.path if train_set is not None else None, max_ads=max_ads,
                                members_per_cluster=members_per_cluster or None,
                                permutations=permutations, heldout_share=heldout_share,
                                swap_pairs=swap_pairs or None, nll_rows=nll_rows, max_new_tokens=max_new_tokens,
                                batch_size=batch_size, bf16=bf16, slot=slot, bootstrap=bootstrap, seed=seed,
                                judge_samples=judge_samples if (judge_base_url or os.environ.get("OPENAI_BASE_URL"))
                                else 0, judge_max_tokens=judge_max_tokens, llm=llm)
    res = run(cfg, report.path, progress=False)
    report.metadata.update({"ads": res["copy"]["ads"], "pairs": res["copy"]["pairs"],
                            "heldout_members": res["heldout_members_used"]})
    for k, v in res["metrics"].items():
        metrics.log_metric(k, float(v))


describe(personalization_eval)  # input descriptions from the config's fields, written once
