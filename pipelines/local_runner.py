"""Run the whole pipeline on this machine with the KFP local SubprocessRunner (no cluster, no Docker),
or with KFP's local DockerRunner: every step in a container of one image (``DockerSettings``).

What the runner does around ``kfp.local``:
1. prepares the bundled dataset (once, under the work dir) unless ``data_dir`` is given;
2. starts the embedded OpenAI-compatible LLM server (``hllm-creator serve llm --model ...`` on a free
   loopback port) for the duration of the run, unless an endpoint is given (``llm_base_url`` or
   ``OPENAI_BASE_URL``), and hands its URL to the components (pipeline parameter + env);
3. opens the MLflow parent run (tags: kfp_run_id, git_sha, dataset name + hash, config hash,
   preset) and exports ``HLLM_PARENT_RUN_ID`` + ``MLFLOW_TRACKING_URI``: component subprocesses
   inherit the environment, so every step's ``tracking.step_run`` nests under the parent. This is
   the run context's one channel (on a cluster ``submit`` compiles the same variable into every
   task's env); it is not a component input, so it does not break the cache keys of a re-run;
4. runs the pipeline with caching on (``<pipeline_root>/.kfp_cache/<code fingerprint>``): a re-run
   after a failure reuses the steps that succeeded; a run after a code change computes them anew;
5. copies the headline metrics (GSB Adv, ...) to the parent run and returns where things are.

Locally, ``set_accelerator_*``/``set_cpu_*``/``set_memory_*`` are ignored by KFP with a warning and
kfp-kubernetes settings (secrets, node selectors, tolerations) silently: they only matter on a cluster.

With ``docker=DockerSettings(image=...)`` each step runs in a container of that image through the
Docker socket of ``DOCKER_HOST`` (KFP's ``DockerRunner``): the component's command in place of the
image's entrypoint, the image's non-root user, as a cluster runs it (``DockerSettings`` says what is
mounted and passed). The run context that the SubprocessRunner's steps inherit (step 3) is passed to
the containers as environment instead (``CONTAINER_ENV``); it is still no component input.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from hllm_creator_kfp.pipelines.presets import Preset

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    parent_run_id: str
    kfp_run_id: str
    pipeline_root: Path
    run_dir: Path | None
    outputs: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    log: Path | None = None           # the full log (KFP's output, every step's own log)
    experiment_id: str = ""
    steps: list = field(default_factory=list)  # (task, status, seconds) as they ended


def ensure_dataset(data_dir: str | Path | None) -> Path:
    from hllm_creator.paths import work_dir

    if data_dir:
        d = Path(data_dir).resolve()
        if not (d / "items.parquet").exists() or not (d / "interactions.parquet").exists():
            raise ValueError(f"{d} is not a dataset dir (items.parquet + interactions.parquet); "
                             "make one with `hllm-creator data prepare`")
        return d
    d = work_dir() / "data" / "amazon_scientific"
    if not (d / "manifest.json").exists():
        from hllm_creator.data.prepare import prepare_bundled

        log.info("preparing the bundled dataset into %s", d)
        prepare_bundled(d)
    return d


# what the steps read from the runner's environment (run context, MLflow and LLM client settings): the
# SubprocessRunner's steps inherit it, the DockerRunner's containers get these names (on a cluster: the
# secrets and `submit`'s env); HLLM_WORKDIR / HLLM_CACHE stay the image's own
CONTAINER_ENV = re.compile(r"^(MLFLOW_\w+|OPENAI_\w+|HLLM_PARENT_RUN_ID|HLLM_KFP_RUN_ID|HLLM_MLFLOW_MODEL_NAME|OMP_\w+|"
                           r"MKL_NUM_THREADS|TOKENIZERS_PARALLELISM)$")


@dataclass
class DockerSettings:
    """Run every step in a container of ``image`` (KFP's local ``DockerRunner``, the Docker engine of
    ``DOCKER_HOST``), the way the compiled pipeline runs on a cluster:

    - the component's command (``sh -c ... python3 -m kfp.dsl.executor_main``) in place of the image's
      entrypoint (reset: KFP's DockerRunner sets only docker's CMD),
      as ``user`` (the image's non-root user; hllm_creator_kfp.pipelines.presets.PipelineResources.run_as_user), a tmpfs
      at /tmp (the pod's emptyDir), all capabilities dropped, no privilege escalation;
    - the pipeline root mounted at its own path (KFP's DockerRunner does this; it must be writable by
      ``user``), the dataset dir read-only at its own path (on a cluster the importer's artifact);
    - ``state_dir`` (a host dir writable by ``user``), if given, at ``<work_mount>/state`` as
      ``HLLM_STATE_DIR``: the durable work volume of the steps that keep state (the LLM reply cache,
      training checkpoints);
    - the host's network: the LLM server and MLflow on 127.0.0.1 are reached as on the host. MLflow
      must be a server (``MLFLOW_TRACKING_URI=http(s)://...``, artifacts served by it): a sqlite file
      of this machine is not inside the containers;
    - ``env``: more environment for every step; ``run_args``: more ``containers.run`` arguments of the
      docker SDK (KFP's DockerRunner takes them, except image, command and volumes).
    """

    image: str
    user: str = "10001:10001"
    state_dir: str | Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    run_args: dict[str, Any] = field(default_factory=dict)
    tmpfs_size: str = "4g"

    def check(self, pipeline_root: Path, tracking_uri: str) -> None:
        """Clear errors for what would fail inside the containers."""
        if not self.image:
            raise ValueError("DockerSettings.image is empty: name the image every step runs in")
        if not tracking_uri.startswith(("http://", "https://")):
            raise ValueError(f"the docker runner needs an MLflow server (MLFLOW_TRACKING_URI=http://...); "
                             f"{tracking_uri!r} is not reachable from inside the containers")
        uid, _, gid = self.user.partition(":")
        for what, d in (("pipeline root", pipeline_root), ("state dir", self.state_dir)):
            if d is not None and not _writable_by(Path(d), int(uid), int(gid or uid)):
                raise ValueError(f"{what} {d} is not writable by the containers' user {self.user} "
                                 f"(e.g. chown {self.user} {d})")

    def runner(self, data: Path, work_mount: str):
        """KFP's DockerRunner with this run's environment (read now, inside the run's context)."""
        import docker.types
        import kfp.local

        env = {k: v for k, v in os.environ.items() if CONTAINER_ENV.match(k)}
        mounts = [docker.types.Mount(target=str(data), source=str(data), type="bind", read_only=True)]
        if self.state_dir is not None:
            state = f"{work_mount.rstrip('/')}/state"
            mounts.append(docker.types.Mount(target=state, source=str(Path(self.state_dir).resolve()), type="bind"))
            env["HLLM_STATE_DIR"] = state
        env.update(self.env)
        # entrypoint reset: on Kubernetes the component's `command` replaces the image's ENTRYPOINT; docker's
        # `command` (what KFP's DockerRunner sets) replaces only CMD, so the cpu image's `hllm-creator`
        # entrypoint would get `sh -c ...` as its arguments (`docker run --entrypoint ""`)
        args = {"entrypoint": [""], "user": self.user, "network_mode": "host", "environment": env, "mounts": mounts,
                "tmpfs": {"/tmp": f"rw,exec,mode=1777,size={self.tmpfs_size}"}, "cap_drop": ["ALL"],
                "security_opt": ["no-new-privileges"], **self.run_args}
        return kfp.local.DockerRunner(**args)


def _writable_by(d: Path, uid: int, gid: int) -> bool:
    st = d.stat()
    return bool(st.st_uid == uid and st.st_mode & 0o200 or st.st_gid == gid and st.st_mode & 0o020
                or st.st_mode & 0o002) and bool(st.st_mode & 0o111)


DEFAULT_LLM_PORT = 18231


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def llm_endpoint(preset: Preset, base_url: str | None, log_dir: Path) -> Iterator[tuple[str, str]]:
    """Yield ``(base_url, model)`` of an OpenAI-compatible endpoint for teacher and judge."""
    base_url = base_url or os.environ.get("OPENAI_BASE_URL")
    if base_url:
        yield base_url, os.environ.get("OPENAI_MODEL", preset.llm_model)
        return
    from hllm_creator.process import serve_process

    # A stable port keeps the URL, and so the cache keys of the steps that take it, the same from
    # one run to the next (a re-run after a failure must hit the cache). Busy -> any free port.
    port = int(os.environ.get("HLLM_LLM_PORT", DEFAULT_LLM_PORT))
    if not _port_free(port):
        log.warning("port %d is busy: the embedded LLM server takes a free port (steps that take the "
                    "LLM URL will miss the cache)", port)
        port = None
    t0 = time.time()
    with serve_process("llm", ["--model", preset.llm_model, *preset.llm_server_args], port=port,
                       log_dir=log_dir) as h:
        log.info("embedded LLM server %s ready in %.1fs (log %s)", h.url, time.time() - t0, h.log)
        yield f"{h.url}/openai/v1", preset.llm_model


@contextlib.contextmanager
def _env(**kv: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in kv}
    os.environ.update({k: v for k, v in kv.items() if v is not None})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def materialize_metrics_outputs() -> None:
    """Make KFP local cache hits possible for tasks with ``Output[Metrics]``.

    ``metrics.log_metric`` only fills the artifact's metadata; no file is written at its URI, and
    KFP 2.17's local cache treats an output whose local file is missing as a cache MISS, so every
    step with a Metrics output (train, cluster, match, generate, ...) would re-run on every re-run.
    Before an entry is stored we write the metadata as JSON at that URI (what a KFP backend stores
    for a Metrics artifact too). Idempotent; only affects the local runner.
    """
    from kfp import dsl
    from kfp.local import cache as kfp_cache

    if getattr(kfp_cache.LocalCache.put, "_hllm_materialize", False):
        return
    original = kfp_cache.LocalCache.put

    def put(self, key, outputs):
        for value in outputs.values():
            for art in value if isinstance(value, list) else [value]:
                if (isinstance(art, dsl.Artifact) and art.uri and "://" not in art.uri
                        and not os.path.exists(art.uri)):
                    from hllm_creator.io import write_json

                    write_json(dict(art.metadata or {}), art.uri)
        return original(self, key, outputs)

    put._hllm_materialize = True
    kfp_cache.LocalCache.put = put


def code_fingerprint() -> str:
    """A hash of the code every step runs (the ``hllm_creator`` package, the components, the pipeline
    definitions): the local cache lives under ``.kfp_cache/<this>``, so a re-run after a failure reuses
    the steps that succeeded, and a run after a code change (a ``git pull``) computes them anew. (KFP's
    local cache keys a task by its component spec and inputs, not by the code it imports; on a cluster
    the image digest plays this part.)"""
    import hashlib

    import hllm_creator

    roots = [Path(hllm_creator.__file__).parent, Path(__file__).resolve().parents[1] / "components",
             Path(__file__).resolve().parent]
    h = hashlib.sha256()
    for root in roots:
        for f in sorted(root.rglob("*.py")):
            h.update(str(f.relative_to(root.parent)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def _latest_run_dir(pipeline_root: Path, name: str, since: float) -> Path | None:
    cands = [p for p in pipeline_root.glob(f"{name}-*") if p.is_dir() and p.stat().st_mtime >= since - 1]
    return max(cands, key=lambda p: p.stat().st_mtime) if cands else None


def run_local(preset: Preset, *, pipeline_root: str | Path | None = None, data_dir: str | Path | None = None,
              llm_base_url: str | None = None, run_name: str | None = None, enable_caching: bool = True,
              overrides_note: str | None = None, console: TextIO | None = None,
              verbose: bool = False, docker: DockerSettings | None = None) -> RunResult:
    """Run the pipeline here. KFP's output (the runner's log and every task's streamed log) goes to
    ``<run dir>/run.log``; ``console`` (e.g. ``sys.stdout``; default none) gets one line per step as
    it starts and ends; ``verbose`` copies KFP's output there as well. ``docker``: every step in a
    container (KFP's DockerRunner, ``DockerSettings``) instead of a subprocess of this Python."""
    import kfp.local

    from hllm_creator import tracking
    from hllm_creator.paths import work_dir
    from hllm_creator_kfp.pipelines.console import StepConsole
    from hllm_creator_kfp.pipelines.hllm_pipeline import PIPELINE_NAME, build_pipeline

    t0 = time.time()
    pipeline_root = Path(pipeline_root or work_dir() / "pipeline_root").resolve()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    if docker is not None:  # before anything is prepared or started
        docker.check(pipeline_root, tracking.resolve_tracking_uri())
    data = ensure_dataset(data_dir)
    from hllm_creator.data.schema import dataset_fingerprint

    ds_name, ds_hash = dataset_fingerprint(data)
    kfp_run_id = f"local-{time.strftime('%Y%m%d-%H%M%S')}"
    os.environ["MLFLOW_TRACKING_URI"] = tracking.resolve_tracking_uri()  # the same store for every step
    tags = {"kfp_run_id": kfp_run_id, "dataset": ds_name, "dataset_hash": ds_hash,
            "config_hash": preset.config_hash(), "preset": preset.name,
            "runner": "kfp.local.DockerRunner" if docker else "kfp.local.SubprocessRunner",
            "pipeline_root": str(pipeline_root)}
    if docker is not None:
        tags["image"] = docker.image
    if overrides_note:
        tags["overrides"] = overrides_note
    with tracking.parent_run(run_name or f"{PIPELINE_NAME}-{preset.name}", tags=tags) as parent:
        tracking.log_config(preset)
        with llm_endpoint(preset, llm_base_url, pipeline_root / "logs") as (url, model):
            with _env(OPENAI_BASE_URL=url, OPENAI_MODEL=model, OPENAI_API_KEY=os.environ.get("OPENAI_API_KEY", "none"),
                      HLLM_PARENT_RUN_ID=parent.info.run_id, HLLM_KFP_RUN_ID=kfp_run_id):
                runner = (docker.runner(data, preset.resources.work_mount) if docker is not None
                          else kfp.local.SubprocessRunner(use_venv=False))
                kfp.local.init(runner=runner, pipeline_root=str(pipeline_root), enable_caching=enable_caching,
                               cache_root=str(pipeline_root / ".kfp_cache" / code_fingerprint()))
                materialize_metrics_outputs()
                pipeline = build_pipeline(preset, local=True, image=docker.image if docker is not None else None)
                started = time.time()
                log_path = pipeline_root / "logs" / f"{kfp_run_id}.log"
                log_path.parent.mkdir(parents=True, exist_ok=True)

                def to_console(line: str) -> None:  # a captured stream: sys.stdout is redirected meanwhile
                    if console is not None:
                        console.write(line + "\n")
                        console.flush()

                with open(log_path, "w") as log_file:
                    steps = StepConsole(log_file, to_console, verbose=verbose,
                                        run_dir=lambda: _latest_run_dir(pipeline_root, PIPELINE_NAME, started))
                    try:
                        with contextlib.redirect_stdout(steps), contextlib.redirect_stderr(steps), \
                                _root_logging_to(steps):
                            task = pipeline(dataset_uri=str(data), llm_base_url=url, llm_model=model)
                    except RuntimeError as e:  # a step failed: say where its log is
                        run_dir = _latest_run_dir(pipeline_root, PIPELINE_NAME, started)
                        raise RuntimeError(f"{e}\nfull log: {_keep_log(log_path, run_dir)}") from None
        run_dir = _latest_run_dir(pipeline_root, PIPELINE_NAME, started)
        log_path = _keep_log(log_path, run_dir)
        outputs = _task_outputs(task)
        summary = summarize(outputs)
        if summary.get("metrics"):
            tracking.log_metrics(summary["metrics"])
        tracking.log_json({"summary": summary, "run_dir": str(run_dir)}, "pipeline_outputs")
        tracking.log_metrics({"pipeline_seconds": time.time() - t0})
    return RunResult(parent_run_id=parent.info.run_id, kfp_run_id=kfp_run_id, pipeline_root=pipeline_root,
                     run_dir=run_dir, outputs=outputs, summary=summary, seconds=time.time() - t0, log=log_path,
                     experiment_id=parent.info.experiment_id, steps=steps.steps)


@contextlib.contextmanager
def _root_logging_to(stream) -> Iterator[None]:
    """Root logger -> ``stream`` for the run. KFP's local runner swaps the root handlers per task and
    restores the ones it found: with parallel tasks (the embed shards) a restore can land while
    another task still logs, so the handlers it finds must write to the run's log too."""
    root = logging.getLogger()
    old_handlers, old_level = root.handlers[:], root.level
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    try:
        yield
    finally:
        root.handlers[:] = old_handlers
        root.setLevel(old_level)


def _keep_log(log_path: Path, run_dir: Path | None) -> Path:
    """Move the run's log into its run dir (``run.log``); returns where it is."""
    if run_dir is None or not run_dir.is_dir():
        return log_path
    dst = run_dir / "run.log"
    os.replace(log_path, dst)
    return dst


def _task_outputs(task) -> dict[str, Any]:
    """Pipeline outputs -> {name: artifact object or value} (artifacts have .path and .metadata)."""
    outs = getattr(task, "outputs", None) if task is not None else None
    if outs is None:
        return {}
    return dict(outs) if isinstance(outs, dict) else {"output": outs}


def summarize(outputs: dict[str, Any]) -> dict[str, Any]:
    """Find creatives.parquet and the GSB summary among the outputs; a few titles side by side.

    GSB numbers come from a Metrics artifact's metadata or a ``*gsb*.json``/``summary.json`` file
    of the gsb-eval outputs. KFP local returns integer metadata as float.
    """
    import pandas as pd

    summ: dict[str, Any] = {"metrics": {}, "paths": {}}
    for name, v in outputs.items():
        path = Path(v.path) if hasattr(v, "path") else None
        if path is not None:
            summ["paths"][name] = str(path)
        meta = getattr(v, "metadata", None) or {}
        if name.startswith("gsb_eval__"):
            for key, val in meta.items():
                if isinstance(val, (int, float)) and not isinstance(val, bool):
                    summ.setdefault("gsb", {})[key] = val
        if path is None or not path.exists():
            continue
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for f in files:
            if f.name == "creatives.parquet" or (f == path and name.startswith("generate__") and f.suffix == ".parquet"
                                                 and "creatives" in name):
                summ["creatives"] = str(f)
                df = pd.read_parquet(f)
                cols = [c for c in ("item_id", "cluster_id", "original_title", "title", "source", "llm_output",
                                    "grounded") if c in df]
                summ["samples"] = df[cols].head(5).to_dict("records")
                summ["n_creatives"] = len(df)
            if name.startswith("personalization_eval__") and f.name == "personalization.json":
                summ["personalization"] = _personalization(f)
            if name.startswith("gsb_eval__") and f.suffix == ".json":
                try:
                    data = json.loads(f.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if isinstance(data, dict):
                    for key, val in data.items():
                        if isinstance(val, (int, float, str)) and not isinstance(val, bool):
                            summ.setdefault("gsb", {}).setdefault(key, val)
    for key, val in (summ.get("gsb") or {}).items():
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            summ["metrics"][key if key.startswith("gsb") else f"gsb_{key}"] = float(val)
    if summ.get("gsb", {}).get("n"):
        fails = summ["gsb"].get("judge_failures")
        if isinstance(fails, (int, float)):
            summ["metrics"]["gsb_judge_failure_rate"] = float(fails) / float(summ["gsb"]["n"])
    for key, val in (summ.get("personalization") or {}).get("metrics", {}).items():
        summ["metrics"][key] = float(val)  # pers_* on the parent run: `promote` reads pers_fit_other_ci_low
    return summ


def _personalization(report: Path) -> dict[str, Any]:
    """The personalization report -> its metrics and the closing summary lines (per ad: the clusters'
    top interests and SERVED titles, the original once; then the headline figures with CIs)."""
    import pandas as pd

    from hllm_creator.evaluate.report import PER_AD, summary_lines

    try:
        res = json.loads(report.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        return {"error": f"cannot read {report}: {e}"}
    out: dict[str, Any] = {"report": str(report), "metrics": res.get("metrics") or {}}
    per_ad = report.parent / PER_AD
    if per_ad.exists() and res.get("headline"):
        out["lines"] = summary_lines(res, pd.read_parquet(per_ad))
    return out
