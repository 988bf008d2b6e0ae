"""``hllm-creator publish | ab-report`` and the rollout half of ``hllm-creator promote``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def publish_cmd(
    run_dir: Optional[Path] = typer.Argument(None, help="A KFP run dir (<pipeline_root>/hllm-creator-<timestamp>); "
                                                        "or give the step outputs one by one below."),
    data: Optional[Path] = typer.Option(None, "--data", help="The run's dataset dir (its items.parquet is the "
                                                             "catalog); default WORKDIR/data/amazon_scientific."),
    out: Optional[Path] = typer.Option(None, "--out", help="Bundle dir (default WORKDIR/bundles/<run dir name>)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model dir (instead of RUN_DIR/train/model)."),
    clusters: Optional[Path] = typer.Option(None, "--clusters", help="Cluster step output dir."),
    matches: Optional[Path] = typer.Option(None, "--matches", help="Match step output dir."),
    creatives: Optional[Path] = typer.Option(None, "--creatives", help="Generate step output dir."),
    parent_run_id: Optional[str] = typer.Option(None, "--run-id", help="The pipeline's MLflow run (default: the "
                                                                      "train run's parent)."),
    register: bool = typer.Option(True, "--register/--no-register", help="Register the bundle (alias candidate)."),
    check_creative: bool = typer.Option(True, "--check-creative/--no-check-creative",
                                        help="Also generate once with the creative model in the load check."),
) -> None:
    """Assemble one serving bundle of a pipeline run (model + inference outputs + item catalog +
    manifest), load it with the real predictor and creative models, and register it as one model
    version of hllm-creator (alias candidate). Then `hllm-creator serve predictor --model-uri
    models:/hllm-creator@candidate` needs no other argument."""
    from hllm_creator.paths import work_dir
    from hllm_creator.publish.bundle import BundleError, BundleInputs, inputs_from_run_dir
    from hllm_creator.publish.publish import publish

    data = data or (work_dir() / "data" / "amazon_scientific")
    try:
        if run_dir is not None:
            inp = inputs_from_run_dir(run_dir, data)
            for k, v in (("model", model), ("clusters", clusters), ("matches", matches), ("creatives", creatives)):
                if v is not None:
                    setattr(inp, k, v)
        else:
            given = {"--model": model, "--clusters": clusters, "--matches": matches, "--creatives": creatives}
            if any(v is None for v in given.values()):
                raise typer.BadParameter(f"give RUN_DIR, or all of {', '.join(given)} "
                                         f"(missing: {', '.join(k for k, v in given.items() if v is None)})")
            inp = BundleInputs(model=model, clusters=clusters, matches=matches, creatives=creatives, data_dir=data)
        inp.mlflow_run_id = parent_run_id
        name = (run_dir.resolve().name if run_dir is not None else "bundle")
        res = publish(inp, out or (work_dir() / "bundles" / name), register=register,
                      check_creative=check_creative)
    except BundleError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    m = res["manifest"]
    typer.secho(f"bundle {m['bundle_id']} at {res['bundle']} ({len(m['files'])} files)", fg="green")
    if "check" in res:
        c = res["check"]
        typer.echo(f"  load check: {c['items']} items, {c['clusters']} clusters, {c['selected_pairs']} selected "
                   f"pairs, {c['creatives']} creatives ({c['seconds']} s)")
    if "version" in res:
        typer.echo(f"  registered {res['registered']} version {res['version']} aliases {res['aliases']} "
                   f"(publish run {res['publish_run_id']}, pipeline run {res['pipeline_run_id']})")
        typer.echo(f"  serve it: hllm-creator serve predictor --model-uri models:/{res['registered']}@candidate")


def ab_report_cmd(
    sink: Path = typer.Argument(..., help="The predictor's exposure dir (--exposure-dir; default "
                                          "WORKDIR/ab/EXPERIMENT)."),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="Only this experiment's exposures."),
    model_version: Optional[str] = typer.Option(None, "--model-version",
                                                help="The served version to log under (default: the one the "
                                                     "exposures name)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write ab_report.json and ab_report.png here."),
    mlflow_log: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Log the readout to MLflow."),
    bootstrap: int = typer.Option(2000, "--bootstrap", min=100, help="Bootstrap resamples of users for the lift CI."),
) -> None:
    """CTR per variant (Wilson 95% CI) and the personalized-vs-control lift (user-level bootstrap
    95% CI) from the predictor's exposure and feedback log; logged to MLflow under the served model
    version (run `ab-report`, version tags ab_lift*), with a plot."""
    from hllm_creator.publish.ab import ab_report

    if not sink.is_dir():
        raise typer.BadParameter(f"{sink} is not a directory (the predictor's --exposure-dir)")
    try:
        s = ab_report(sink, experiment=experiment, model_version=model_version, log_to_mlflow=mlflow_log,
                      out_dir=out, n_boot=bootstrap)
    except ValueError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    for v, d in s["variants"].items():
        typer.echo(f"  {v:<13} exposures {d['exposures']:>7}  clicks {d['clicks']:>6}  users {d['users']:>6}  "
                   f"CTR {d['ctr']:.4f} (95% CI {d['ctr_ci_low']:.4f} .. {d['ctr_ci_high']:.4f})")
    typer.echo(f"  lift personalized/control - 1: {s['lift']:+.3f} (95% CI {s['lift_ci_low']:+.3f} .. "
               f"{s['lift_ci_high']:+.3f}); model version {s['model_version']}; torn lines {s['torn_lines']}")
    if s.get("mlflow_run_id"):
        typer.echo(f"  logged to MLflow run {s['mlflow_run_id']}")


# ---- promote --rollout ------------------------------------------------------------------------------
def rollout(action: str, *, percent: int | None, namespace: str, storage_uri: str | None, dry_run: bool,
            services: list[str], candidate: str, policy, force: bool) -> dict:
    """One rollout step; see docs/deploy.md. Aliases: ``canary`` = the version on canary traffic,
    ``champion`` = the version on 100% (moved at ``complete``), ``previous`` = the champion before."""
    from mlflow.exceptions import MlflowException

    from hllm_creator import tracking
    from hllm_creator.publish import rollout as R
    from hllm_creator.tracking.mlflow_utils import _mlflow, _version_for

    client = _mlflow().MlflowClient()
    name = tracking.MODEL_NAME

    def version(alias: str):
        try:
            return _version_for(alias)
        except MlflowException:
            return None

    out: dict = {"action": action, "namespace": namespace, "services": services, "dry_run": dry_run}
    if action == "canary":
        if percent is None:
            raise typer.BadParameter("--rollout canary needs --percent N (1..99)")
        res = tracking.promote(candidate, force=force, policy=policy, alias="canary", dry_run=dry_run)
        out["gate"] = res
        if not res["would_promote"]:
            out["applied"] = False
            return out
        v = res["candidate_version"]
        out["registry"] = [res["would"]]
        if not dry_run and "rolled_back" in client.get_model_version(name, v).tags:  # a second chance
            client.delete_model_version_tag(name, v, "rolled_back")
        uri = storage_uri or tracking.version_storage_uri(v)
        patches = R.rollout_patches("canary", storage_uri=uri, percent=percent, services=tuple(services),
                                    namespace=namespace)
        out.update({"version": v, "storage_uri": uri, "percent": percent})
    elif action == "complete":
        can = version("canary")
        if can is None:
            raise typer.BadParameter("no version has alias `canary`: start with --rollout canary --percent N")
        patches = R.rollout_patches("complete", services=tuple(services), namespace=namespace)
        out["version"] = str(can.version)
    elif action == "rollback":
        can, champ = version("canary"), version("champion")
        uri = storage_uri or (tracking.version_storage_uri(champ.version) if champ is not None else None)
        patches = R.rollout_patches("rollback", previous_storage_uri=uri, services=tuple(services),
                                    namespace=namespace)
        out.update({"version": None if can is None else str(can.version),
                    "champion": None if champ is None else str(champ.version), "storage_uri": uri})
    else:
        raise typer.BadParameter(f"--rollout {action!r}: canary or complete (or --rollback)")
    for p in patches:
        R.validate_isvc(p)
    out["patches"] = patches
    if dry_run:
        out["applied"] = False
    else:
        out["answers"] = R.apply_patches(patches, namespace)
        out["applied"] = True
    # the registry follows what the cluster serves; a dry run only says what it would change
    changes: list[tuple[str, tuple]] = []
    if action == "complete":
        champ = version("champion")
        if champ is not None and str(champ.version) != out["version"]:
            changes.append((f"alias previous -> version {champ.version}",
                            ("set_registered_model_alias", name, "previous", str(champ.version))))
        changes.append((f"alias champion -> version {out['version']}",
                        ("set_registered_model_alias", name, "champion", out["version"])))
        changes.append(("alias canary removed", ("delete_registered_model_alias", name, "canary")))
    elif action == "rollback" and out["version"] is not None:
        changes.append(("alias canary removed", ("delete_registered_model_alias", name, "canary")))
        changes.append((f"version {out['version']} tagged rolled_back",
                        ("set_model_version_tag", name, out["version"], "rolled_back", "true")))
    out["registry"] = out.get("registry", []) + [what for what, _ in changes]
    if not dry_run:
        for _, (method, *args) in changes:
            getattr(client, method)(*args)
    return out


def echo_checks(res: dict) -> None:
    """Each check of a promote answer on its line; the refusals --force overrides said as such."""
    for c in res.get("checks", []):
        typer.echo(f"  {'ok     ' if c['ok'] else 'REFUSED'}  {c['check']}: {c['detail']}")
    for r in res.get("overridden", []):
        typer.secho(f"  --force overrides: {r}", fg="yellow")


def echo_rollout(out: dict) -> None:
    gate = out.get("gate")
    if gate is not None:
        typer.secho(("gate passed: " if gate["would_promote"] else "gate refused: ") + gate["reason"],
                    fg="green" if gate["would_promote"] else "yellow")
        echo_checks(gate)
        if not gate["would_promote"]:
            return
    what = {"canary": f"canary {out.get('percent')}% -> version {out.get('version')} ({out.get('storage_uri')})",
            "complete": f"complete: version {out.get('version')} takes 100% and becomes champion",
            "rollback": f"rollback: 0% to version {out.get('version')}; storage back to champion "
                        f"{out.get('champion')} ({out.get('storage_uri')})"}[out["action"]]
    typer.secho(("dry run, not applied: " if out["dry_run"] else "applied: ") + what, fg="green")
    for p in out["patches"]:
        typer.echo(f"  kubectl -n {out['namespace']} patch isvc {p['metadata']['name']} --type merge -p "
                   f"'{json.dumps({'spec': p['spec']}, separators=(',', ':'))}'")
    for r in out.get("registry", []):
        typer.echo(f"  registry{' (would)' if out['dry_run'] else ''}: {r}")
    for a in out.get("answers", []):
        typer.echo(f"  {a['name']}: generation {a['generation']}, canaryTrafficPercent "
                   f"{a['canaryTrafficPercent']}, storageUri {a['storageUri']}")
