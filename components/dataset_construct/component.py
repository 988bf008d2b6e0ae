"""dataset_construct: the CoT teacher (glue for ``hllm_creator.teacher.construct.construct``)."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from hllm_creator_kfp.components._images import CPU_IMAGE
from hllm_creator_kfp.components._params import describe


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def dataset_construct(
    dataset: Input[Dataset],
    training_set: Output[Dataset],
    metrics: Output[Metrics],
    base_url: str,
    model: str,
    ads: int = 60,
    users_per_fact: int = 3,
    heldout_per_ad: int = 2,
    candidate_users: int = 4000,
    seed: int = 0,
    history_len: int = 10,
    llm_title: bool = True,
    concurrency: int = 4,
    rewrite_max_tokens: int = 48,
    cache_path: Optional[str] = None,
):
    """Personalized, contrastive training set: interests -> which fact -> title (teacher LLM) -> gate.

    Args:
        dataset: Dataset dir (items.parquet, interactions.parquet, manifest.json) from data prepare.
        training_set: Output dir: train.parquet (reference schema + split, facts, featured_fact, title_source),
            rejected.parquet (step, reason), summary.json (acceptance per step, copy rate, titles per ad).
        metrics: Kept/rejected counts, acceptance per step, distinct titles per ad, copy rate.
        seed: Sampling seed.
        rewrite_max_tokens: Max tokens of the title reply.
        cache_path: sqlite reply cache (None = $HLLM_WORKDIR/llm_cache/replies.sqlite); reruns resume from it.
    """
    from hllm_creator.llm.client import LLMConfig, default_cache_path
    from hllm_creator.teacher.construct import ConstructConfig, construct, log_summary
    from hllm_creator.tracking import step_run

    llm = LLMConfig(base_url=base_url, model=model, concurrency=concurrency, progress=True,  # console: quarters
                    cache_path=cache_path or default_cache_path())
    cfg = ConstructConfig(data=dataset.path, out=training_set.path, ads=ads, users_per_fact=users_per_fact,
                          heldout_per_ad=heldout_per_ad, candidate_users=candidate_users, seed=seed,
                          history_len=history_len, llm_title=llm_title, rewrite_max_tokens=rewrite_max_tokens,
                          llm=llm)
    with step_run("dataset-construct", cfg):
        summary = construct(cfg)
        log_summary(summary, training_set.path)
    training_set.metadata.update({"rows": summary["kept"], "rejected": summary["rejected"],
                                  "teacher_model": model, "prompt_version": summary["prompt_version"]})
    for name in ("kept", "kept_train", "kept_heldout", "rejected", "ads_with_contrast", "distinct_titles_per_ad",
                 "copy_rate"):
        metrics.log_metric(name, float(summary[name]))
    for stage, v in summary["acceptance"].items():
        metrics.log_metric(f"acceptance_{stage}", float(v))
    if summary["llm"]:
        metrics.log_metric("llm_cache_hits", float(summary["llm"]["llm_cache_hits"]))
        metrics.log_metric("llm_total_tokens", float(summary["llm"]["llm_total_tokens"]))


describe(dataset_construct)  # input descriptions from the config's fields, written once
