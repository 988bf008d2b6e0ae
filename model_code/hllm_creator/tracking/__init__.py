"""MLflow conventions: the one helper layer every step uses.

- Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else an embedded sqlite store under the working
  dir (``$HLLM_WORKDIR``, default ``./.hllm``): ``sqlite:///<workdir>/mlflow.db`` with artifacts in
  ``<workdir>/mlartifacts``.
- One experiment per project (``MLFLOW_EXPERIMENT_NAME``, default ``hllm-creator``).
- One parent run per pipeline run; one nested run per step (tag ``step``). A step finds its
  parent through ``HLLM_PARENT_RUN_ID`` (set by the pipeline) or the ``parent_run_id`` argument.
"""

from hllm_creator.tracking.mlflow_utils import (  # noqa: F401,I001
    DEFAULT_EXPERIMENT,
    MODEL_NAME,
    ensure_experiment,
    log_config,
    log_figure,
    log_json,
    log_metrics,
    log_params,
    log_table,
    log_artifact,
    log_artifacts,
    parent_run,
    register_model,
    register_bundle,
    version_storage_uri,
    resolve_tracking_uri,
    set_alias,
    download_registered,
    promote,
    PromotePolicy,
    run_tag,
    run_metric,
    step_run,
)
from hllm_creator.tracking.compare import compare_runs, resolve_run  # noqa: F401,E402
