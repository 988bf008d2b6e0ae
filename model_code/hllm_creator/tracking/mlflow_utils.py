"""Implementation of the tracking layer; import from ``hllm_creator.tracking``."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

from hllm_creator.paths import REPO_ROOT, work_dir

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "hllm-creator"
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
        exp_id = mlflow.create_experiment(name, **kwargs)
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except Exception:
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
    from hllm_creator.config import flatten

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


def register_model(model_dir: str | Path, *, name: str = MODEL_NAME, aliases: tuple[str, ...] = ("candidate",),
                   pip_requirements: list[str] | None = None) -> Any:
    """Log a model directory into the active run as a pyfunc model and register it with aliases.

    The registered model's artifacts hold the directory under ``artifacts/model_dir``; use
    ``download_registered(uri)`` to get a local path back (``models:/hllm-creator@champion``).
    """
    import mlflow.pyfunc

    mlflow = _mlflow()

    class ModelDir(mlflow.pyfunc.PythonModel):
        """Wrapper that carries a model directory; predict is served by hllm_creator.serving."""

        def load_context(self, context):
            self.model_dir = context.artifacts["model_dir"]

        def predict(self, context, model_input, params=None):
            return {"model_dir": self.model_dir}

    info = mlflow.pyfunc.log_model(
        name="model", python_model=ModelDir(), artifacts={"model_dir": str(model_dir)},
        pip_requirements=pip_requirements or ["hllm-creator"], registered_model_name=name,
    )
    version = info.registered_model_version
    client = mlflow.MlflowClient()
    for alias in aliases:
        client.set_registered_model_alias(name, alias, str(version))
    return info


def set_alias(alias: str, version: str | int, name: str = MODEL_NAME) -> None:
    _mlflow().MlflowClient().set_registered_model_alias(name, alias, str(version))


def download_registered(uri: str, dst: str | Path | None = None) -> Path:
    """``models:/name@alias`` (or ``models:/name/3``) -> local model directory."""
    mlflow = _mlflow()
    dst = Path(dst or tempfile.mkdtemp(prefix="hllm-model-"))
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    hits = [p for p in local.rglob("model_dir") if p.is_dir()]
    return hits[0] if hits else local
