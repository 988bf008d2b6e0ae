"""Implementation of the tracking layer; import from ``hllm_creator.tracking``."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field

from hllm_creator.config import StepConfig, flatten
from hllm_creator.paths import REPO_ROOT, work_dir

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "hllm-creator"
# MLflow 3's UI opens an experiment by its kind: without this tag it guessed a GenAI experiment
# (the traces overview, step runs under "Evaluations"); a model-training one opens on the runs table
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
MODEL_NAME = "hllm-creator"
PARENT_ENV = "HLLM_PARENT_RUN_ID"
_MAX_PARAM = 6000  # MLflow param value limit (chars)


def resolve_tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{work_dir() / 'mlflow.db'}"


def _mlflow():
    import mlflow

    mlflow.set_tracking_uri(resolve_tracking_uri())
    return mlflow


def ensure_experiment(name: str | None = None) -> str:
    """Create (if needed) and select the project's experiment; returns its id."""
    mlflow = _mlflow()
    name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        kwargs = {}
        if resolve_tracking_uri().startswith("sqlite:"):
            kwargs["artifact_location"] = (work_dir() / "mlartifacts").as_uri()
        exp_id = mlflow.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}, **kwargs)
    else:
        exp_id = exp.experiment_id
        if EXPERIMENT_KIND_TAG not in (exp.tags or {}):  # made before the tag: set it once
            try:
                mlflow.MlflowClient().set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            except mlflow.exceptions.MlflowException as e:  # a user that may only log runs: not fatal
                log.debug("cannot tag experiment %s: %s", name, e)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except Exception:  # noqa: BLE001 - no git, no repo: the run is tagged unknown
        return "unknown"


@contextlib.contextmanager
def parent_run(run_name: str, tags: dict[str, str] | None = None, run_id: str | None = None) -> Iterator[Any]:
    """One parent run per pipeline run. Sets ``HLLM_PARENT_RUN_ID`` for the steps it launches."""
    mlflow = _mlflow()
    ensure_experiment()
    all_tags = {"git_sha": git_sha(), "kind": "pipeline"}
    all_tags.update(tags or {})
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, tags=all_tags) as run:
        old = os.environ.get(PARENT_ENV)
        os.environ[PARENT_ENV] = run.info.run_id
        try:
            yield run
        finally:
            if old is None:
                os.environ.pop(PARENT_ENV, None)
            else:
                os.environ[PARENT_ENV] = old


@contextlib.contextmanager
def step_run(step: str, config=None, *, parent_run_id: str | None = None,
             tags: dict[str, str] | None = None) -> Iterator[Any]:
    """A step's run: nested under the parent (argument, or ``HLLM_PARENT_RUN_ID``) when there is one.

    Logs the config (a ``StepConfig``/pydantic model or dict) as params, tags ``step`` and ``git_sha``.
    """
    mlflow = _mlflow()
    ensure_experiment()
    parent = parent_run_id or os.environ.get(PARENT_ENV)
    all_tags = {"step": step, "git_sha": git_sha()}
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    if config is not None and hasattr(config, "config_hash"):
        all_tags["config_hash"] = config.config_hash()
    all_tags.update(tags or {})
    active = mlflow.active_run()
    # when called inside an active run that is not our parent, nest explicitly
    with mlflow.start_run(run_name=step, tags=all_tags, nested=active is not None) as run:
        if config is not None:
            log_config(config)
        yield run


def log_config(config) -> None:
    if hasattr(config, "flat_params"):
        params = config.flat_params()
    elif hasattr(config, "model_dump"):
        params = flatten(config.model_dump(mode="json"))
    else:
        params = flatten(dict(config))
    clean = {}
    for k, v in params.items():
        if any(s in k.lower() for s in ("api_key", "apikey", "secret", "password", "token_value")):
            continue  # secrets never reach MLflow
        s = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
        clean[k] = s[:_MAX_PARAM]
    _mlflow().log_params(clean)


