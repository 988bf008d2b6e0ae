"""``hllm-creator personalization``: measure personalization on held-out users."""

from __future__ import annotations

from pathlib import Path

import typer

from hllm_creator.cli_options import config_options, step_config, unprefixed
from hllm_creator.evaluate.config import PersonalizationConfig
from hllm_creator.llm.client import LLMConfig
from hllm_creator.teacher.commands import _llm

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


@config_options(LLMConfig, only=("base_url", "model", "concurrency"), prefix="llm_",
                names={"base_url": "--base-url", "model": "--judge-model", "concurrency": "--concurrency"})
@config_options(PersonalizationConfig, exclude={"model_dir", "data_dir", "clusters_dir", "matches", "creatives", "llm"})
def personalization_cmd(
    model: Path = typer.Option(..., "--model", help="Model dir written by `hllm-creator train`."),
    data: Path = typer.Option(..., "--data", help="Dataset dir."),
    clusters: Path = typer.Option(..., "--clusters", help="Output dir of `hllm-creator cluster`."),
    matches: Path = typer.Option(..., "--matches", help="matches.parquet or the match output dir."),
    creatives: Path = typer.Option(..., "--creatives", help="creatives.parquet or the generate output dir."),
    out: Path = typer.Option(..., "--out", help="Output dir: personalization.json, per_ad.parquet, plots."),
    **opts,
) -> None:
    from hllm_creator.evaluate.personalization import run
    from hllm_creator.evaluate.report import summary_lines

    judge = unprefixed(opts, "llm_")
    opts = {k: v for k, v in opts.items() if not k.startswith("llm_")}
    llm = LLMConfig(concurrency=judge["concurrency"], progress=False)
    if opts["judge_samples"]:
        llm = _llm(**judge)
    cfg = step_config(PersonalizationConfig, model_dir=str(model), data_dir=str(data), clusters_dir=str(clusters),
                      matches=str(matches), creatives=str(creatives), llm=llm, **opts)
    res = run(cfg, out, progress=True)
    for line in summary_lines(res, res["per_ad"], cfg.max_ads):
        typer.echo(line)
    typer.echo(f"wrote {out}/personalization.json, {out}/per_ad.parquet ({res['seconds']:.0f}s)")


personalization_cmd.__doc__ = HELP
