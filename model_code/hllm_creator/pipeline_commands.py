"""``hllm-creator run | compile | submit | compare | promote``: the whole pipeline.

The pipeline itself lives in the installed ``pipelines`` package (it imports kfp); this module
imports it lazily inside the command bodies, so the library never imports kfp and ``--help``
stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from hllm_creator.publish.commands import echo_checks

_PRESET = typer.Option("demo", "--preset", "-p",
                       help="tiny (CI, tiny random models), demo (2-core CPU, SmolLM2; <= 30 min), "
                            "production (GPU nodes) or gpu-multinode (a TrainJob on 8 x 8 GPUs).")
SET_EXAMPLE = "--set train.max_steps=2 --set n_embed_shards=4"  # tested: tests/unit/test_cli_surface.py
_SET = typer.Option(None, "--set",
                    help=f"Override a preset value (repeatable), e.g. {SET_EXAMPLE}; the value is JSON "
                         "when it parses, else a string. Checked before anything starts.")


def _preset(name: str, sets: Optional[list[str]]):
    from hllm_creator_kfp.pipelines.presets import get_preset

    overrides = {}
    for s in sets or []:
        if "=" not in s:
            raise typer.BadParameter(f"--set wants KEY=VALUE, got {s!r}")
        k, v = s.split("=", 1)
        try:
            overrides[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            overrides[k.strip()] = v
    try:
        p = get_preset(name, overrides)
        check_preset_values(p)
    except ValueError as e:  # pydantic ValidationError and the pipeline's WiringError are ValueErrors
        raise typer.BadParameter(" ".join(str(e).split())) from None
    return p, ";".join(sets or [])


# KFP input types -> the Python values a preset may give them (bool is not an Integer here)
_KFP_TYPES = {"Integer": (int,), "Float": (int, float), "String": (str,), "Boolean": (bool,)}


def check_preset_values(p) -> None:
    """The whole preset, before anything starts: every step key names an input of its component
    (``check_preset``) and every value has that input's type. Raises ValueError naming the key."""
    from hllm_creator_kfp.pipelines.hllm_pipeline import COMPONENTS, check_preset

    for step, section in check_preset(p).items():
        inputs = COMPONENTS[step].component_spec.inputs or {}
        for key, value in section.items():
            kind = getattr(inputs[key], "type", None)
            ok = _KFP_TYPES.get(kind)
            if ok is None or value is None:
                continue
            if isinstance(value, bool) and kind != "Boolean" or not isinstance(value, ok):
                raise ValueError(f"{step}.{key}={value!r}: component {COMPONENTS[step].name!r} wants "
                                 f"{kind.lower()}, got {type(value).__name__}")


