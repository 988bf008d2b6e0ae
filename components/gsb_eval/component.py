"""gsb_eval: the GSB LLM judge (glue for ``hllm_creator.teacher.gsb``)."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from hllm_creator_kfp.components._images import CPU_IMAGE
from hllm_creator_kfp.components._params import describe


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def gsb_eval(
    report: Output[Dataset],
    metrics: Output[Metrics],
    samples: Input[Dataset] = None,
    dataset: Input[Dataset] = None,
    clusters: Input[Dataset] = None,
    base_url: str = "",
    model: str = "",
    counts: Optional[str] = None,
    max_samples: int = 0,
    concurrency: int = 4,
    judge_max_tokens: int = 96,
    bootstrap: int = 2000,
    cache_path: Optional[str] = None,
):
    """Good/Same/Bad of personalized vs original titles from an LLM judge, both orders (a flip = Same).

    Args:
        report: Output dir: gsb.parquet (sample, verdict_ab, verdict_ba, final), gsb_summary.json, gsb.png.
        metrics: G, S, B, Adv = (G-B)/(G+S+B) and its bootstrap 95% interval.
        samples: Dir or parquet with title_a/title_b (+ history, profile, ad), or creatives.parquet
            (item_id, cluster_id, original_title, llm_output) together with dataset.
        dataset: Dataset dir for the ad text (creatives-like input).
        clusters: Dir with assignments.parquet: the member nearest the centroid stands in as the user.
        counts: "G,S,B": skip the judge and only compute Adv and its interval (e.g. "353,91,56").
        max_samples: Evaluate at most this many rows (0 = all).
        judge_max_tokens: Max tokens of each judge reply.
        cache_path: sqlite reply cache (None = default under $HLLM_WORKDIR).
    """
    from pathlib import Path

    from hllm_creator.llm.client import LLMConfig, default_cache_path
    from hllm_creator.teacher.gsb import GSBConfig, gsb_stats, log_gsb, parse_counts, run_gsb, write_outputs
    from hllm_creator.tracking import step_run

    if counts:
        g, s, b = parse_counts(counts)
        summary = gsb_stats(g, s, b, bootstrap=bootstrap)
        with step_run("gsb-eval", {"counts": counts, "bootstrap": bootstrap}):
            write_outputs(None, summary, report.path)
            log_gsb(summary, None)
    else:
        if samples is None:
            raise ValueError("gsb_eval needs samples (or counts)")

        def pick(p: str, names: tuple) -> str:
            d = Path(p)
            if d.is_dir():
                for n in names:
                    if (d / n).exists():
                        return str(d / n)
                raise FileNotFoundError(f"none of {names} in {d}")
            return p

        inp = pick(samples.path, ("creatives.parquet", "train.parquet", "samples.parquet"))
        asg = pick(clusters.path, ("assignments.parquet",)) if clusters is not None else None
        llm = LLMConfig(base_url=base_url or None, model=model or None, concurrency=concurrency, progress=False,
                        cache_path=cache_path or default_cache_path())
        cfg = GSBConfig(input=inp, out=report.path, data=dataset.path if dataset is not None else None,
                        assignments=asg, samples=max_samples or None, judge_max_tokens=judge_max_tokens,
                        bootstrap=bootstrap, llm=llm)
        with step_run("gsb-eval", cfg):
            verdicts, summary = run_gsb(cfg)
            write_outputs(verdicts, summary, report.path)
            log_gsb(summary, report.path)
    report.metadata.update({"adv": summary["adv"], "n": summary["n"],  # judge_failures: the console warns
                            "judge_failures": int(summary.get("judge_failures") or 0)})
    for k in ("G", "S", "B", "adv", "ci_low", "ci_high"):
        metrics.log_metric(k, float(summary[k]))


describe(gsb_eval)  # input descriptions from the config's fields, written once