def log_params(params: dict[str, Any]) -> None:
    """Values a run was set up with (sizes, switches, what a schedule planned): params, one value per
    run, shown in the run's parameter table rather than as metric charts."""
    _mlflow().log_params({k: str(v)[:_MAX_PARAM] for k, v in params.items()})


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    ok = {k: float(v) for k, v in metrics.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
    if ok:
        _mlflow().log_metrics(ok, step=step)


def log_figure(fig, name: str) -> None:
    """A matplotlib figure as a PNG artifact (closed afterwards)."""
    import matplotlib.pyplot as plt

    _mlflow().log_figure(fig, name if name.endswith((".png", ".svg")) else f"{name}.png")
    plt.close(fig)


def log_table(df, name: str) -> None:
    """A pandas DataFrame as an MLflow table (JSON, shown in the UI's artifact view / Evaluation)."""
    _mlflow().log_table(data=df.reset_index(drop=True), artifact_file=name if name.endswith(".json") else f"{name}.json")


def log_json(obj, name: str) -> None:
    _mlflow().log_dict(obj, name if name.endswith(".json") else f"{name}.json")


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    _mlflow().log_artifact(str(path), artifact_path=artifact_path)


def log_artifacts(path: str | Path, artifact_path: str | None = None) -> None:
    _mlflow().log_artifacts(str(path), artifact_path=artifact_path)


# What the registered pyfunc needs to load (its class is pickled by cloudpickle) and what a model
# dir needs to be read (hllm_creator.model loads safetensors weights with torch/transformers/peft),
# pinned to the versions installed where the model was logged.
MODEL_REQUIREMENTS = ("mlflow", "cloudpickle", "torch", "transformers", "safetensors", "peft", "pandas")
# The project itself is not on PyPI: a package index could hand anything under its name. It is
# declared only as a wheel by path or URL (a direct reference), from this environment variable,
# e.g. "hllm-creator @ https://registry.example.com/wheels/hllm_creator-0.1.0-py3-none-any.whl".
PACKAGE_REQUIREMENT_ENV = "HLLM_PACKAGE_REQUIREMENT"


def _is_pinned(req: str) -> bool:
    """``name==version`` (exact) or a direct reference ``name @ url/path``; never a bare name or range."""
    import re

    r = req.split(";")[0].strip()
    return bool(re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+\s*===?\s*[A-Za-z0-9_.+!\-]+", r)
                or re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+\s*@\s*\S+", r))


def model_pip_requirements(extra: list[str] | None = None) -> list[str]:
    """The registered model's pip requirements: ``MODEL_REQUIREMENTS`` at their installed versions,
    plus ``$HLLM_PACKAGE_REQUIREMENT`` (the project's wheel) and ``extra``. Every entry must be
    pinned (``==``) or a direct reference (``@``): a ValueError names any that is not."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for name in MODEL_REQUIREMENTS:
        try:
            v = version(name)
        except PackageNotFoundError:
            continue
        reqs.append(f"{name}=={v.split('+')[0]}")  # a local tag (+cpu) is not on the public index
    pkg = os.environ.get(PACKAGE_REQUIREMENT_ENV)
    if pkg:
        reqs.append(pkg.strip())
    reqs += list(extra or [])
    loose = [r for r in reqs if not _is_pinned(r)]
    if loose:
        raise ValueError(f"pip_requirements must be pinned (name==version) or a direct reference "
                         f"(name @ URL/path): {loose}")
    return reqs


def register_model(model_dir: str | Path, *, name: str = MODEL_NAME, aliases: tuple[str, ...] = ("candidate",),
                   pip_requirements: list[str] | None = None, artifact_key: str = "model_dir",
                   tags: dict[str, str] | None = None) -> Any:
    """Log a model directory into the active run as a pyfunc model and register it with aliases.

    The registered model's artifacts hold the directory under ``artifacts/<artifact_key>``
    (``model_dir``; ``bundle`` for a serving bundle, see :func:`register_bundle`); use
    ``download_registered(uri)`` to get a local path back (``models:/hllm-creator@champion``).
    ``tags`` are set on the new model version.
    """
    import mlflow.pyfunc

    model_dir = Path(model_dir)
    if not model_dir.is_dir() or not any(model_dir.iterdir()):
        raise ValueError(f"model directory {model_dir} does not exist or is empty")
    mlflow = _mlflow()

    class ModelDir(mlflow.pyfunc.PythonModel):
        """Wrapper that carries a model directory; predict is served by hllm_creator.serving."""

        def load_context(self, context):
            self.model_dir = context.artifacts[artifact_key]

        def predict(self, context, model_input, params=None):
            return {"model_dir": self.model_dir}

    info = mlflow.pyfunc.log_model(
        name="model", python_model=ModelDir(), artifacts={artifact_key: str(model_dir)},
        pip_requirements=model_pip_requirements(pip_requirements), registered_model_name=name,
    )
    version = info.registered_model_version
    client = mlflow.MlflowClient()
    for k, v in (tags or {}).items():
        if v is not None:
            client.set_model_version_tag(name, str(version), k, str(v))
    active = mlflow.active_run()
    if active is not None:
        parent = active.data.tags.get("mlflow.parentRunId") or os.environ.get(PARENT_ENV)
        if parent:  # lets `promote` find the pipeline run (and its GSB metric) of this version
            client.set_model_version_tag(name, str(version), "pipeline_run_id", parent)
    for alias in aliases:
        client.set_registered_model_alias(name, alias, str(version))
    return info


def set_alias(alias: str, version: str | int, name: str = MODEL_NAME) -> None:
    _mlflow().MlflowClient().set_registered_model_alias(name, alias, str(version))


def download_registered(uri: str, dst: str | Path | None = None) -> Path:
    """``models:/name@alias`` (or ``models:/name/3``) -> local model directory.

    Reads the pyfunc flavor's ``artifacts.model_dir.path`` from the downloaded ``MLmodel`` (MLflow
    stores a logged directory under its own basename), so the returned path is the directory that
    was registered. ``dst`` must be empty or absent. Without ``dst``, a ``models:/`` URI lands in
    ``$HLLM_WORKDIR/registry/<name>-v<version>-<store>`` and a later call for the same version (a
    restarted server) reuses it: a model version's files never change. Anything else: a new temp dir.
    """
    mlflow = _mlflow()
    if not uri.startswith(("models:/", "runs:/")) and not Path(uri).exists():
        raise ValueError(f"not a model URI (models:/NAME@ALIAS, models:/NAME/VERSION) or a path: {uri!r}")
    if dst and Path(dst).exists() and any(Path(dst).iterdir()):
        raise ValueError(f"download target {dst} is not empty")
    mv = _version_for(uri) if uri.startswith("models:/") else None  # unknown alias/version: one clear error first
    if dst is None and mv is not None:
        return _cached_version(uri, mv)
    dst = Path(dst) if dst else Path(tempfile.mkdtemp(prefix="hllm-model-"))
    dst.mkdir(parents=True, exist_ok=True)
    return _registered_dir(Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))))


def _cached_version(uri: str, mv) -> Path:
    """One download per (tracking store, model, version) under the work dir, written whole or not at all."""
    import hashlib
    import shutil

    store = hashlib.sha256(f"{resolve_tracking_uri()}|{mv.run_id}|{mv.source}".encode()).hexdigest()[:10]
    final = work_dir() / "registry" / f"{mv.name}-v{mv.version}-{store}"
    if not final.is_dir():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            _mlflow().artifacts.download_artifacts(artifact_uri=f"models:/{mv.name}/{mv.version}", dst_path=str(tmp))
            try:
                tmp.rename(final)
            except OSError:  # another process put the same version there first: use that one
                if not final.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("downloaded %s (version %s) to %s", uri, mv.version, final)
    return _registered_dir(final)


def _registered_dir(local: Path) -> Path:
    """The registered directory inside a downloaded model: a serving bundle, else a model dir."""
    import yaml

    mlmodel = local / "MLmodel"
    if mlmodel.exists():
        spec = yaml.safe_load(mlmodel.read_text()) or {}
        arts = (spec.get("flavors", {}).get("python_function", {}) or {}).get("artifacts") or {}
        for key in ("bundle", "model_dir"):  # a serving bundle, else a model dir
            rel = (arts.get(key) or {}).get("path")
            if rel and (local / rel).is_dir():
                return local / rel
    return local


BUNDLE_KEY = "bundle"


def register_bundle(bundle_dir: str | Path, manifest: dict, *, name: str = MODEL_NAME,
                    aliases: tuple[str, ...] = ("candidate",)) -> Any:
    """Register a serving bundle (``hllm_creator.publish``) as one model version of ``name``.

    Call inside the publish step's run (nested under the pipeline run: ``promote`` reads the GSB
    and personalization figures from its sibling step runs). The version is tagged ``kind=bundle``,
    ``bundle_id``, ``dataset_hash``, ``config_hash``, ``pipeline_run_id`` and ``train_run_id``."""
    tags = {"kind": "bundle", "bundle_id": manifest.get("bundle_id"), "dataset_hash": manifest.get("dataset_hash"),
            "config_hash": manifest.get("config_hash"), "train_run_id": manifest.get("train_run_id"),
            "model_hash": manifest.get("model_hash")}
    return register_model(bundle_dir, name=name, aliases=aliases, artifact_key=BUNDLE_KEY, tags=tags)


def version_storage_uri(version: str | int, name: str = MODEL_NAME) -> str:
    """Where a version's registered directory (bundle or model dir) lies in the artifact store:
    ``<version download uri>/<artifacts path>``, e.g. ``s3://bucket/1/models/m-.../artifacts/bundle``:
    the ``storageUri`` a KServe InferenceService gives its storage initializer."""
    client = _mlflow().MlflowClient()
    base = client.get_model_version_download_uri(name, str(version)).rstrip("/")
    mv = client.get_model_version(name, str(version))
    key = BUNDLE_KEY if mv.tags.get("kind") == "bundle" else "model_dir"
    # pyfunc stores a logged directory under artifacts/<its basename>: read MLmodel to know it
    import yaml

    try:
        txt = _mlflow().artifacts.load_text(f"{base}/MLmodel")
        arts = (yaml.safe_load(txt).get("flavors", {}).get("python_function", {}) or {}).get("artifacts") or {}
        rel = (arts.get(key) or {}).get("path")
        if rel:
            return f"{base}/{rel}"
    except Exception as e:  # noqa: BLE001 - the MLmodel may be unreadable from here; say so
        raise ValueError(f"cannot read MLmodel of {name} version {version} at {base}: {e}") from e
    raise ValueError(f"{name} version {version}: MLmodel at {base} names no {key!r} artifact")


def _version_for(uri_or_version: str, name: str = MODEL_NAME):
    """A model version from ``models:/NAME@ALIAS``, ``models:/NAME/N``, an alias or a version number."""
    client = _mlflow().MlflowClient()
    ref = uri_or_version
    if ref.startswith("models:/"):
        body = ref[len("models:/"):]
        if "@" in body:
            name, alias = body.split("@", 1)
            return _by_alias(client, name, alias)
        name, _, ver = body.partition("/")
        return client.get_model_version(name, ver)
    if ref.isdigit():
        return client.get_model_version(name, ref)
    return _by_alias(client, name, ref)


def _by_alias(client, name: str, alias: str):
    """``get_model_version_by_alias``; an unknown alias or model is an error that lists what exists."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        try:
            known = client.get_registered_model(name).aliases
        except MlflowException:
            names = [m.name for m in client.search_registered_models(max_results=20)]
            raise MlflowException(f"no registered model {name!r} (registered: "
                                  f"{', '.join(names) or 'none'})", error_code=e.error_code) from None
        if alias in known:
            raise
        have = ", ".join(f"@{a} (version {v})" for a, v in sorted(known.items())) or "none"
        raise MlflowException(f"model {name!r} has no alias {alias!r}; its aliases: {have} "
                              f"(`hllm-creator promote` moves @champion)", error_code=e.error_code) from None


