"""``hllm-creator refresh``: a served bundle + an ad feed -> a new bundle version, no training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from hllm_creator.cli_options import config_options, step_config
from hllm_creator.publish.refresh_config import RefreshConfig

# the options both ways of running a refresh take (in process, or --kfp: the refresh pipeline)
OPTIONS = ("top_k", "select", "max_new_tokens", "batch_size", "swap_pairs", "bf16", "judge_samples", "personalization",
           "heldout_share", "register")


@config_options(RefreshConfig, only=OPTIONS, names={"bf16": "--bf16/--no-bf16"})
def refresh_cmd(
    feed: Path = typer.Option(..., "--feed", help="The ad feed: CSV/TSV/JSONL/parquet with ad_id, title "
                                                  "[, description, selling_points, brand, categories] (docs/refresh.md)."),
    model_uri: Optional[str] = typer.Option(None, "--model-uri", help="The bundle to refresh, e.g. "
                                                                      "models:/hllm-creator@champion."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="A bundle dir instead of --model-uri."),
    data: Optional[Path] = typer.Option(None, "--data", help="The dataset dir the bundle was trained on "
                                                             "(default WORKDIR/data/amazon_scientific)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Work dir of the refresh (default "
                                                           "WORKDIR/refresh/<timestamp>); the new bundle is OUT/bundle."),
    llm_url: Optional[str] = typer.Option(None, "--llm-url", help="OpenAI-compatible judge endpoint."),
    kfp: bool = typer.Option(False, "--kfp", help="Run the steps as the KFP refresh pipeline (local runner) "
                                                  "instead of in this process."),
    **opts,
) -> None:
    """Add an advertiser's ads to a served bundle WITHOUT retraining: check the feed, embed the ads with
    the bundle's Item LLM, match them against the existing user clusters, generate and gate their
    titles, evaluate (personalization on held-out users, GSB with a judge), and publish a new bundle
    version (old + new ads, item embeddings precomputed) with alias candidate: ready for
    `promote --rollout canary`. One MLflow parent run `refresh` with a nested run per step."""
    import time

    from hllm_creator.paths import work_dir
    from hllm_creator.publish.bundle import BundleError

    if bool(model_uri) == bool(bundle):
        raise typer.BadParameter("give exactly one of --model-uri or --bundle")
    data = data or (work_dir() / "data" / "amazon_scientific")
    out = out or (work_dir() / "refresh" / time.strftime("%Y%m%d-%H%M%S"))
    try:
        if model_uri:
            from hllm_creator.serving.loading import resolve_model_dir

            bundle = resolve_model_dir(None, model_uri)
        if kfp:
            from hllm_creator_kfp.pipelines.refresh_runner import run_refresh_local

            res = run_refresh_local(bundle=bundle, feed=feed, data_dir=data, pipeline_root=out, llm_base_url=llm_url,
                                    **{k: v for k, v in opts.items() if k != "personalization"})
        else:
            from hllm_creator.publish.refresh import run

            llm = None
            if opts["judge_samples"]:
                from hllm_creator.llm.client import LLMConfig, default_cache_path

                llm = LLMConfig(base_url=llm_url or None, progress=False, cache_path=default_cache_path())
            cfg = step_config(RefreshConfig, feed=str(feed), data_dir=str(data), bundle=str(bundle), **opts)
            res = run(cfg, out, llm=llm, progress=False)
    except BundleError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.secho(f"refreshed bundle {res.get('bundle_id')} at {res.get('bundle')} in {res.get('total_seconds')} s",
                fg="green")
    shown = {k: res.get(k) for k in ("prepare", "match", "generate", "personalization", "merge", "seconds", "version",
                                     "parent_run_id") if k in res}
    if isinstance(shown.get("prepare"), dict):  # the feed's ids are in the bundle; their count is enough here
        shown["prepare"] = {k: v for k, v in shown["prepare"].items() if k != "ads"}
    typer.echo(json.dumps(shown,
                          indent=2, default=str))
    if res.get("version"):
        typer.echo(f"  serve it: hllm-creator serve predictor --model-uri models:/hllm-creator/{res['version']}")
