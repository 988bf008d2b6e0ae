"""generate: one grounded title per selected (ad, cluster) + the per-user lookup
(glue for ``hllm_creator.infer.generate.run``)."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from hllm_creator_kfp.components._images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def generate(
    model: Input[Model],
    dataset: Input[Dataset],
    clusters: Input[Dataset],
    matches: Input[Dataset],
    creatives: Output[Dataset],
    metrics: Output[Metrics],
    batch_size: int = 16,
    do_sample: bool = False,
    temperature: float = 0.8,
    top_p: float = 0.95,
    top_k: int = 50,
    max_new_tokens: int = 64,
    seed: int = 0,
    slot: str = "medoid",
    rescore: bool = True,
    select: str = "generated",
    distinct: bool = True,
    harm_rule: str = "both",
    harm_threshold: float = 0.0,
    content_threshold: float = 0.0,
    max_pairs: Optional[int] = None,
    bf16: bool = False,
):
    """Personalized titles with the cluster's slot in the Creative LLM; every title gated.

    Args:
        model: Model dir written by the train step (HLLMCreator, its Creative LLM).
        dataset: Dataset dir (items.parquet, interactions.parquet, manifest.json) from data prepare.
        clusters: Output dir of the cluster step.
        matches: Output dir of the match step.
        creatives: Output dir: creatives.parquet, lookup.parquet (user -> cluster -> title per ad),
            generate_meta.json.
        metrics: Generations, grounded, fallbacks (to the original title), fallback rate.
        batch_size: (ad, cluster) pairs per generate call.
        do_sample: Sample (True) or greedy decoding (False, the default for served titles).
        temperature: Sampling temperature.
        top_p: Nucleus sampling mass.
        top_k: Top-k sampling.
        max_new_tokens: Longest generated title in tokens.
        seed: Batch b is sampled with seed + b.
        slot: Cluster slot: "medoid" (member nearest the centroid) or "mean" (mean member embedding).
        rescore: A generation that fails the gate or copies the original is replaced by the Creative
            LLM's most likely gate-passing composition of the original (within the title budget) + one fact.
        select: What is served: "generated" (the greedy generation, which the slot moves through the
            decoder and the fact-copy head, when it passes the gate; else the rescored composition) or
            "slot" (of the ad's gated original+fact compositions, the one whose fact the slot points at).
        distinct: An ad's audiences see different titles where the ad allows it: in match-rank order,
            a repeat of a better-ranked cluster's title gets the slot's pick among the ad's gated
            compositions not yet served (source "distinct").
        harm_rule: Do no harm: a personalized title is served only where the product's own estimates
            rate it at least as fit for the cluster as the original, else the original with the reason.
            "predictor": the Item-User predictor's log-odds gain >= harm_threshold; "content": the Item
            LLM's cosine to the cluster's clicked items, gain >= content_threshold; "both" (default):
            both agree; "none": no check.
        harm_threshold: The predictor's log-odds gain over the original a personalized title needs.
        content_threshold: The Item-LLM cosine gain over the original a personalized title needs.
        max_pairs: Only the first N selected pairs (None = all).
        bf16: bf16 autocast for the Creative LLM (2x faster batched prefill on AMX CPUs; GPUs).
    """
    from hllm_creator.infer.generate import GenerateConfig, run

    cfg = GenerateConfig(model_dir=model.path, data_dir=dataset.path, matches=matches.path, clusters_dir=clusters.path,
                         batch_size=batch_size, do_sample=do_sample, temperature=temperature, top_p=top_p,
                         top_k=top_k, max_new_tokens=max_new_tokens, seed=seed, max_pairs=max_pairs,
                         bf16=bf16, slot=slot, rescore=rescore, select=select,
                         distinct=distinct, harm_rule=harm_rule, harm_threshold=harm_threshold,
                         content_threshold=content_threshold)
    meta = run(cfg, creatives.path, progress=False)
    creatives.metadata.update({k: meta[k] for k in ("generations", "grounded", "fallbacks", "ads")})
    for name in ("generations", "grounded", "fallbacks", "fallback_rate", "personalized_share", "copy_rate",
                 "served_personalized_share", "do_no_harm_original",
                 "distinct_titles_per_ad", "titles_per_second"):
        metrics.log_metric(name, float(meta[name]))
