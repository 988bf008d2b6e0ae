"""``promote`` requires evidence (issue 11, deliverable 6), on a real local MLflow sqlite store: each
refusal, alone, keeps the champion where it is and says why; all evidence present promotes."""

from __future__ import annotations

import json

GOOD = {"gsb_adv": 0.30, "gsb_ci_low": 0.12, "gsb_judge_failure_rate": 0.05}


def _pipeline(tmp_path, tag: str, *, gsb: dict | None = None, standin: str | None = "false",
              fit: float | None = None, fit_p: float | None = None) -> str:
    """A parent run: train registers a model (alias candidate, tag standin_data), gsb-eval logs its
    evidence, a personalization run (optional) logs the audience-fit CI lower bound."""
    from hllm_creator import tracking

    model_dir = tmp_path / f"model-{tag}"
    model_dir.mkdir()
    (model_dir / "hllm_config.json").write_text(json.dumps({"tag": tag}))
    with tracking.parent_run(f"pipeline-{tag}") as parent:
        with tracking.step_run("train", tags={} if standin is None else {"standin_data": standin}):
            tracking.register_model(model_dir)
        with tracking.step_run("gsb-eval"):
            tracking.log_metrics(GOOD if gsb is None else gsb)
        if fit is not None:
            with tracking.step_run("personalization"):
                tracking.log_metrics({"pers_fit_other_ci_low": fit, "pers_fit_other": fit + 0.02,
                                      **({} if fit_p is None else {"pers_fit_other_perm_p": fit_p})})
    return parent.info.run_id


def _champion():
    import mlflow

    from hllm_creator import tracking

    return mlflow.MlflowClient(tracking.resolve_tracking_uri()).get_model_version_by_alias(
        tracking.MODEL_NAME, "champion").version


def test_each_refusal_says_why_and_full_evidence_promotes(tmp_path):
    from hllm_creator import tracking

    # no champion: the CI lower bound must be above 0
    _pipeline(tmp_path, "zero", gsb={**GOOD, "gsb_ci_low": -0.02})
    r = tracking.promote()
    assert not r["promoted"] and "no champion yet" in r["reason"] and "must be > 0" in r["reason"]
    _pipeline(tmp_path, "first", fit=0.01, fit_p=0.01)
    r = tracking.promote()
    assert r["promoted"] and r["reason"].startswith("no champion yet") and all(c["ok"] for c in r["checks"])
    champ = _champion()

    refusals = {
        "worse": (dict(gsb={**GOOD, "gsb_ci_low": 0.10, "gsb_adv": 0.9}), "gsb", "must be > champion"),
        "no-gsb": (dict(gsb={"gsb_judge_failure_rate": 0.0}), "gsb", "has no metric 'gsb_ci_low'"),
        "judge": (dict(gsb={**GOOD, "gsb_ci_low": 0.5, "gsb_judge_failure_rate": 0.25}), "judge_failures",
                  "judge-failure rate 0.250 must be < 0.200"),
        "no-judge-rate": (dict(gsb={"gsb_ci_low": 0.5}), "judge_failures", "reliability is unknown"),
        "standin": (dict(gsb={**GOOD, "gsb_ci_low": 0.5}, standin="partial"), "standin", "standin_data=partial"),
        "no-tag": (dict(gsb={**GOOD, "gsb_ci_low": 0.5}, standin=None), "standin", "no standin_data tag"),
        "luck": (dict(gsb={**GOOD, "gsb_ci_low": 0.5}, fit=0.003, fit_p=0.3), "audience_fit",
                 "permutation p 0.300 must be < 0.050"),
        "fit": (dict(gsb={**GOOD, "gsb_ci_low": 0.5}, fit=-0.001), "audience_fit", "must be > 0"),
    }
    for tag, (kw, rule, why) in refusals.items():
        _pipeline(tmp_path, tag, **kw)
        r = tracking.promote()
        failed = [c for c in r["checks"] if not c["ok"]]
        assert not r["promoted"] and [c["check"] for c in failed] == [rule], (tag, r)
        assert why in failed[0]["detail"] and why in r["reason"], (tag, r["reason"])
        assert _champion() == champ, tag  # the champion did not move

    # the last candidate (bad audience fit) can be forced; the refusal is still reported
    r = tracking.promote(force=True)
    assert r["promoted"] and r["reason"].startswith("forced (despite: audience_fit")
    # better on every rule: promoted over the champion, no personalization run = not checked
    _pipeline(tmp_path, "better", gsb={**GOOD, "gsb_ci_low": 0.6})
    r = tracking.promote()
    assert r["promoted"] and "must be > champion" in r["reason"]
    assert [c for c in r["checks"] if c["check"] == "audience_fit"][0]["detail"].endswith("not checked")
    # a stricter threshold refuses the same judge-failure rate
    _pipeline(tmp_path, "strict", gsb={**GOOD, "gsb_ci_low": 0.9})
    r = tracking.promote(policy=tracking.PromotePolicy(max_judge_failure_rate=0.05))
    assert not r["promoted"] and "judge-failure rate 0.050 must be < 0.050" in r["reason"]


