"""Users and permissions on an MLflow server that runs MLflow's basic-auth app (``mlflow server
--app-name basic-auth``; manifests/base/mlflow.yaml, Job ``mlflow-users``).

Run as the admin (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` = the admin's):
- the pipeline user (``HLLM_MLFLOW_WRITER_USERNAME`` / ``..._PASSWORD``) gets MANAGE on the
  experiment and the registered model: logs runs, registers versions, moves aliases;
- the serving user (``HLLM_MLFLOW_READER_USERNAME`` / ``..._PASSWORD``) gets READ on both: it can
  download ``models:/hllm-creator@champion`` and nothing else.
With ``default_permission = NO_PERMISSIONS`` nobody else can read or write. Idempotent: an existing
user's password is re-set to the Secret's, permissions are re-granted. Nothing is printed of a password.

    python -m hllm_creator.tracking.auth_setup
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

WRITER_PERMISSION = "MANAGE"
READER_PERMISSION = "READ"


def _wait_healthy(uri: str, timeout_s: float) -> None:
    import httpx

    t0, last = time.time(), None
    while time.time() - t0 < timeout_s:
        try:
            r = httpx.get(f"{uri.rstrip('/')}/health", timeout=5)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as e:
            last = str(e)
        time.sleep(2)
    raise TimeoutError(f"MLflow at {uri} not healthy after {timeout_s:.0f}s ({last})")


def _grant(client, username: str, resource_type: str, resource_id: str, permission: str) -> None:
    from mlflow.exceptions import RestException

    try:
        client.grant_user_permission(username, resource_type, resource_id, permission)
    except RestException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        client.revoke_user_permission(username, resource_type, resource_id)
        client.grant_user_permission(username, resource_type, resource_id, permission)


def setup_users(tracking_uri: str, *, writer: tuple[str, str], reader: tuple[str, str],
                experiment: str = "hllm-creator", model_name: str = "hllm-creator",
                wait_s: float = 300.0) -> dict:
    """Create/refresh the two users and grant their permissions; returns what was set up
    (names and ids, no passwords). The caller's own credentials (env) must be the admin's."""
    import mlflow
    from mlflow.exceptions import RestException
    from mlflow.server.auth.client import AuthServiceClient

    if not os.environ.get("MLFLOW_TRACKING_USERNAME") or not os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        raise ValueError("MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (the admin's) are not set")
    for role, (user, pw) in (("writer", writer), ("reader", reader)):
        if not user or not pw:
            raise ValueError(f"the {role} user needs a username and a non-empty password")
    if writer[0] == reader[0]:
        raise ValueError(f"the writer and the reader must be different users (both {writer[0]!r})")
    _wait_healthy(tracking_uri, wait_s)
    auth = AuthServiceClient(tracking_uri)
    for user, pw in (writer, reader):
        try:
            auth.create_user(user, pw)
            log.info("created MLflow user %s", user)
        except RestException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            auth.update_user_password(user, pw)
            log.info("MLflow user %s exists: password re-set from the secret", user)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(
        experiment, tags={"mlflow.experimentKind": "custom_model_development"})
    try:
        client.get_registered_model(model_name)
    except RestException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(model_name)
    for user, perm in ((writer[0], WRITER_PERMISSION), (reader[0], READER_PERMISSION)):
        _grant(auth, user, "experiment", exp_id, perm)
        _grant(auth, user, "registered_model", model_name, perm)
    return {"experiment_id": exp_id, "model": model_name,
            "writer": {"user": writer[0], "permission": WRITER_PERMISSION},
            "reader": {"user": reader[0], "permission": READER_PERMISSION}}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    def env(name: str) -> str:
        v = os.environ.get(name)
        if not v:
            raise SystemExit(f"auth_setup: environment variable {name} is not set")
        return v

    out = setup_users(env("MLFLOW_TRACKING_URI"),
                      writer=(env("HLLM_MLFLOW_WRITER_USERNAME"), env("HLLM_MLFLOW_WRITER_PASSWORD")),
                      reader=(env("HLLM_MLFLOW_READER_USERNAME"), env("HLLM_MLFLOW_READER_PASSWORD")),
                      experiment=os.environ.get("MLFLOW_EXPERIMENT_NAME") or "hllm-creator",
                      model_name=os.environ.get("HLLM_MLFLOW_MODEL_NAME") or "hllm-creator")
    log.info("MLflow auth set up: %s", out)


if __name__ == "__main__":
    main()
