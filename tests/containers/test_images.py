"""The built images, run the way the manifests run them (``make test-containers``; tests/containers/run.sh
builds the images on a stand-in base and sets HLLM_CONTAINER_TEST=1; skipped in ``make test``).

The serving image as manifests/base/servingruntime.yaml runs it: uid 10001, read-only root filesystem,
a tmpfs at /tmp (the emptyDir), no privilege escalation, all capabilities dropped, a serving bundle
mounted read-only at /mnt/models (where KServe's storage initializer puts the storageUri), ``--host
0.0.0.0``. Checked over real HTTP: readiness, v1 and v2 predict for predictor and creative, /metrics,
``serve llm`` (the SmolLM2 baked into the image, one chat completion), a clean stop on SIGTERM. The cpu
image: its entrypoint and user, and the baked model readable by that user.

The bundle is the tiny real stack of tests/helpers.py (an untrained tiny-llama model, real inference
outputs), written by the library's atomic writers as root on the host: the files keep the modes they
were written with, so a 0700/0600 output (issue 25) fails here as it would on a shared volume.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid

import httpx
import pytest

from hllm_creator.process import wait_ready as poll_ready

pytestmark = pytest.mark.skipif(os.environ.get("HLLM_CONTAINER_TEST") != "1",
                                reason="container test: `make test-containers` (tests/containers/run.sh)")

DOCKER = os.environ.get("HLLM_CT_DOCKER", "docker")
CPU_IMAGE = os.environ.get("HLLM_CT_CPU_IMAGE", "hllm-creator-cpu:ct")
SERVING_IMAGE = os.environ.get("HLLM_CT_SERVING_IMAGE", "hllm-creator-serving:ct")
UID = "10001"
# manifests/base/servingruntime.yaml's securityContext and volumes, as `docker run` flags
AS_IN_THE_MANIFESTS = ["--user", f"{UID}:{UID}", "--read-only", "--tmpfs", "/tmp:rw,exec,mode=1777,size=4g",
                       "--security-opt", "no-new-privileges", "--cap-drop", "ALL", "--network", "host",
                       "-e", "HLLM_WORKDIR=/tmp/hllm", "-e", "OMP_NUM_THREADS=2"]


def docker(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and res.returncode:
        raise AssertionError(f"docker {' '.join(args)} exited {res.returncode}: {res.stderr[-2000:]}")
    return res


class Container:
    def __init__(self, name: str, port: int):
        self.name, self.port, self.url = name, port, f"http://127.0.0.1:{port}"

    def running(self) -> bool:
        return docker("inspect", "-f", "{{.State.Running}}", self.name, check=False).stdout.strip() == "true"

    def logs(self) -> str:
        r = docker("logs", "--tail", "60", self.name, check=False)
        return (r.stdout + r.stderr)[-6000:]

    def wait_ready(self, timeout: float = 420) -> None:
        def exited():
            if self.running():
                return None
            code = docker("inspect", "-f", "{{.State.ExitCode}}", self.name, check=False).stdout.strip()
            return f"{self.name} exited ({code}) before ready:\n{self.logs()}"

        poll_ready(self.url, exited, timeout=timeout, interval=2, detail=lambda: f" ({self.name}):\n{self.logs()}")

    def stop_on_sigterm(self, grace: float = 60) -> int:
        docker("kill", "--signal", "TERM", self.name)
        code = docker("wait", self.name, timeout=grace).stdout.strip()
        return int(code)

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)


def run_serving(kind: str, args: list[str], *, bundle=None) -> Container:
    """`hllm-creator serve KIND ARGS --host 0.0.0.0 --port P` in the serving image, as in the manifests."""
    from hllm_creator.process import free_port

    port = free_port()
    name = f"hllm-ct-{kind}-{uuid.uuid4().hex[:8]}"
    mount = ["-v", f"{bundle}:/mnt/models:ro"] if bundle else []
    docker("run", "-d", "--name", name, *AS_IN_THE_MANIFESTS, *mount, "--entrypoint", "hllm-creator",
           SERVING_IMAGE, "serve", kind, *args, "--host", "0.0.0.0", "--port", str(port))
    return Container(name, port)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The tiny real serving stack laid out as a publish bundle: model/ and artifacts/ (+ items.parquet)."""
    from helpers import tiny_serving_stack

    root = tmp_path_factory.mktemp("stack")
    s = tiny_serving_stack(root / "out", generate=False)
    bundle = root / "bundle"  # made under the process umask (pytest's own tmp dirs are 0700)
    bundle.mkdir()
    shutil.copytree(s["model_dir"], bundle / "model")
    shutil.copytree(s["artifacts"], bundle / "artifacts")
    shutil.copy2(s["items"], bundle / "artifacts" / "items.parquet")
    s["bundle"] = str(bundle)
    return s


MANIFEST_ARGS = ["--model-dir", "/mnt/models/model", "--artifacts", "/mnt/models/artifacts"]


def _ready_server(kind: str, stack):
    c = run_serving(kind, MANIFEST_ARGS, bundle=stack["bundle"])
    try:
        c.wait_ready()
        yield c
    finally:
        c.remove()


@pytest.fixture(scope="module")
def predictor(stack):
    yield from _ready_server("predictor", stack)


@pytest.fixture(scope="module")
def creative(stack):
    yield from _ready_server("creative", stack)


def v2_body(instances: list[dict]) -> dict:
    return {"inputs": [{"name": "instances", "shape": [len(instances)], "datatype": "BYTES",
                        "data": [json.dumps(i) for i in instances]}]}


