"""``hllm-creator embed | embed-merge | cluster | match | generate``: the industrial inference workflow.

Each command is one step of the paper's inference recipe (user embeddings -> k-means -> score
(ad, cluster) pairs -> one generation per selected pair). Heavy imports stay inside the bodies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hllm_creator.infer.cluster import ClusterConfig

_CLUSTER = {name: f.default for name, f in ClusterConfig.model_fields.items()}  # the defaults, written once

def _csv_list(value: Optional[str], what: str, conv=str) -> list:
    if not value:
        return []
    try:
        return [conv(x.strip()) for x in value.split(",") if x.strip()]
    except ValueError:
        from hllm_creator.data.schema import DataError

        raise DataError(f"{what}: expected a comma-separated list, got {value!r}") from None


def _config(cls, **kw):
    """Build a step config; a validation error becomes a DataError that names the bad option."""
    from pydantic import ValidationError

    from hllm_creator.data.schema import DataError

    try:
        return cls(**kw)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'options'}: {err['msg']}" for err in e.errors())
        raise DataError(f"invalid options for {cls.__name__}: {msgs}") from None


def embed_cmd(
    model: Path = typer.Option(..., "--model", help="Model dir written by `hllm-creator train`."),
    data: Path = typer.Option(..., "--data", help="Dataset dir written by `hllm-creator data prepare`."),
    out: Path = typer.Option(..., "--out", help="Output dir: user_embeddings.parquet + embed_meta.json."),
    shard: str = typer.Option("0/1", "--shard",
                              help="i/n: embed only users with sha256(user_id) mod n == i (deterministic "
                                   "fan-out; merge with `hllm-creator embed-merge`)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Users per User-LLM forward."),
    item_batch_size: int = typer.Option(32, "--item-batch-size", help="Items per Item-LLM forward."),
    history: str = typer.Option("no-test", "--history",
                                help="no-test: all clicks except the test target (last click; users with "
                                     "< 3 clicks keep all); all: every click."),
    item_cache: Optional[Path] = typer.Option(None, "--item-cache",
                                              help="Item-embedding cache parquet (keyed by item text + model "
                                                   "hash). Default: <cache dir>/item_cache/<model_hash>.parquet."),
    max_users: Optional[int] = typer.Option(None, "--max-users", help="Only the first N users (smoke runs)."),
    model_item_cache: bool = typer.Option(True, "--model-item-cache/--no-model-item-cache",
                                          help="Seed the item cache with the model dir's item_embeddings.parquet "
                                               "(the frozen item vectors training used; same model hash only)."),
    bf16: bool = typer.Option(False, "--bf16", help="bf16 autocast for the Item/User LLMs (faster on AMX CPUs "
                                                    "and GPUs; slightly different embeddings)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """User embeddings for all users: each item encoded once (cached on disk), users batched."""
    from hllm_creator.infer.embed import EmbedConfig, parse_shard, run

    i, n = parse_shard(shard)
    cfg = _config(EmbedConfig, model_dir=str(model), data_dir=str(data), shard_index=i, shard_count=n,
                      batch_size=batch_size, item_batch_size=item_batch_size, history=history,
                      item_cache=str(item_cache) if item_cache else None, max_users=max_users,
                      bf16=bf16, seed_from_model_dir=model_item_cache)
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


def cluster_cmd(
    embeddings: Path = typer.Option(..., "--embeddings", help="user_embeddings.parquet or the embed output dir."),
    out: Path = typer.Option(..., "--out", help="Output dir: centroids.npy, member_means.npy, "
                                                "assignments.parquet, cluster_meta.json."),
    k: Optional[int] = typer.Option(None, "--k", help="Number of clusters."),
    k_sweep: Optional[str] = typer.Option(None, "--k-sweep",
                                          help="Comma-separated Ks, e.g. 8,16,32: the best silhouette wins "
                                               "(inertia, silhouette, Davies-Bouldin and sizes logged per K)."),
    metric: str = typer.Option(_CLUSTER["metric"], "--metric", help="l2: L2 k-means, assign by L2. cosine: "
                                                                    "normalize, spherical k-means, assign by inner "
                                                                    "product."),
    min_cluster_size: int = typer.Option(_CLUSTER["min_cluster_size"], "--min-cluster-size",
                                         help="Clusters with fewer members are merged into the nearest other."),
    niter: int = typer.Option(_CLUSTER["niter"], "--niter", help="k-means iterations."),
    standardize: bool = typer.Option(_CLUSTER["standardize"], "--standardize/--no-standardize",
                                     help="z-score every feature first: the space the Creative LLM's projector "
                                          "reads (recorded; assign applies it)."),
    seed: int = typer.Option(_CLUSTER["seed"], "--seed"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """faiss k-means of the user embeddings (GPU when faiss sees one); K given or chosen by a sweep."""
    from hllm_creator.infer.cluster import run

    cfg = _config(ClusterConfig, k=k, k_sweep=_csv_list(k_sweep, "--k-sweep", int), metric=metric,
                        min_cluster_size=min_cluster_size, niter=niter, seed=seed, standardize=standardize)
    res = run(embeddings, out, cfg, progress=not quiet)
    m = res.meta
    typer.echo(f"wrote {out}: K={m['k']} ({m['chosen_by']}), sizes {min(m['sizes'])}..{max(m['sizes'])}, "
               f"inertia {m['inertia']:.4f}, silhouette {m.get('silhouette', float('nan')):.3f}, "
               f"{len(m['merged_small_clusters'])} small cluster(s) merged")


def match_cmd(
    model: Path = typer.Option(..., "--model", help="Model dir written by `hllm-creator train`."),
    data: Path = typer.Option(..., "--data", help="Dataset dir."),
    clusters: Path = typer.Option(..., "--clusters", help="Output dir of `hllm-creator cluster`."),
    out: Path = typer.Option(..., "--out", help="Output dir: matches.parquet + match_meta.json (coverage)."),
    ads: Optional[str] = typer.Option(None, "--ads", help="Comma-separated ad item ids."),
    n_ads: Optional[int] = typer.Option(None, "--n-ads", help="Without --ads: the N most-clicked items (ties by "
                                                              "id; default 20)."),
    top_k: int = typer.Option(3, "--top-k", help="Clusters selected per ad (best predictor score first)."),
    threshold: Optional[float] = typer.Option(None, "--threshold",
                                              help="Also require a match score >= this (0..1)."),
    batch_size: int = typer.Option(256, "--batch-size", help="Clusters per predictor call."),
    item_cache: Optional[Path] = typer.Option(None, "--item-cache", help="Item-embedding cache parquet."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Score every (ad, cluster) pair with the Item-User predictor; select the top-k clusters per ad."""
    from hllm_creator.data.schema import DataError
    from hllm_creator.infer.match import MatchConfig, run

    if ads and n_ads is not None:
        raise DataError("--n-ads picks the default ads and applies only without --ads: give one of them")
    cfg = _config(MatchConfig, model_dir=str(model), data_dir=str(data), clusters_dir=str(clusters),
                  ads=_csv_list(ads, "--ads"), top_k=top_k, threshold=threshold, batch_size=batch_size,
                  item_cache=str(item_cache) if item_cache else None,
                  **({"n_ads": n_ads} if n_ads is not None else {}))
    meta = run(cfg, out, progress=not quiet)
    typer.echo(f"wrote {out}/matches.parquet: {len(meta['ads'])} ads x {meta['k']} clusters, "
               f"{meta['pairs_selected']} pairs selected, mean coverage {meta['mean_coverage']:.1%}")