def run_cmd(
    preset: str = _PRESET,
    pipeline_root: Optional[Path] = typer.Option(None, "--pipeline-root",
                                                 help="Where KFP puts every task's outputs and its cache "
                                                      "(default: $HLLM_WORKDIR/pipeline_root)."),
    data: Optional[Path] = typer.Option(None, "--data", help="A dataset dir (hllm-creator data prepare); "
                                                             "default: the bundled Amazon data."),
    llm_url: Optional[str] = typer.Option(None, "--llm-url",
                                          help="OpenAI-compatible base URL for teacher and judge (default: "
                                               "$OPENAI_BASE_URL, else the embedded server is started)."),
    run_name: Optional[str] = typer.Option(None, "--run-name", help="MLflow parent run name."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Run every step again (caching is on by default)."),
    sets: Optional[list[str]] = _SET,
    verbose: bool = typer.Option(False, "--verbose", help="Also print KFP's own output (every task's executor "
                                                          "input and log) instead of one line per step."),
    docker_image: Optional[str] = typer.Option(
        None, "--docker-image", help="Run every step in a container of this image instead (KFP's local "
        "DockerRunner through $DOCKER_HOST; the image's user 10001, e.g. the cpu image). Needs an MLflow "
        "server (MLFLOW_TRACKING_URI=http://...) and a pipeline root writable by that user."),
    docker_state_dir: Optional[Path] = typer.Option(
        None, "--docker-state-dir", help="With --docker-image: a dir (writable by the image's user) mounted "
        "as the steps' HLLM_STATE_DIR: the LLM reply cache and training checkpoints, kept between runs."),
) -> None:
    """Run the whole pipeline here with the KFP local SubprocessRunner (no cluster, no Docker), or with
    --docker-image every step in a container of that image (KFP's local DockerRunner).

    dataset-construct -> train -> embed (ParallelFor shards + merge) -> cluster -> match -> generate ->
    gsb-eval + personalization-eval. Prints one line per step as it starts and ends (status, seconds,
    its headline figure); the full log goes to run.log in the run dir (path printed). Ends with, per
    ad, the clusters' top interests and their served titles, the personalization figures (held-out
    users, 95% CIs), then the MLflow parent run's URL and the command that opens the UI. A re-run
    reuses the steps whose inputs did not change (KFP local cache under the pipeline root).
    """
    run_pipeline(preset, pipeline_root=pipeline_root, data=data, llm_url=llm_url, run_name=run_name,
                 no_cache=no_cache, sets=sets, verbose=verbose, docker_image=docker_image,
                 docker_state_dir=docker_state_dir)


def run_pipeline(preset: str, *, pipeline_root: Path | None = None, data: Path | None = None,
                 llm_url: str | None = None, run_name: str | None = None, no_cache: bool = False,
                 sets: list[str] | None = None, verbose: bool = False, docker_image: str | None = None,
                 docker_state_dir: Path | None = None) -> None:
    """``hllm-creator run`` as a plain function (``demo`` calls it too): every default is a value,
    not a typer option."""
    from hllm_creator.tracking import resolve_tracking_uri
    from hllm_creator_kfp.pipelines.local_runner import DockerSettings, run_local

    p, note = _preset(preset, sets)  # the whole preset and every --set, before anything starts
    if docker_state_dir is not None and not docker_image:
        raise typer.BadParameter("--docker-state-dir goes with --docker-image")
    docker = DockerSettings(image=docker_image, state_dir=docker_state_dir) if docker_image else None
    typer.echo(f"pipeline {p.name}: {p.description}")
    try:
        res = run_local(p, pipeline_root=pipeline_root, data_dir=data, llm_base_url=llm_url, run_name=run_name,
                        enable_caching=not no_cache, overrides_note=note or None,
                        console=sys.stdout, verbose=verbose, docker=docker)
    except RuntimeError as e:  # KFP local raises RuntimeError naming the failed task
        typer.secho(f"pipeline failed: {e}", fg="red", err=True)
        typer.secho("the steps that finished are cached: run the same command again to resume from there "
                    "(--no-cache to start over); the MLflow parent run is marked FAILED.", err=True)
        raise typer.Exit(1) from None
    except ValueError as e:  # bad dataset dir, a component that cannot be wired, ...
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.secho(f"pipeline finished in {res.seconds:.0f}s (preset {p.name}); full log: {res.log}", fg="green")
    if "creatives" in res.summary:
        typer.echo(f"creatives: {res.summary['creatives']} ({res.summary.get('n_creatives')} rows)")
    gsb = res.summary.get("gsb") or {}
    if gsb:
        typer.echo(f"GSB (served titles that differ from the original): G={_n(gsb.get('G'))} S={_n(gsb.get('S'))} "
                   f"B={_n(gsb.get('B'))} Adv {_pct(gsb.get('adv'))} (95% CI {_pct(gsb.get('ci_low'))} .. "
                   f"{_pct(gsb.get('ci_high'))})" + judge_note(gsb))
    pers = res.summary.get("personalization") or {}
    if pers.get("lines"):
        # the closing summary: per ad the clusters' top interests and their SERVED titles (the original
        # once), then the personalization figures with their CIs
        for line in pers["lines"]:
            typer.echo(line)
    else:
        for s in res.summary.get("samples", []):  # no personalization report: the served titles only
            typer.echo(f"  [{s.get('item_id')} / cluster {s.get('cluster_id')}] "
                       f"{s.get('original_title')!r}  ->  served {s.get('title', s.get('original_title'))!r}")
    url, ui = mlflow_ui(resolve_tracking_uri(), res.experiment_id, res.parent_run_id)
    if ui:
        typer.echo(f"MLflow UI (start it, then open the URLs): {ui}")
    typer.echo(f"MLflow parent run: {url}")
    base = url.split("/#/", 1)[0]
    urls = mlflow_urls(base, res.experiment_id)
    typer.echo(f"MLflow runs table: {urls['runs']}")
    typer.echo(f"MLflow model registry: {urls['models']}")
    bundle = res.summary.get("paths", {}).get("publish__bundle")
    if bundle:  # the run's serving bundle, registered as hllm-creator@candidate (docs/deploy.md)
        typer.echo(f"Serving bundle: {bundle}; serve it: hllm-creator serve predictor --model-uri "
                   "models:/hllm-creator@candidate")


def judge_note(gsb: dict) -> str:
    """``; WARNING: the judge failed on 7 of 12 samples (58%)...`` when it failed at all, else ''."""
    fails, n = gsb.get("judge_failures"), gsb.get("n")
    if not isinstance(fails, (int, float)) or not n or fails <= 0:
        return ""
    return (f"; WARNING: the judge failed on {int(fails)} of {int(n)} samples ({100 * fails / n:.0f}%, counted "
            "as Same): promote refuses at 20% or more")


def _n(v) -> str:
    return "-" if v is None else f"{int(v)}"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * float(v):.1f}%"