def test_runs_as_its_user_with_a_read_only_root(predictor):
    top = docker("top", predictor.name, "-o", "pid,uid,args").stdout
    # docker top needs the pid column with -o (dockerd 20.10: "Couldn't find PID field in ps output")
    rows = [ln.split(None, 2) for ln in top.splitlines()[1:] if ln.strip()]
    assert rows and all(len(r) >= 2 and r[1] == UID for r in rows), top
    w = docker("exec", predictor.name, "sh", "-c", "touch /opt/x 2>&1; touch /tmp/x && echo tmp-ok", check=False)
    assert "Read-only file system" in w.stdout and "tmp-ok" in w.stdout, w.stdout + w.stderr


def test_predictor_v1_v2_and_metrics(predictor, stack):
    ad, cid, title = stack["personalized"]
    user = next(u for u, c in stack["assignments"].items() if c == cid)
    inst = {"user_history": stack["users"][user], "candidate_ad_ids": [ad]}
    assert httpx.get(f"{predictor.url}/v1/models/predictor", timeout=10).json() == {"name": "predictor", "ready": True}
    r = httpx.post(f"{predictor.url}/v1/models/predictor:predict", json={"instances": [inst]}, timeout=120)
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    assert p["cluster_id"] == cid and p["ads"][0]["title"] == title and p["ads"][0]["personalized"] is True
    r = httpx.post(f"{predictor.url}/v2/models/predictor/infer", json=v2_body([inst]), timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert json.loads(out["data"][0]) == p
    m = httpx.get(f"{predictor.url}/metrics", timeout=10)
    assert m.status_code == 200 and "hllm_serving_requests" in m.text


def test_creative_v1_v2(creative, stack):
    from hllm_creator.creative.ad import Ad
    from hllm_creator.creative.gate import check_grounding

    ad = {"title": "Gorilla Tape, Black Duct Tape, 1.88 in x 12 yd, 2 Pack",
          "description": "Double thick adhesive, tough all-weather shell.", "selling_points": ["all-weather"]}
    user = next(iter(stack["users"]))
    inst = {"user_history": stack["users"][user], "ad": ad}
    r = httpx.post(f"{creative.url}/v1/models/creative:predict", json={"instances": [inst]}, timeout=300)
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    assert p["original_title"] == ad["title"] and p["cluster_id"] == stack["assignments"][user]
    assert (p["grounded"] and check_grounding(p["title"], Ad(**ad)).ok) or (p["title"] == ad["title"] and p["reasons"])
    r = httpx.post(f"{creative.url}/v2/models/creative/infer", json=v2_body([inst, {"user_history": [], "ad": ad}]),
                   timeout=300)
    assert r.status_code == 200, r.text
    warm, cold = (json.loads(x) for x in r.json()["outputs"][0]["data"])
    assert warm["cluster_id"] == p["cluster_id"] and cold["cluster_id"] is None and cold["title"] == ad["title"]
    assert "hllm_serving_requests" in httpx.get(f"{creative.url}/metrics", timeout=10).text


def test_sigterm_stops_the_server_cleanly(stack):
    """Last of the serving tests: its own predictor, stopped the way the kubelet stops a pod."""
    c = run_serving("predictor", MANIFEST_ARGS, bundle=stack["bundle"])
    try:
        c.wait_ready()
        t = time.monotonic()
        code = c.stop_on_sigterm()
        assert code == 0, f"exit {code} on SIGTERM:\n{c.logs()}"
        assert time.monotonic() - t < 30
    finally:
        c.remove()


def test_serve_llm_chat_completion():
    """The SmolLM2 baked into the image (root-owned, read by uid 10001), one chat completion."""
    c = run_serving("llm", ["--threads", "2", "--no-json-warmup"])
    try:
        c.wait_ready()
        r = httpx.post(f"{c.url}/openai/v1/chat/completions", timeout=300,
                       json={"model": "smollm2-135m-instruct", "max_tokens": 8, "temperature": 0,
                             "messages": [{"role": "user", "content": "Say hello."}]})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"].strip()
        assert c.stop_on_sigterm() == 0, c.logs()
    finally:
        c.remove()


def test_cpu_image_entrypoint_user_and_baked_model():
    r = docker("run", "--rm", *AS_IN_THE_MANIFESTS, CPU_IMAGE, "--help")
    assert "serve" in r.stdout and "models" in r.stdout, r.stdout
    r = docker("run", "--rm", *AS_IN_THE_MANIFESTS, "--entrypoint", "sh", CPU_IMAGE, "-c",
               "id -u; find /opt/hllm /opt/venv \\( ! -perm -o+r -o -type d ! -perm -o+x \\) -print | head -5; python -c 'import hllm_creator, torch, faiss, kfp'")
    lines = r.stdout.split()
    assert lines[0] == UID and lines[1:] == [], f"not uid {UID}, or files unreadable by it: {r.stdout}"
    # as a KFP task runs it (the pipeline's pods: that user, no read-only root): the item-embedding cache
    # under $HLLM_CACHE (embed and match write it) is writable by the user, the baked models are not
    as_a_task = [f for f in AS_IN_THE_MANIFESTS if f != "--read-only"]
    r = docker("run", "--rm", *as_a_task, "--entrypoint", "python", CPU_IMAGE, "-c",
               "import numpy as np; from hllm_creator.infer.item_cache import ItemCache; "
               "c = ItemCache('m' * 8); c.get(['a'], lambda t: np.ones((len(t), 2))); print(c.path)",
               check=False)
    assert r.returncode == 0 and r.stdout.strip().startswith("/opt/hllm/cache/item_cache/"), r.stdout + r.stderr
    r = docker("run", "--rm", *as_a_task, "--entrypoint", "sh", CPU_IMAGE, "-c",
               "touch /opt/hllm/cache/models/x 2>&1 || true", check=False)
    assert "Permission denied" in r.stdout + r.stderr, r.stdout + r.stderr
