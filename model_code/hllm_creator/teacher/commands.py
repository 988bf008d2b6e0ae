"""``hllm-creator construct`` and ``hllm-creator gsb``: the CoT teacher and the GSB judge.

The endpoint is any OpenAI-compatible server: --base-url / $OPENAI_BASE_URL, --model /
$HLLM_TEACHER_MODEL, key from $OPENAI_API_KEY only (never a flag, never logged).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

_BASE = typer.Option(None, "--base-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/openai/v1 "
                     "(default $OPENAI_BASE_URL). The key comes from $OPENAI_API_KEY.")
_MODEL = typer.Option(None, "--model", help="model name at the endpoint (default $HLLM_TEACHER_MODEL)")
_CONC = typer.Option(4, "--concurrency", help="requests in flight at once")
_CACHE = typer.Option(None, "--cache", help="sqlite reply cache (default $HLLM_WORKDIR/llm_cache/replies.sqlite); "
                      "a re-run with the same model/prompts/params reuses finished calls")
_COST_P = typer.Option(0.0, "--cost-per-1k-prompt", help="price per 1k prompt tokens (0 for the embedded server)")
_COST_C = typer.Option(0.0, "--cost-per-1k-completion", help="price per 1k completion tokens")


def _llm(base_url, model, concurrency, cache, cost_p, cost_c, reasks=2, no_response_format=False):
    from hllm_creator.llm.client import LLMConfig, default_cache_path

    return LLMConfig(base_url=base_url, model=model, concurrency=concurrency,
                     cache_path=str(cache) if cache else default_cache_path(), cost_per_1k_prompt=cost_p,
                     cost_per_1k_completion=cost_c, reasks=reasks,
                     response_format=not no_response_format).resolved().model_copy(update={"api_key": None})


def construct_cmd(
    data: Path = typer.Option(..., "--data", help="dataset dir written by `hllm-creator data prepare`"),
    out: Path = typer.Option(..., "--out", help="output dir: train.parquet, rejected.parquet, summary.json"),
    ads: int = typer.Option(60, "--ads", help="ads to write for: the N most-clicked items (match's default list)"),
    users_per_fact: int = typer.Option(3, "--users-per-fact", help="train users per (ad, fact phrase): the "
                                       "users that phrase fits best; several phrases per ad give the contrast"),
    heldout_per_ad: int = typer.Option(2, "--heldout-per-ad", help="rows per ad for held-out users "
                                       "(split=heldout: evaluation only, never trained on)"),
    candidate_users: int = typer.Option(4000, "--candidate-users", help="train users scored per ad (seeded sample)"),
    seed: int = typer.Option(0, "--seed"),
    history_len: int = typer.Option(10, "--history-len", help="last N clicked titles kept in title_list"),
    llm_title: bool = typer.Option(True, "--llm-title/--no-llm-title", help="the teacher LLM phrases each "
                                   "title (gated; the deterministic composition 'core - Fact' when it fails)"),
    rewrite_max_tokens: int = typer.Option(48, "--rewrite-max-tokens"),
    reasks: int = typer.Option(2, "--reasks", help="re-asks after a reply that fails its JSON schema"),
    base_url: str = _BASE, model: str = _MODEL, concurrency: int = _CONC, cache: Path = _CACHE,
    cost_per_1k_prompt: float = _COST_P, cost_per_1k_completion: float = _COST_C,
) -> None:
    """Build the personalized, contrastive training set (the chain-of-thought teacher).

    Per ad: 1 interests of each candidate user from the click history (computed), 2 which of the ad's
    fact phrases fits each user (computed; the best-fitting users per phrase are kept, so one ad has
    users of different interests and different targets), 3 the title (the teacher LLM phrases core +
    fact, or the deterministic composition), 4 the gate (every content word from the ad) and the copy
    check. Kept rows -> train.parquet (split train / heldout), rejected -> rejected.parquet with step
    and reason. Interrupted runs resume from the reply cache.
    """
    from hllm_creator.teacher.construct import ConstructConfig, construct, log_summary
    from hllm_creator.tracking import step_run

    llm = _llm(base_url, model, concurrency, cache, cost_per_1k_prompt, cost_per_1k_completion, reasks) \
        if llm_title else None
    cfg = ConstructConfig(data=str(data), out=str(out), ads=ads, users_per_fact=users_per_fact,
                          heldout_per_ad=heldout_per_ad, candidate_users=candidate_users, seed=seed,
                          history_len=history_len, llm_title=llm_title, rewrite_max_tokens=rewrite_max_tokens,
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
    samples: int = typer.Option(None, "--samples", help="evaluate at most this many rows"),
    judge_max_tokens: int = typer.Option(96, "--judge-max-tokens"),
    bootstrap: int = typer.Option(2000, "--bootstrap", help="bootstrap resamples for the 95% interval"),
    base_url: str = _BASE, model: str = _MODEL, concurrency: int = _CONC, cache: Path = _CACHE,
    cost_per_1k_prompt: float = _COST_P, cost_per_1k_completion: float = _COST_C,
) -> None:
    """GSB evaluation: an LLM judge compares personalized vs original titles per user, in both orders
    (a flip counts as Same); reports G, S, B and Adv = (G-B)/(G+S+B) with a bootstrap 95% interval."""
    from hllm_creator.teacher.gsb import (GSBConfig, gsb_stats, log_gsb, parse_counts, run_gsb, summary_line,
                                          write_outputs)
    from hllm_creator.tracking import step_run

    if counts:
        try:
            g, s, b = parse_counts(counts)
            summary = gsb_stats(g, s, b, bootstrap=bootstrap)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--counts") from None
        typer.echo(summary_line(summary))
        if out:
            write_outputs(None, summary, out)
        return
    if input is None or out is None:
        raise typer.BadParameter("give --input and --out (or --counts G,S,B)")
    llm = _llm(base_url, model, concurrency, cache, cost_per_1k_prompt, cost_per_1k_completion)
    cfg = GSBConfig(input=str(input), out=str(out), data=str(data) if data else None,
                    assignments=str(assignments) if assignments else None, samples=samples,
                    judge_max_tokens=judge_max_tokens, bootstrap=bootstrap, llm=llm)
    with step_run("gsb-eval", cfg):
        verdicts, summary = run_gsb(cfg)
        write_outputs(verdicts, summary, out)
        log_gsb(summary, out)
    typer.echo(summary_line(summary))
    typer.echo(json.dumps({"flips": summary["flips"], "judge_failures": summary["judge_failures"],
                           "llm_calls": summary["llm"]["llm_calls"],
                           "llm_cache_hits": summary["llm"]["llm_cache_hits"]}))