# MLflow 3's UI picks GenAI or model-training mode from its own setting (default GenAI: traces
# overview, runs under "Evaluations", no model registry in the sidebar); this query parameter opens
# the model-training mode: the runs table and "Model registry" (checked in a headless browser:
# tests/integration/mlflow_ui_check.py, docs/img/mlflow_ui_runs.png)
UI_MODE = "workflowType=machine_learning"


def mlflow_urls(base: str, experiment_id: str, run_id: str | None = None) -> dict[str, str]:
    """The MLflow UI pages a reviewer wants, in model-training mode: the experiment's runs table,
    the run (when given) and the model registry."""
    base = base.rstrip("/")
    out = {"runs": f"{base}/#/experiments/{experiment_id}/runs?{UI_MODE}"}
    if run_id:
        out["run"] = f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{UI_MODE}"
    out["models"] = f"{base}/#/models?{UI_MODE}"
    return out


def mlflow_ui(tracking_uri: str, experiment_id: str, run_id: str, port: int = 5000) -> tuple[str, str | None]:
    """(URL of the run in the MLflow UI, the command that serves the UI for an embedded store or None).

    The command is runnable as pasted: the absolute path of this environment's ``mlflow`` (a
    fresh clone has it only in ``.venv/bin``), job execution off (2.8 GB less memory)."""
    if tracking_uri.startswith(("http://", "https://")):
        return mlflow_urls(tracking_uri, experiment_id, run_id)["run"], None
    import shutil

    from hllm_creator.paths import work_dir

    exe = Path(sys.executable).parent / "mlflow"
    exe = str(exe) if exe.exists() else (shutil.which("mlflow") or f"{sys.executable} -m mlflow")
    cmd = (f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {exe} ui --backend-store-uri {tracking_uri} "
           f"--default-artifact-root {work_dir() / 'mlartifacts'} --host 127.0.0.1 --port {port} --workers 1")
    return mlflow_urls(f"http://127.0.0.1:{port}", experiment_id, run_id)["run"], cmd


def compile_cmd(
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="YAML to write (default: $HLLM_WORKDIR/hllm-creator.pipeline.yaml, "
                                            "outside the checkout's tracked files)."),
    preset: str = typer.Option("production", "--preset", "-p",
                               help="Usually production or gpu-multinode (GPU requests)."),
    sets: Optional[list[str]] = _SET,
) -> None:
    """Compile the pipeline to KFP IR YAML (KFP 2 backend) and check it loads back with kfp."""
    from hllm_creator_kfp.pipelines.kfp_backend import check_compiled, compile_pipeline

    p, _ = _preset(preset, sets)
    if out is None:
        from hllm_creator.paths import work_dir

        out = work_dir() / "hllm-creator.pipeline.yaml"
    try:
        path = compile_pipeline(p, out)
    except ValueError as e:  # bad --out, a preset key no component takes, a missing component
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    rep = check_compiled(path)
    gpus = ", ".join(f"{k} x{v['count']}" for k, v in rep["gpu"].items()) or "none"
    typer.echo(f"wrote {path}: {len(rep['executors'])} executors; GPU requests: {gpus}")