def _family(run_id: str, *, metrics: bool, step: str | None = None):
    """The run, then (for metrics) its parent, then its sibling step runs (those tagged ``step`` when
    given): where ``run_metric``/``run_tag`` look, nearest first."""
    client = _mlflow().MlflowClient()
    run = client.get_run(run_id)
    yield run
    parent_id = run.data.tags.get("mlflow.parentRunId")
    if not parent_id:
        return
    if metrics:
        yield client.get_run(parent_id)
    flt = f"tags.mlflow.parentRunId = '{parent_id}'" + (f" and tags.step = '{step}'" if step else "")
    yield from client.search_runs([run.info.experiment_id], filter_string=flt)


def run_metric(run_id: str, key: str) -> float | None:
    """Metric ``key`` of a run, else of its parent, else of any sibling step run under that parent.

    The model is registered by the train step's run; GSB is logged by the gsb-eval step run next
    to it (and copied to the parent by the pipeline runner), so this finds it either way.
    """
    return next((r.data.metrics[key] for r in _family(run_id, metrics=True) if key in r.data.metrics), None)


class PromotePolicy(StepConfig):
    """The evidence ``promote`` requires. Every refusal says which rule and why.

    1. ``metric`` (default ``gsb_ci_low``: the lower bound of GSB Adv's 95% CI, judged on served
       titles only) above the champion's, or above 0 when there is no champion (or it has none);
    2. the judge-failure rate (``failure_metric``) below ``max_judge_failure_rate``;
    3. no stand-in rows: the train run's tag ``standin_data`` is ``false`` (a missing tag refuses:
       unknown training data is no evidence);
    4. when a personalization run is present: its audience-fit CI lower bound (``fit_metric``) > 0,
       and, where it ran the permutation test, its p-value (``fit_p_metric``) below ``max_fit_p``
       (the CI alone takes the assignment of titles to clusters as given; a lucky one can clear 0).
    """

    metric: str = "gsb_ci_low"
    max_judge_failure_rate: float = Field(0.2, gt=0.0, le=1.0)
    failure_metric: str = "gsb_judge_failure_rate"
    fit_metric: str = "pers_fit_other_ci_low"
    fit_p_metric: str = "pers_fit_other_perm_p"
    max_fit_p: float = Field(0.05, gt=0.0, le=1.0)