def generate_cmd(
    model: Path = typer.Option(..., "--model", help="Model dir written by `hllm-creator train`."),
    data: Path = typer.Option(..., "--data", help="Dataset dir."),
    matches: Path = typer.Option(..., "--matches", help="matches.parquet or the match output dir."),
    clusters: Path = typer.Option(..., "--clusters", help="Output dir of `hllm-creator cluster`."),
    out: Path = typer.Option(..., "--out", help="Output dir: creatives.parquet, lookup.parquet, generate_meta.json."),
    batch_size: int = typer.Option(16, "--batch-size", help="(ad, cluster) pairs per generate call."),
    bf16: bool = typer.Option(False, "--bf16", help="bf16 autocast for the Creative LLM (faster prefill on AMX "
                              "CPUs and GPUs; benchmarks/batched_generation.py measures both)."),
    temperature: float = typer.Option(0.8, "--temperature"),
    top_p: float = typer.Option(0.95, "--top-p"),
    top_k: int = typer.Option(50, "--top-k"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Longest generated title in tokens (the "
                                       "150-character title budget is about 40)."),
    sample: bool = typer.Option(False, "--sample/--greedy", help="Sample (temperature/top-p/top-k) instead of "
                                "greedy decoding; served titles are greedy by default, so they differ across "
                                "clusters because the slots differ, not by chance."),
    slot: str = typer.Option("medoid", "--slot", help="Cluster slot: medoid (the member nearest the centroid) "
                             "or mean (the mean member embedding)."),
    rescore: bool = typer.Option(True, "--rescore/--no-rescore", help="When a generation fails the gate or "
                                 "copies the original, serve the Creative LLM's most likely gate-passing "
                                 "composition of the ad's core and one of its facts (source 'rescored')."),
    select: str = typer.Option("generated", "--select", help="What is served: generated = the greedy generation "
                               "(the slot moves it through the decoder and the fact-copy head) when it passes "
                               "the gate, else the rescored composition; slot = of the ad's gated core+fact "
                               "compositions, the one whose fact the cluster's slot points at; predictor = of the "
                               "greedy title and the compositions, the one the Item-User predictor rates the "
                               "likeliest click for the cluster."),
    distinct: bool = typer.Option(True, "--distinct/--no-distinct", help="An ad's audiences see different titles "
                                  "where the ad allows it: in match-rank order, a cluster whose served title repeats "
                                  "a better-ranked cluster's gets the slot's pick among the ad's gate-passing "
                                  "compositions not yet served for the ad (source 'distinct')."),
    harm_rule: str = typer.Option("both", "--harm-rule", help="Do no harm: serve a personalized title only where "
                                  "the product's own estimates say it fits the cluster at least as well as the "
                                  "original, else the original with the reason. predictor = the Item-User "
                                  "predictor's log-odds gain >= --harm-threshold; content = the Item LLM's cosine "
                                  "to the cluster's clicked items, gain >= --content-threshold; both (default) = "
                                  "both agree; none = no check."),
    harm_threshold: float = typer.Option(0.0, "--harm-threshold", help="The predictor's log-odds gain over the "
                                         "original a personalized title needs to be served."),
    content_threshold: float = typer.Option(0.0, "--content-threshold", help="The Item-LLM cosine gain (to the "
                                            "cluster's clicked items) over the original a personalized title needs."),
    seed: int = typer.Option(0, "--seed", help="Batch b is sampled with seed + b."),
    max_pairs: Optional[int] = typer.Option(None, "--max-pairs", help="Only the first N selected pairs."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """One title per selected (ad, cluster), the cluster's slot in the Creative LLM, every title gated.

    Served: the generation when it passes the gate and is not the original (source 'generated'),
    else the Creative LLM's most likely gate-passing core+fact composition ('rescored'), else the
    ad's original title ('original', reasons recorded); a repeat of a better-ranked cluster's title
    for the same ad gets the slot's pick among the compositions not yet served ('distinct'). Do no
    harm: unless the predictor and the Item LLM's similarity to the cluster's clicks both rate the
    personalized title at least as fit as the original, the original is served (reason 'do no harm'). Writes creatives.parquet and a per-user lookup (user -> cluster -> title per ad).
    """
    from hllm_creator.infer.generate import GenerateConfig, run

    cfg = _config(GenerateConfig, model_dir=str(model), data_dir=str(data), matches=str(matches),
                         clusters_dir=str(clusters), batch_size=batch_size, bf16=bf16, do_sample=sample,
                         slot=slot, rescore=rescore, select=select, distinct=distinct, harm_rule=harm_rule,
                         harm_threshold=harm_threshold, content_threshold=content_threshold,
                         temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
                         seed=seed, max_pairs=max_pairs)
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
