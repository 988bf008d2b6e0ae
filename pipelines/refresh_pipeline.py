"""The refresh pipeline: a served bundle + an ad feed -> a new bundle version, WITHOUT training.

    bundle, feed, dataset (importers) -> refresh-prepare -> match (the feed's ads vs the bundle's clusters)
        -> generate -> gsb-eval (with a judge), personalization-eval -> refresh-publish

The same library steps as ``hllm-creator refresh`` (in-process) and as the main pipeline's match,
generate, gsb-eval and personalization-eval components (unchanged: they read the refresh dataset,
where the feed's ads are items without clicks). ``build_refresh_pipeline`` returns the
``@dsl.pipeline`` function; ``hllm_creator_kfp.pipelines.refresh_runner`` runs it with the KFP local runner under
an MLflow parent run ``refresh`` (each step's run nests under it, as in the main pipeline).
"""

import typing

from kfp import dsl

from hllm_creator_kfp.components.generate.component import generate
from hllm_creator_kfp.components.gsb_eval.component import gsb_eval
from hllm_creator_kfp.components.match.component import match
from hllm_creator_kfp.components.personalization_eval.component import personalization_eval
from hllm_creator_kfp.components.refresh_prepare.component import refresh_prepare
from hllm_creator_kfp.components.refresh_publish.component import refresh_publish

REFRESH_PIPELINE_NAME = "hllm-creator-refresh"
OUTPUTS = [("generate__creatives", dsl.Dataset), ("personalization_eval__report", dsl.Dataset),
           ("refresh_publish__bundle", dsl.Model)]
Outputs = typing.NamedTuple("Outputs", OUTPUTS)


def build_refresh_pipeline(*, top_k: int = 3, select: str = "generated", max_new_tokens: int = 40,
                           bf16: bool = False, batch_size: int = 16, swap_pairs: int = 32, judge_samples: int = 0,
                           heldout_share: float = 0.1, max_ads: int = 200, register: bool = True, local: bool = True):
    """The refresh pipeline function (its settings compiled in as constants; run parameters: the
    bundle, feed and dataset URIs and the judge's endpoint)."""

    def hllm_creator_refresh(bundle_uri: str, feed_uri: str, dataset_uri: str, llm_base_url: str = "",
                             llm_model: str = "") -> Outputs:
        def imp(uri, cls, name):
            t = dsl.importer(artifact_uri=uri, artifact_class=cls, reimport=False, download_to_workspace=False)
            t.set_display_name(name)
            return t.output

        prep = refresh_prepare(bundle=imp(bundle_uri, dsl.Model, "bundle"), feed=imp(feed_uri, dsl.Dataset, "feed"),
                               dataset=imp(dataset_uri, dsl.Dataset, "dataset"))
        prep.set_display_name("refresh-prepare")
        model, data, clusters = prep.outputs["model"], prep.outputs["refresh_dataset"], prep.outputs["clusters"]
        matched = match(model=model, dataset=data, clusters=clusters, feed=prep.outputs["checked_feed"], top_k=top_k)
        matched.set_display_name("match")
        gen = generate(model=model, dataset=data, clusters=clusters, matches=matched.outputs["matches"],
                       select=select, max_new_tokens=max_new_tokens, bf16=bf16, batch_size=batch_size)
        gen.set_display_name("generate")
        creatives = gen.outputs["creatives"]
        pers = personalization_eval(model=model, dataset=data, clusters=clusters, matches=matched.outputs["matches"],
                                    creatives=creatives, judge_base_url=llm_base_url, judge_model=llm_model,
                                    judge_samples=0, heldout_share=heldout_share, max_ads=max_ads,
                                    max_new_tokens=min(max_new_tokens, 24), bf16=bf16, batch_size=batch_size,
                                    swap_pairs=swap_pairs)
        pers.set_display_name("personalization-eval")
        kw = {}
        if judge_samples:
            gsb = gsb_eval(samples=creatives, dataset=data, clusters=clusters, base_url=llm_base_url, model=llm_model,
                           max_samples=judge_samples)
            gsb.set_display_name("gsb-eval")
            kw["gsb_report"] = gsb.outputs["report"]
        pub = refresh_publish(base_bundle=imp(bundle_uri, dsl.Model, "base-bundle"), refresh_dataset=data,
                              clusters=clusters, checked_feed=prep.outputs["checked_feed"],
                              matches=matched.outputs["matches"], creatives=creatives,
                              personalization_report=pers.outputs["report"], register=register, **kw)
        pub.set_display_name("refresh-publish")
        for t in (prep, matched, gen, pers, pub):
            t.set_caching_options(True)
        return Outputs(creatives, pers.outputs["report"], pub.outputs["bundle"])

    return dsl.pipeline(name=REFRESH_PIPELINE_NAME,
                        description="HLLM-Creator refresh: new ads from a feed into a served bundle, no training"
                        )(hllm_creator_refresh)
