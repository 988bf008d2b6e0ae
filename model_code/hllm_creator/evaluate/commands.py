"""``hllm-creator personalization``: measure personalization on held-out users (DESIGN section 8)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

HELP = "\n\n".join([
    ('Measure personalization of the served titles on held-out users.'),
    ('Held-out users: `hllm_creator.creative.holdout.is_heldout(user_id)` (a stable hash, about 10% of '
     'users); their last click (the leave-last-out test target) is never seen by the teacher or training. '
     'Every figure has a bootstrap 95% interval (CI):'),
    ('- copy rate: share of SERVED titles (creatives.parquet `title`) equal to the original title after '
     'normalization (NFKC, casefold, punctuation/whitespace folded). Lower = more personalization.'),
    ("- distinct per ad: distinct served titles across an ad's selected clusters (1 = every cluster gets "
     'the same title).'),
    ("- swap changed: greedy title with the cluster's own user slot (member mean) vs another selected "
     "cluster's slot for the same ad: share of pairs whose title changes (does the slot matter?)."),
    ("- NLL shuffled - own: on held-out teacher rows (train.parquet split == heldout), the response's mean "
     "per-token NLL with a shuffled user's embedding minus with the own user's (> 0: the model uses the "
     'user).'),
    ("- audience fit vs other / vs original: for held-out members m of cluster c, cos(c's title, m's "
     "held-out next click) minus the mean cos of the ad's other clusters' titles (resp. minus the original "
     "title's), measured with MiniLM-L6 (the ruler; never trained on or selected with). > 0 with the CI "
     "above 0: c's title fits its own audience better. The CI takes the assignment of titles to clusters "
     "as given; the permutation test (--permutations) deals the same titles to each ad's clusters at random: "
     "p = share of random deals that fit at least as well (small p: the assignment, not luck)."),
    ('- cross-cluster GSB (--judge-samples N with a judge endpoint): for a held-out member of c, the judge '
     "compares c's title with another cluster's title for the same ad, both orders (a flip = Same); Adv = "
     '(G - B) / n, and the judge-failure rate.'),
    ('Writes personalization.json, per_ad.parquet (ad, cluster, its top interests, served title, source, '
     'copy flag), plots; logs a nested MLflow run `personalization` (metrics pers_*).'),
])


def personalization_cmd(
    model: Path = typer.Option(..., "--model", help="Model dir written by `hllm-creator train`."),
    data: Path = typer.Option(..., "--data", help="Dataset dir."),
    clusters: Path = typer.Option(..., "--clusters", help="Output dir of `hllm-creator cluster`."),
    matches: Path = typer.Option(..., "--matches", help="matches.parquet or the match output dir."),
    creatives: Path = typer.Option(..., "--creatives", help="creatives.parquet or the generate output dir."),
    out: Path = typer.Option(..., "--out", help="Output dir: personalization.json, per_ad.parquet, plots."),
    train_set: Optional[Path] = typer.Option(None, "--train-set", help="construct's train.parquet (or its dir): "
                                             "held-out rows for the NLL test (none: NLL not measured)."),
    max_ads: int = typer.Option(20, "--max-ads", help="The first N ads of creatives.parquet."),
    members_per_cluster: Optional[int] = typer.Option(None, "--members-per-cluster", help="At most N held-out "
                                                      "members per cluster (seeded sample) for audience fit and the "
                                                      "judge (default: every held-out member)."),
    permutations: int = typer.Option(2000, "--permutations", help="Random deals of each ad's served titles to its "
                                     "clusters for the audience fit's permutation test (0 = none)."),
    heldout_share: Optional[float] = typer.Option(None, "--heldout-share", help="Hold-out share (default: the "
                                                  "project's, 0.1; must match the teacher's)."),
    swap_pairs: Optional[int] = typer.Option(None, "--swap-pairs", help="At most N pairs for the greedy swap."),
    nll_rows: int = typer.Option(128, "--nll-rows", help="At most N held-out teacher rows for the NLL test."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", help="Greedy swap titles."),
    batch_size: int = typer.Option(8, "--batch-size"),
    bf16: bool = typer.Option(False, "--bf16", help="bf16 autocast for the greedy swap titles (NLL stays float32)."),
    slot: str = typer.Option("medoid", "--slot", help="The cluster's slot as generate fills it: medoid | mean."),
    bootstrap: int = typer.Option(2000, "--bootstrap", help="Bootstrap resamples for the 95% CIs."),
    seed: int = typer.Option(0, "--seed"),
    judge_samples: int = typer.Option(0, "--judge-samples", help="Cross-cluster GSB samples (0 = no judge)."),
    judge_max_tokens: int = typer.Option(64, "--judge-max-tokens"),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Judge: OpenAI-compatible base URL (default "
                                           "$OPENAI_BASE_URL; key from $OPENAI_API_KEY)."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Judge model name at the endpoint."),
    concurrency: int = typer.Option(4, "--concurrency", help="Judge requests in flight."),
) -> None:
    from hllm_creator.creative.holdout import HELDOUT_SHARE
    from hllm_creator.evaluate.config import PersonalizationConfig
    from hllm_creator.evaluate.personalization import run
    from hllm_creator.evaluate.report import summary_lines
    from hllm_creator.llm.client import LLMConfig

    llm = LLMConfig(concurrency=concurrency, progress=False)
    if judge_samples:
        from hllm_creator.teacher.commands import _llm

        llm = _llm(base_url, judge_model, concurrency, None, 0.0, 0.0)
    cfg = PersonalizationConfig(model_dir=str(model), data_dir=str(data), clusters_dir=str(clusters),
                                matches=str(matches), creatives=str(creatives),
                                train_set=str(train_set) if train_set else None, max_ads=max_ads,
                                members_per_cluster=members_per_cluster, permutations=permutations,
                                heldout_share=HELDOUT_SHARE if heldout_share is None else heldout_share,
                                swap_pairs=swap_pairs, nll_rows=nll_rows, max_new_tokens=max_new_tokens,
                                batch_size=batch_size, bf16=bf16, slot=slot, bootstrap=bootstrap, seed=seed,
                                judge_samples=judge_samples,
                                judge_max_tokens=judge_max_tokens, llm=llm)
    res = run(cfg, out, progress=True)
    for line in summary_lines(res, res["per_ad"], max_ads):
        typer.echo(line)
    typer.echo(f"wrote {out}/personalization.json, {out}/per_ad.parquet ({res['seconds']:.0f}s)")


personalization_cmd.__doc__ = HELP
