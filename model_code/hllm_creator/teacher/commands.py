"""``hllm-creator construct`` and ``hllm-creator gsb``: the CoT teacher and the GSB judge.

The endpoint is any OpenAI-compatible server: --base-url / $OPENAI_BASE_URL, --model /
$HLLM_TEACHER_MODEL, key from $OPENAI_API_KEY only (never a flag, never logged).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from hllm_creator.cli_options import config_options, step_config
from hllm_creator.llm.client import LLMConfig
from hllm_creator.teacher.construct import ConstructConfig
from hllm_creator.teacher.gsb import GSBConfig

# the endpoint options every LLM command shares, generated from LLMConfig
LLM_OPTIONS = ("base_url", "model", "concurrency", "cost_per_1k_prompt", "cost_per_1k_completion")
_CACHE = typer.Option(None, "--cache", help="sqlite reply cache (default $HLLM_WORKDIR/llm_cache/replies.sqlite); "
                      "a re-run with the same model/prompts/params reuses finished calls")


def _llm(base_url=None, model=None, concurrency=LLMConfig.model_fields["concurrency"].default, cache=None,
         cost_per_1k_prompt=0.0, cost_per_1k_completion=0.0, reasks=LLMConfig.model_fields["reasks"].default,
         no_response_format=False):
    from hllm_creator.llm.client import default_cache_path

    return LLMConfig(base_url=base_url, model=model, concurrency=concurrency,
                     cache_path=str(cache) if cache else default_cache_path(), cost_per_1k_prompt=cost_per_1k_prompt,
                     cost_per_1k_completion=cost_per_1k_completion, reasks=reasks,
                     response_format=not no_response_format).resolved().model_copy(update={"api_key": None})


def _split(opts: dict, names) -> dict:
    return {k: opts.pop(k) for k in list(opts) if k in names}


@config_options(LLMConfig, only=(*LLM_OPTIONS, "reasks"))
@config_options(ConstructConfig, exclude={"data", "out", "llm"})
def construct_cmd(
    data: Path = typer.Option(..., "--data", help="dataset dir written by `hllm-creator data prepare`"),
    out: Path = typer.Option(..., "--out", help="output dir: train.parquet, rejected.parquet, summary.json"),
    cache: Path = _CACHE,
    **opts,
) -> None:
    """Build the personalized, contrastive training set (the chain-of-thought teacher).

    Per ad: 1 interests of each candidate user from the click history (computed), 2 which of the ad's
    fact phrases fits each user (computed; the best-fitting users per phrase are kept, so one ad has
    users of different interests and different targets), 3 the title (the teacher LLM phrases core +
    fact, or the deterministic composition), 4 the gate (every content word from the ad) and the copy
    check. Kept rows -> train.parquet (split train / heldout), rejected -> rejected.parquet with step
    and reason. Interrupted runs resume from the reply cache.
    """
    from hllm_creator.teacher.construct import construct, log_summary
    from hllm_creator.tracking import step_run

    llm_opts = _split(opts, (*LLM_OPTIONS, "reasks"))
    llm = _llm(cache=cache, **llm_opts) if opts["llm_title"] else None
    cfg = step_config(ConstructConfig, data=str(data), out=str(out), **opts,
                      **({"llm": llm} if llm is not None else {}))
    with step_run("dataset-construct", cfg):
        summary = construct(cfg)
        log_summary(summary, out)
    typer.echo(f"kept {summary['kept']} rows ({summary['kept_train']} train, {summary['kept_heldout']} held-out) "
               f"for {summary['ads']} ads -> {out}/train.parquet; rejected {summary['rejected']} -> "
               f"{out}/rejected.parquet")
    typer.echo(f"{summary['ads_with_contrast']} ads with contrast, {summary['distinct_titles_per_ad']:.2f} distinct "
               f"titles per ad, copy rate {summary['copy_rate']:.0%}, titles by {summary['title_source']}")
    s = summary["llm"]
    if s:
        typer.echo(f"LLM calls {s['llm_calls']} ({s['llm_cache_hits']} from cache), tokens {s['llm_total_tokens']}, "
                   f"retries {s['llm_retries']}, re-asks {s['llm_reasks']}, cost {s['llm_cost']}, "
                   f"time {summary['timings_s']['total_s']:.1f}s")


@config_options(LLMConfig, only=LLM_OPTIONS)
@config_options(GSBConfig, exclude={"llm"})
def gsb_cmd(
    input: Path = typer.Option(None, "--input", help="parquet with title_a (personalized), title_b (original), "
                               "original_title, original_description, title_list, user_profile; or "
                               "creatives.parquet (item_id, cluster_id, original_title, llm_output) with --data"),
    out: Path = typer.Option(None, "--out", help="output dir: gsb.parquet, gsb_summary.json, gsb.png"),
    counts: str = typer.Option(None, "--counts", help="'G,S,B' counts: just compute Adv and its interval "
                               "(e.g. the paper's 353,91,56 -> 59.4%)"),
    data: Path = typer.Option(None, "--data", help="dataset dir (for creatives-like input)"),
    assignments: Path = typer.Option(None, "--assignments", help="assignments.parquet: the cluster member "
                                     "nearest the centroid stands in as the user"),
    cache: Path = _CACHE,
    **opts,
) -> None:
    """GSB evaluation: an LLM judge compares personalized vs original titles per user, in both orders
    (a flip counts as Same); reports G, S, B and Adv = (G-B)/(G+S+B) with a bootstrap 95% interval."""
    from hllm_creator.teacher.gsb import gsb_stats, log_gsb, parse_counts, run_gsb, summary_line, write_outputs
    from hllm_creator.tracking import step_run

    if counts:
        try:
            g, s, b = parse_counts(counts)
            summary = gsb_stats(g, s, b, bootstrap=opts["bootstrap"])
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--counts") from None
        typer.echo(summary_line(summary))
        if out:
            write_outputs(None, summary, out)
        return
    if input is None or out is None:
        raise typer.BadParameter("give --input and --out (or --counts G,S,B)")
    llm = _llm(cache=cache, **_split(opts, LLM_OPTIONS))
    cfg = step_config(GSBConfig, input=str(input), out=str(out), data=str(data) if data else None,
                      assignments=str(assignments) if assignments else None, llm=llm, **opts)
    with step_run("gsb-eval", cfg):
        verdicts, summary = run_gsb(cfg)
        write_outputs(verdicts, summary, out)
        log_gsb(summary, out)
    typer.echo(summary_line(summary))
    typer.echo(json.dumps({"flips": summary["flips"], "judge_failures": summary["judge_failures"],
                           "llm_calls": summary["llm"]["llm_calls"],
                           "llm_cache_hits": summary["llm"]["llm_cache_hits"]}))