def test_promote_cli_prints_each_check(tmp_path):
    from typer.testing import CliRunner

    from hllm_creator.cli import app

    p = _pipeline(tmp_path, "a", gsb={**GOOD, "gsb_judge_failure_rate": 0.3})
    r = CliRunner().invoke(app, ["promote", "--run", p])
    assert r.exit_code == 1, r.output  # a refusal is a failure for a script, as with --rollout
    assert "not promoted: judge_failures: judge-failure rate 0.300 must be < 0.200" in r.output
    assert "REFUSED  judge_failures" in r.output and "ok       standin" in r.output
    r = CliRunner().invoke(app, ["promote", "--run", p, "--max-judge-failure-rate", "0.5"])
    assert r.exit_code == 0 and "promoted: no champion yet" in r.output
    r = CliRunner().invoke(app, ["promote", "--max-judge-failure-rate", "0"])
    assert r.exit_code != 0 and "max_judge_failure_rate" in r.output


def _aliases() -> dict:
    import mlflow

    from hllm_creator import tracking

    m = mlflow.MlflowClient(tracking.resolve_tracking_uri()).get_registered_model(tracking.MODEL_NAME)
    return dict(m.aliases)


def test_dry_run_changes_nothing_on_any_path_and_force_says_what_it_overrides(tmp_path, monkeypatch):
    """issue 28: --dry-run is honoured with and without --force and on every --rollout path; a refusal
    exits 1 everywhere; --force names each refusal it overrides."""
    from typer.testing import CliRunner

    from hllm_creator.cli import app

    run = CliRunner().invoke
    bad = _pipeline(tmp_path, "bad", gsb={**GOOD, "gsb_judge_failure_rate": 0.3})
    before = _aliases()
    assert "champion" not in before
    # refused, dry run or not: exit 1, nothing moves
    for args in (["promote"], ["promote", "--dry-run"]):
        r = run(app, args)
        assert r.exit_code == 1 and "judge_failures" in r.output and _aliases() == before, (args, r.output)
    # --dry-run --force: says it would promote and what it overrides, moves nothing
    r = run(app, ["promote", "--dry-run", "--force"])
    assert r.exit_code == 0, r.output
    assert "dry run, would promote: forced" in r.output
    assert "--force overrides: judge_failures: judge-failure rate 0.300 must be < 0.200" in r.output
    assert "registry (would): alias champion: (none) -> version" in r.output
    assert _aliases() == before
    # --force for real: moves champion and prints the override
    r = run(app, ["promote", "--force"])
    assert r.exit_code == 0 and "--force overrides: judge_failures" in r.output, r.output
    champ = _aliases()["champion"]
    # the rollout paths (KServe): a refused canary exits 1; a dry-run canary/complete/rollback moves no alias
    _pipeline(tmp_path, "good", gsb={**GOOD, "gsb_ci_low": 0.5})
    before = _aliases()
    for args in (["promote", "--rollout", "canary", "--percent", "10", "--dry-run", "--storage-uri", "s3://b/x"],
                 ["promote", "--rollback", "--dry-run", "--storage-uri", "s3://b/x"]):
        r = run(app, args)
        assert r.exit_code == 0 and "dry run, not applied" in r.output, (args, r.output)
        assert _aliases() == before, args
    assert "registry (would): alias canary: (none) -> version" in run(app, [
        "promote", "--rollout", "canary", "--percent", "10", "--dry-run", "--storage-uri", "s3://b/x"]).output
    r = run(app, ["promote", "--rollout", "canary", "--percent", "10", "--dry-run", "--run", bad,
                  "--storage-uri", "s3://b/x"])
    assert r.exit_code == 1 and "gate refused" in r.output and _aliases() == before, r.output
    # complete needs a real canary alias: set one through the registry, then a dry-run complete keeps it
    from hllm_creator import tracking

    tracking.set_alias("canary", before["candidate"])
    before = _aliases()
    r = run(app, ["promote", "--rollout", "complete", "--dry-run"])
    assert r.exit_code == 0 and f"registry (would): alias champion -> version {before['candidate']}" in r.output
    assert _aliases() == before and before["champion"] == champ
