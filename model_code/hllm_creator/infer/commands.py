"""``hllm-creator embed | embed-merge | cluster | match | generate``: the industrial inference workflow.

Each command is one step of the paper's inference recipe (user embeddings -> k-means -> score
(ad, cluster) pairs -> one generation per selected pair). Heavy imports stay inside the bodies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hllm_creator.cli_options import config_options, step_config
from hllm_creator.data.schema import DataError
from hllm_creator.infer.cluster import ClusterConfig
from hllm_creator.infer.embed import EmbedConfig, parse_shard
from hllm_creator.infer.generate import GenerateConfig
from hllm_creator.infer.match import MatchConfig

_QUIET = typer.Option(False, "--quiet", help="No progress bars.")
_MODEL = typer.Option(..., "--model", help="Model dir written by `hllm-creator train`.")
_CLUSTERS = typer.Option(..., "--clusters", help="Output dir of `hllm-creator cluster`.")


def _csv_list(value: Optional[str], what: str, conv=str) -> list:
    if not value:
        return []
    try:
        return [conv(x.strip()) for x in value.split(",") if x.strip()]
    except ValueError:
        raise DataError(f"{what}: expected a comma-separated list, got {value!r}") from None


@config_options(EmbedConfig, exclude={"model_dir", "data_dir", "shard_index", "shard_count"},
                names={"seed_from_model_dir": "--model-item-cache/--no-model-item-cache"})
def embed_cmd(
    model: Path = _MODEL,
    data: Path = typer.Option(..., "--data", help="Dataset dir written by `hllm-creator data prepare`."),
    out: Path = typer.Option(..., "--out", help="Output dir: user_embeddings.parquet + embed_meta.json."),
    shard: str = typer.Option("0/1", "--shard",
                              help="i/n: embed only users with sha256(user_id) mod n == i (deterministic "
                                   "fan-out; merge with `hllm-creator embed-merge`)."),
    quiet: bool = _QUIET,
    **opts,
) -> None:
    """User embeddings for all users: each item encoded once (cached on disk), users batched."""
    from hllm_creator.infer.embed import run

    i, n = parse_shard(shard)
    cfg = step_config(EmbedConfig, model_dir=str(model), data_dir=str(data), shard_index=i, shard_count=n, **opts)
    meta = run(cfg, out, progress=not quiet)
    typer.echo(f"wrote {out}/user_embeddings.parquet: {meta['users']:,} users (shard {i}/{n}), "
               f"{meta['items_encoded']:,} items encoded, {meta['items_from_cache']:,} from cache, "
               f"{meta['users_per_second']:.1f} users/s")


def embed_merge_cmd(
    shards: list[Path] = typer.Argument(..., help="Shard output dirs of `hllm-creator embed --shard i/n`."),
    out: Path = typer.Option(..., "--out", help="Output dir for the merged user_embeddings.parquet."),
) -> None:
    """Merge the n shard outputs of `embed --shard i/n` into one user_embeddings.parquet (checked)."""
    from hllm_creator.infer.embed import merge_shards

    meta = merge_shards(shards, out)
    typer.echo(f"wrote {out}/user_embeddings.parquet: {meta['users']:,} users from {meta['merged_from']} shards")


@config_options(ClusterConfig)
def cluster_cmd(
    embeddings: Path = typer.Option(..., "--embeddings", help="user_embeddings.parquet or the embed output dir."),
    out: Path = typer.Option(..., "--out", help="Output dir: centroids.npy, member_means.npy, "
                                                "assignments.parquet, cluster_meta.json."),
    k_sweep: Optional[str] = typer.Option(None, "--k-sweep",
                                          help="Comma-separated Ks, e.g. 8,16,32: the best silhouette wins "
                                               "(inertia, silhouette, Davies-Bouldin and sizes logged per K)."),
    quiet: bool = _QUIET,
    **opts,
) -> None:
    """faiss k-means of the user embeddings (GPU when faiss sees one); K given or chosen by a sweep."""
    from hllm_creator.infer.cluster import run

    cfg = step_config(ClusterConfig, k_sweep=_csv_list(k_sweep, "--k-sweep", int), **opts)
    res = run(embeddings, out, cfg, progress=not quiet)
    m = res.meta
    typer.echo(f"wrote {out}: K={m['k']} ({m['chosen_by']}), sizes {min(m['sizes'])}..{max(m['sizes'])}, "
               f"inertia {m['inertia']:.4f}, silhouette {m.get('silhouette', float('nan')):.3f}, "
               f"{len(m['merged_small_clusters'])} small cluster(s) merged")


@config_options(MatchConfig, exclude={"model_dir", "data_dir", "clusters_dir", "ads_from"})
def match_cmd(
    model: Path = _MODEL,
    data: Path = typer.Option(..., "--data", help="Dataset dir."),
    clusters: Path = _CLUSTERS,
    out: Path = typer.Option(..., "--out", help="Output dir: matches.parquet + match_meta.json (coverage)."),
    ads: Optional[str] = typer.Option(None, "--ads", help="Comma-separated ad item ids."),
    # not generated: left out (None), the config's default applies; given, it must not meet --ads
    n_ads: Optional[int] = typer.Option(None, "--n-ads", help="Without --ads: the N most-clicked items (ties by "
                                                              "id; default 20)."),
    quiet: bool = _QUIET,
    **opts,
) -> None:
    """Score every (ad, cluster) pair with the Item-User predictor; select the top-k clusters per ad."""
    from hllm_creator.infer.match import run

    if ads and n_ads is not None:
        raise DataError("--n-ads picks the default ads and applies only without --ads: give one of them")
    cfg = step_config(MatchConfig, model_dir=str(model), data_dir=str(data), clusters_dir=str(clusters),
                      ads=_csv_list(ads, "--ads"), **({"n_ads": n_ads} if n_ads is not None else {}), **opts)
    meta = run(cfg, out, progress=not quiet)
    typer.echo(f"wrote {out}/matches.parquet: {len(meta['ads'])} ads x {meta['k']} clusters, "
               f"{meta['pairs_selected']} pairs selected, mean coverage {meta['mean_coverage']:.1%}")


@config_options(GenerateConfig, exclude={"model_dir", "data_dir", "matches", "clusters_dir"},
                names={"do_sample": "--sample/--greedy"})
def generate_cmd(
    model: Path = _MODEL,
    data: Path = typer.Option(..., "--data", help="Dataset dir."),
    matches: Path = typer.Option(..., "--matches", help="matches.parquet or the match output dir."),
    clusters: Path = _CLUSTERS,
    out: Path = typer.Option(..., "--out", help="Output dir: creatives.parquet, lookup.parquet, generate_meta.json."),
    quiet: bool = _QUIET,
    **opts,
) -> None:
    """One title per selected (ad, cluster), the cluster's slot in the Creative LLM, every title gated.

    Served: the generation when it passes the gate and is not the original (source 'generated'),
    else the Creative LLM's most likely gate-passing core+fact composition ('rescored'), else the
    ad's original title ('original', reasons recorded); a repeat of a better-ranked cluster's title
    for the same ad gets the slot's pick among the compositions not yet served ('distinct'). Do no
    harm: unless the predictor and the Item LLM's similarity to the cluster's clicks both rate the
    personalized title at least as fit as the original, the original is served (reason 'do no harm').
    Writes creatives.parquet and a per-user lookup (user -> cluster -> title per ad).
    """
    from hllm_creator.infer.generate import run

    cfg = step_config(GenerateConfig, model_dir=str(model), data_dir=str(data), matches=str(matches),
                      clusters_dir=str(clusters), **opts)
    meta = run(cfg, out, progress=not quiet)
    typer.echo(f"wrote {out}: {meta['generations']} titles: {meta['source_generated']} generated, "
               f"{meta['source_slot']} slot-picked, {meta['source_rescored']} rescored, {meta['source_distinct']} "
               f"made distinct, {meta['source_original']} original "
               f"({meta['do_no_harm_original']} of them by do no harm; copy rate {meta['copy_rate']:.0%}, "
               f"{meta['distinct_titles_per_ad']:.2f} distinct titles per ad), "
               f"{meta['lookup_rows']:,} lookup rows")


# name -> command, registered by cli.py
COMMANDS = {"embed": embed_cmd, "embed-merge": embed_merge_cmd, "cluster": cluster_cmd, "match": match_cmd,
            "generate": generate_cmd}