def submit_cmd(
    host: str = typer.Option(..., "--host", help="KFP API endpoint, e.g. https://kfp.example.com"),
    experiment: str = typer.Option("hllm-creator", "--experiment", help="KFP experiment name."),
    run_name: str = typer.Option(..., "--run-name", help="KFP run name (also the MLflow parent run name)."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="KFP profile namespace (multi-user)."),
    preset: str = typer.Option("production", "--preset", "-p"),
    dataset_uri: str = typer.Option(..., "--dataset-uri", help="Object-store URI of the dataset dir "
                                                               "(s3://..., gs://...): the pipeline imports it "
                                                               "once into the run's workspace PVC."),
    llm_url: str = typer.Option("", "--llm-url", help="Teacher/judge endpoint (default: the secret's OPENAI_BASE_URL)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="KFP_TOKEN", help="Bearer token for the KFP API."),
    no_parent_run: bool = typer.Option(False, "--no-parent-run",
                                       help="Do not create the MLflow parent run (steps log top-level runs)."),
    sets: Optional[list[str]] = _SET,
) -> None:
    """Compile and submit the pipeline to a KFP backend (kfp.Client), with an experiment and a run name.

    Creates the MLflow parent run first (on $MLFLOW_TRACKING_URI: the server the cluster uses) and
    passes its id to every step.
    """
    from hllm_creator_kfp.pipelines.kfp_backend import submit

    p, _ = _preset(preset, sets)
    if not dataset_uri.startswith(("s3://", "gs://", "minio://", "https://")):
        raise typer.BadParameter(f"--dataset-uri must be an object-store URI (s3://, gs://, minio://), got {dataset_uri!r}")
    res = submit(p, host=host, experiment=experiment, run_name=run_name, namespace=namespace,
                 dataset_uri=dataset_uri,
                 llm_base_url=llm_url, existing_token=token, create_parent_run=not no_parent_run)
    for k, v in res.items():
        typer.echo(f"{k}: {v}")


def compare_cmd(
    run_a: str = typer.Argument(..., help="MLflow parent run id or name."),
    run_b: str = typer.Argument(..., help="MLflow parent run id or name."),
    only_diff: bool = typer.Option(False, "--only-diff", help="Hide rows where both runs agree."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON rows instead of a table."),
) -> None:
    """Params, metrics and key tags of two pipeline runs side by side, parent and every step run."""
    from hllm_creator.tracking import compare_runs

    try:
        df = compare_runs(run_a, run_b, only_diff=only_diff)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if as_json:
        typer.echo(df.to_json(orient="records"))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"A = {df.attrs['run_a']}   B = {df.attrs['run_b']}")
    for c in ("scope", "kind", "key", "A", "B", "B - A"):
        t.add_column(c, overflow="fold")

    def fmt(v):
        if v is None or (isinstance(v, float) and v != v):
            return "-"
        return f"{v:.4g}" if isinstance(v, float) else str(v)[:60]

    for r in df.itertuples(index=False):
        t.add_row(r.scope, r.kind, r.key, fmt(r.a), fmt(r.b), fmt(r.diff))
    Console(width=160).print(t)


def promote_cmd(
    run: Optional[str] = typer.Option(None, "--run",
                                      help="Promote the model registered by this pipeline run (parent or train "
                                           "step run id) instead of the current `candidate`."),
    metric: str = typer.Option("gsb_ci_low", "--metric",
                               help="GSB evidence: higher is better; must beat the champion's (or 0). Default: "
                                    "the lower bound of GSB Adv's 95% CI."),
    max_judge_failure_rate: float = typer.Option(0.2, "--max-judge-failure-rate",
                                                 help="Refuse when the judge failed on this share of samples "
                                                      "or more."),
    fit_metric: str = typer.Option("pers_fit_other_ci_low", "--fit-metric",
                                   help="Audience-fit CI lower bound of the personalization step: must be > 0 "
                                        "when present."),
    force: bool = typer.Option(False, "--force", help="Promote even if a check refuses (checks still shown)."),
    rollout: Optional[str] = typer.Option(None, "--rollout",
                                          help="canary: gate, alias `canary`, patch the InferenceServices to the "
                                               "candidate bundle with canaryTrafficPercent=--percent; complete: "
                                               "100% and alias `champion` (docs/deploy.md)."),
    percent: Optional[int] = typer.Option(None, "--percent", min=1, max=99, help="Canary traffic share (1..99)."),
    rollback: bool = typer.Option(False, "--rollback", help="Canary traffic to 0% and storage back to the champion."),
    namespace: str = typer.Option("hllm-creator", "--namespace", help="Namespace of the InferenceServices."),
    services: list[str] = typer.Option(["predictor", "creative"], "--service", help="InferenceServices to patch."),
    storage_uri: Optional[str] = typer.Option(None, "--storage-uri",
                                              help="storageUri to roll out (default: the version's bundle in the "
                                                   "MLflow artifact store)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Run every check and print what would change (aliases, "
                                                          "validated patches); change nothing."),
) -> None:
    """Move alias `champion` to the candidate when the evidence holds; each refusal says why.

    The candidate (alias `candidate`, set by train, or the version registered under --run) needs:
    its GSB Adv CI lower bound (gsb-eval, served titles only) above the champion's (or above 0
    with no champion); a judge-failure rate under --max-judge-failure-rate; no stand-in rows (the
    train run's tag standin_data is false); and, when a personalization run is present, its
    audience-fit CI lower bound above 0. Metrics are looked up on the train step run, its parent
    pipeline run, or a sibling step run (gsb-eval, personalization).
    """
    from hllm_creator import tracking

    cand = "candidate"
    if run:
        cand = _version_of_run(run)
    try:
        policy = tracking.PromotePolicy(metric=metric, max_judge_failure_rate=max_judge_failure_rate,
                                        fit_metric=fit_metric)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if rollout or rollback:  # issue 17: KServe canary rollout (hllm_creator.publish)
        from hllm_creator.publish.commands import echo_rollout
        from hllm_creator.publish.commands import rollout as do_rollout

        if rollout and rollback:
            raise typer.BadParameter("give --rollout canary|complete or --rollback, not both")
        out = do_rollout("rollback" if rollback else rollout, percent=percent, namespace=namespace,
                         storage_uri=storage_uri, dry_run=dry_run, services=services, candidate=cand,
                         policy=policy, force=force)
        echo_rollout(out)
        if out.get("gate") is not None and not out["gate"]["would_promote"]:
            raise typer.Exit(1)  # nothing reached traffic
        return
    res = tracking.promote(cand, force=force, policy=policy, dry_run=dry_run)
    if res.get("already"):
        typer.secho(f"nothing to do: {res['reason']} (version {res['candidate_version']})", fg="green")
    elif dry_run:
        typer.secho(("dry run, would promote: " if res["would_promote"] else "dry run, would refuse: ")
                    + res["reason"], fg="green" if res["would_promote"] else "yellow")
    else:
        typer.secho(("promoted: " if res["promoted"] else "not promoted: ") + res["reason"],
                    fg="green" if res["promoted"] else "yellow")
    echo_checks(res)
    if res["would_promote"]:
        typer.echo(f"  registry{' (would)' if dry_run else ''}: {res['would']}")
    typer.echo(json.dumps(res, indent=2, default=str))
    if not res["would_promote"] and not res.get("already"):
        raise typer.Exit(1)  # refused: a script reads failure (the same as a refused --rollout)


def _version_of_run(run: str) -> str:
    """The registered version whose source run is ``run`` or a step run under it."""
    import mlflow

    from hllm_creator.tracking import MODEL_NAME, resolve_tracking_uri

    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri())
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        if v.run_id == run or v.tags.get("pipeline_run_id") == run:
            return str(v.version)
    raise typer.BadParameter(f"no version of {MODEL_NAME} was registered by run {run}")


# name -> command, registered by cli.py
COMMANDS = {"run": run_cmd, "compile": compile_cmd, "submit": submit_cmd, "compare": compare_cmd,
            "promote": promote_cmd}
