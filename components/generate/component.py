"""generate: one grounded title per selected (ad, cluster) + the per-user lookup
(glue for ``hllm_creator.infer.generate.run``)."""


from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from hllm_creator_kfp.components._images import GPU_IMAGE
from hllm_creator_kfp.components._params import describe


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
    max_pairs: int = 0,
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
        max_pairs: Only the first N selected pairs (0 = all).
    """
    from hllm_creator.infer.generate import GenerateConfig, run

    cfg = GenerateConfig(model_dir=model.path, data_dir=dataset.path, matches=matches.path, clusters_dir=clusters.path,
                         batch_size=batch_size, do_sample=do_sample, temperature=temperature, top_p=top_p,
                         top_k=top_k, max_new_tokens=max_new_tokens, seed=seed, max_pairs=max_pairs or None,
                         bf16=bf16, slot=slot, rescore=rescore, select=select,
                         distinct=distinct, harm_rule=harm_rule, harm_threshold=harm_threshold,
                         content_threshold=content_threshold)
    meta = run(cfg, creatives.path, progress=False)
    creatives.metadata.update({k: meta[k] for k in ("generations", "grounded", "fallbacks", "ads")})
    for name in ("generations", "grounded", "fallbacks", "fallback_rate", "personalized_share", "copy_rate",
                 "served_personalized_share", "do_no_harm_original",
                 "distinct_titles_per_ad", "titles_per_second"):
        metrics.log_metric(name, float(meta[name]))


describe(generate)  # input descriptions from the config's fields, written once