def run_tag(run_id: str, key: str, step: str = "train") -> str | None:
    """Tag ``key`` of a run, else of its sibling step run tagged ``step`` (e.g. the train run)."""
    return next((r.data.tags[key] for r in _family(run_id, metrics=False, step=step) if key in r.data.tags), None)


def promote(candidate: str = "candidate", *, metric: str | None = None, name: str = MODEL_NAME,
            force: bool = False, policy: PromotePolicy | None = None, alias: str = "champion",
            dry_run: bool = False) -> dict[str, Any]:
    """Move alias ``champion`` to the candidate version when the evidence of :class:`PromotePolicy`
    holds; every rule is checked and reported (``checks``), each refusal says why (``reason``).

    ``candidate``: an alias, a version number or a ``models:/`` URI. ``metric`` overrides the
    policy's GSB metric. ``force`` promotes whatever the checks say (they are still reported).
    ``alias``: the alias moved when the checks pass (``canary`` for a canary rollout, which moves
    ``champion`` only at ``--rollout complete``).
    ``dry_run``: every check runs and the answer says what would change (``would``), no alias moves.
    ``overridden``: the refusals ``force`` overrode (empty when every check passed).
    """
    from mlflow.exceptions import MlflowException

    pol = policy or PromotePolicy()
    metric = metric or pol.metric
    cand = _version_for(candidate, name)
    cand_score = run_metric(cand.run_id, metric) if cand.run_id else None
    try:
        champ = _version_for("champion", name)
    except MlflowException:
        champ = None
    champ_score = run_metric(champ.run_id, metric) if champ is not None and champ.run_id else None
    try:
        holder = champ if alias == "champion" else _version_for(alias, name)
    except MlflowException:
        holder = None
    out = {"model": name, "metric": metric, "candidate_version": str(cand.version), "candidate_score": cand_score,
           "champion_version": None if champ is None else str(champ.version), "champion_score": champ_score,
           "dry_run": dry_run}
    if champ is not None and str(champ.version) == str(cand.version):
        return {**out, "promoted": False, "would_promote": False, "already": True,
                "reason": "candidate is already champion", "checks": [], "overridden": []}
    checks: list[dict[str, Any]] = []

    def check(rule: str, ok: bool, detail: str) -> None:
        checks.append({"check": rule, "ok": ok, "detail": detail})

    # 1. GSB Adv CI lower bound vs the champion's (or 0)
    if cand_score is None:
        check("gsb", False, f"candidate version {cand.version} has no metric {metric!r} (run gsb-eval first)")
    elif champ is None or champ_score is None:
        who = "no champion yet" if champ is None else f"champion version {champ.version} has no {metric!r}"
        check("gsb", cand_score > 0, f"{who}: {metric} {cand_score:.4f} must be > 0")
    else:
        check("gsb", cand_score > champ_score,
              f"{metric} {cand_score:.4f} must be > champion version {champ.version}'s {champ_score:.4f}")
    # 2. judge failures
    rate = run_metric(cand.run_id, pol.failure_metric) if cand.run_id else None
    if rate is None:
        check("judge_failures", False, f"no {pol.failure_metric!r} logged: the judge's reliability is unknown")
    else:
        check("judge_failures", rate < pol.max_judge_failure_rate,
              f"judge-failure rate {rate:.3f} must be < {pol.max_judge_failure_rate:.3f}")
    # 3. stand-in rows
    tag = run_tag(cand.run_id, "standin_data") if cand.run_id else None
    if tag is None:
        check("standin", False, "the train run has no standin_data tag: whether it trained on stand-in rows "
                                "(copies of the original title, not teacher data) is unknown")
    else:
        check("standin", str(tag).lower() == "false",
              f"trained with stand-in rows (standin_data={tag}): not teacher data" if str(tag).lower() != "false"
              else "no stand-in rows (standin_data=false)")
    # 4. audience fit, when a personalization run is there
    fit = run_metric(cand.run_id, pol.fit_metric) if cand.run_id else None
    if fit is None:
        check("audience_fit", True, f"no personalization run ({pol.fit_metric!r} absent): not checked")
    else:
        fit_p = run_metric(cand.run_id, pol.fit_p_metric)
        detail = f"audience-fit CI lower bound {pol.fit_metric} {fit:.4f} must be > 0"
        if fit_p is not None:
            detail += f" and its permutation p {fit_p:.3f} must be < {pol.max_fit_p:.3f}"
        check("audience_fit", fit > 0 and (fit_p is None or fit_p < pol.max_fit_p), detail)
    refusals = [f"{c['check']}: {c['detail']}" for c in checks if not c["ok"]]
    ok = force or not refusals
    if force:
        reason = "forced" + (f" (despite: {'; '.join(refusals)})" if refusals else "")
    elif refusals:
        reason = "; ".join(refusals)
    else:
        reason = checks[0]["detail"]
    would = (f"alias {alias}: version {holder.version} -> {cand.version}" if holder is not None
             else f"alias {alias}: (none) -> version {cand.version}")
    if ok and not dry_run:
        set_alias(alias, cand.version, name)
    return {**out, "promoted": ok and not dry_run, "would_promote": ok, "alias": alias, "would": would,
            "reason": reason, "checks": checks, "overridden": refusals if force else []}
