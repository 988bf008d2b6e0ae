"""dataset_construct: the CoT teacher (glue for ``hllm_creator.teacher.construct.construct``)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components._images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def dataset_construct(
    dataset: Input[Dataset],
    training_set: Output[Dataset],
    metrics: Output[Metrics],
    base_url: str,
    model: str,
    users: int = 64,
    seed: int = 0,
    history_len: int = 10,
    max_new_words: int = 8,
    llm_verify: bool = True,
    concurrency: int = 4,
    profile_max_tokens: int = 320,
    rewrite_max_tokens: int = 64,
    verify_max_tokens: int = 64,
    cache_path: str = "",
    mlflow_parent_run_id: str = "",
):
    """Personalized-title training set from a teacher LLM: profile -> rewrite -> grounding + LLM filter.

    Args:
        dataset: Dataset dir (items.parquet, interactions.parquet, manifest.json) from data prepare.
        training_set: Output dir: train.parquet (reference schema + extras), rejected.parquet (step, reason),
            summary.json (acceptance per stage, tokens, timings).
        metrics: Kept/rejected counts and acceptance per stage.
        base_url: OpenAI-compatible base URL of the teacher (the key comes from the OPENAI_API_KEY env var,
            e.g. a Kubernetes secret; never a parameter).
        model: Model name at the endpoint.
        users: Number of users (deterministic sample by seed).
        seed: Sampling seed.
        history_len: Last N clicked titles fed to the profile step.
        max_new_words: The rewrite may add at most this many words.
        llm_verify: Run filter stage (b), the LLM verification call.
        concurrency: Requests in flight at once.
        profile_max_tokens: Max tokens of the profile reply.
        rewrite_max_tokens: Max tokens of the rewrite reply.
        verify_max_tokens: Max tokens of the verification reply.
        cache_path: sqlite reply cache ("" = $HLLM_WORKDIR/llm_cache/replies.sqlite); reruns resume from it.
        mlflow_parent_run_id: MLflow parent run to nest this step's run under ("" = none).
    """
    import os

    from hllm_creator.llm.client import LLMConfig, default_cache_path
    from hllm_creator.teacher.construct import ConstructConfig, construct, log_summary
    from hllm_creator.tracking import step_run

    if mlflow_parent_run_id:
        os.environ["HLLM_PARENT_RUN_ID"] = mlflow_parent_run_id
    llm = LLMConfig(base_url=base_url, model=model, concurrency=concurrency, progress=False,
                    cache_path=cache_path or default_cache_path())
    cfg = ConstructConfig(data=dataset.path, out=training_set.path, users=users, seed=seed, history_len=history_len,
                          max_new_words=max_new_words, llm_verify=llm_verify, profile_max_tokens=profile_max_tokens,
                          rewrite_max_tokens=rewrite_max_tokens, verify_max_tokens=verify_max_tokens, llm=llm)
    with step_run("dataset-construct", cfg):
        summary = construct(cfg)
        log_summary(summary, training_set.path)
    training_set.metadata.update({"rows": summary["kept"], "rejected": summary["rejected"],
                                  "teacher_model": model, "prompt_version": summary["prompt_version"]})
    metrics.log_metric("kept", float(summary["kept"]))
    metrics.log_metric("rejected", float(summary["rejected"]))
    for stage, v in summary["acceptance"].items():
        metrics.log_metric(f"acceptance_{stage}", float(v))
    metrics.log_metric("llm_cache_hits", float(summary["llm"]["llm_cache_hits"]))
    metrics.log_metric("llm_total_tokens", float(summary["llm"]["llm_total_tokens"]))
