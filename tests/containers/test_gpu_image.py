"""The GPU image without a GPU, CUDA or a build (``make test-containers``; skipped in ``make test``: it asks
PyPI for metadata, about a minute).

Dockerfiles/Dockerfile.gpu is parsed (tests/unit/test_dockerfiles.py's parser) and its pip layers are
resolved by pip's own resolver, as a dry run for the image's interpreter (CPython 3.12, manylinux x86_64,
wheels only), with the constraints the Dockerfile gives it:
- every explicit pin of its pip layers is the one of constraints-gpu.txt (the CPU lock's versions; the
  GPU-only packages' own), and every pip layer but the CUDA torch's is constrained by that file;
- the project's layer (``pip install -c constraints.txt -c constraints-gpu.txt .``),
  together with what the earlier layers installed (deepspeed's requirements, the build tools), resolves
  to versions that are all pinned (nothing floats) and equal to the CPU lock's.
No CUDA is downloaded: the CUDA torch of the image's first layer (from the cu128 index, not reachable
here) is stood in for by a METADATA-ONLY wheel ``torch 2.13.0+cu128`` with the requirements of the CPU
build of the same version (the CUDA build adds only its nvidia-* runtime libraries). flash-attn (an sdist
compiled against CUDA) and faiss-gpu-cu12 (nvidia-* requirements) are checked by their pins only.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.skipif(os.environ.get("HLLM_CONTAINER_TEST") != "1",
                                reason="container test: `make test-containers` (tests/containers/run.sh)")

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfiles" / "Dockerfile.gpu"
GPU_PINS = REPO / "Dockerfiles" / "constraints-gpu.txt"
PY = "3.12"  # the CUDA runtime image's python3.12 (Ubuntu 24.04)
# the runtime image's glibc is 2.39 (Ubuntu 24.04): every manylinux tag up to it (pip 23 does not expand
# a --platform to the older ones; psutil's wheel, e.g., is manylinux_2_17/manylinux2014 only)
PLATFORMS = [a for v in range(39, 4, -1) for a in ("--platform", f"manylinux_2_{v}_x86_64")] + [
    a for p in ("manylinux2014", "manylinux2010", "manylinux1") for a in ("--platform", f"{p}_x86_64")]
# checked by their pins only (CUDA builds; see the module doc)
CUDA_ONLY = {"torch", "flash-attn", "faiss-gpu-cu12"}


def _parser():
    spec = importlib.util.spec_from_file_location("dockerfile_rules", REPO / "tests" / "unit" / "test_dockerfiles.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pins(text: str) -> dict[str, str]:
    return {canonicalize_name(n): v for n, v in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


def _pip_layers() -> list[str]:
    """Each `pip install ...` command of the Dockerfile's RUN instructions."""
    runs = [a for op, a in _parser().instructions(DOCKERFILE) if op == "RUN"]
    return [m.strip() for r in runs for m in re.findall(r"pip install (.*?)(?:&&|$)", r)]


def _standin_torch(where: Path, version: str) -> Path:
    """A metadata-only wheel: torch VERSION with the CPU build's requirements, no files."""
    reqs = [r for r in metadata.requires("torch") or [] if "extra ==" not in r]
    name = f"torch-{version}"
    di = f"{name}.dist-info"
    files = {f"{di}/METADATA": "Metadata-Version: 2.1\nName: torch\nVersion: " + version + "\n"
                               "Summary: STAND-IN for the CUDA torch of Dockerfile.gpu's first layer (no files)\n"
                               + "".join(f"Requires-Dist: {r}\n" for r in reqs),
             f"{di}/WHEEL": "Wheel-Version: 1.0\nGenerator: hllm-creator tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{di}/RECORD"] = "\n".join(record + [f"{di}/RECORD,,"]) + "\n"
    whl = where / f"{name}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return whl


def test_gpu_image_pip_layers_resolve_to_the_pins_without_cuda(tmp_path):
    t0 = time.monotonic()
    gpu = _pins(GPU_PINS.read_text())
    lock = {k: v.split("+")[0] for k, v in _pins((REPO / "Dockerfiles" / "requirements-cpu.lock").read_text()).items()}
    torch_version = _pins((REPO / "constraints.txt").read_text())["torch"]
    standin = tmp_path / "standin"
    standin.mkdir()
    _standin_torch(standin, f"{torch_version}+cu128")
    # the project as a wheel, built from a copy of what the Dockerfile copies (the checkout stays clean)
    src = tmp_path / "src"
    src.mkdir()
    for f in ("pyproject.toml", "constraints.txt", "README.md"):
        shutil.copy(REPO / f, src / f)
    for d in ("model_code", "components", "pipelines"):
        shutil.copytree(REPO / d, src / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(wheels), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    project = next(wheels.glob("hllm_creator-*.whl"))
    # the Dockerfile's constraints of the project layer: constraints.txt, constraints-gpu.txt
    c1 = REPO / "constraints.txt"
    assert "-c constraints.txt -c /tmp/locks/constraints-gpu.txt ." in " ".join(_pip_layers())
    # what the earlier layers installed and the project layer must live with: deepspeed's requirements
    # (its metadata from this venv, the same 0.19.8) and the explicitly pinned build tools
    layers = " ".join(_pip_layers())
    ds_version = re.search(r"deepspeed==(\S+)", layers).group(1)
    earlier = [f"{n}=={v}" for n, v in re.findall(r"(?:^|\s)([A-Za-z0-9_.-]+)==(\S+)", layers)
               if canonicalize_name(n) not in CUDA_ONLY | {"deepspeed"}]
    if metadata.version("deepspeed") == ds_version:
        earlier += [r for r in metadata.requires("deepspeed") or [] if "extra ==" not in r]
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--report", str(report),
           "--target", str(tmp_path / "target"), "--python-version", PY, "--implementation", "cp",
           *PLATFORMS, "--only-binary=:all:", "--find-links", str(standin),
           "-c", str(c1), "-c", str(GPU_PINS), str(project), *earlier]
    # a package published as an sdist only (kfp-server-api, ...) has no wheel for pip to pick here: built
    # into a wheel first (what pip does in the image), from the pin pip names, then resolved again
    built = []
    for _ in range(8):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        out = r.stdout + r.stderr
        need = re.findall(r"requested \(constraint\) ([A-Za-z0-9_.-]+==\S+)", out) or \
            re.findall(r"satisfies the requirement ([A-Za-z0-9_.-]+==[^\s;]+)[^\n]*\(from versions: none\)", out)
        need = [n for n in need if n not in built]
        if r.returncode == 0 or not need:
            break
        w = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(standin), *need],
                           capture_output=True, text=True, timeout=600)
        assert w.returncode == 0, f"cannot build a wheel of {need}: {w.stderr[-2000:]}"
        built += need
    said = "\n".join(ln for ln in (r.stdout + r.stderr).splitlines()
                     if not ln.startswith(("WARNING: Location", "Collecting", "  Using cached", "  Downloading",
                                           "Requirement already", "  File was already")))
    assert r.returncode == 0, "pip could not resolve Dockerfile.gpu's project layer:\n" + said[-5000:]
    installed = {canonicalize_name(i["metadata"]["name"]): (i["metadata"]["version"], i["download_info"]["url"])
                 for i in json.loads(report.read_text())["install"]}
    assert installed["torch"][0] == f"{torch_version}+cu128" and installed["torch"][1].startswith(standin.as_uri())
    cuda = sorted(n for n in installed if n.startswith(("nvidia-", "cuda-", "triton")))
    assert not cuda, f"CUDA packages in the resolution (the stand-in torch should keep them out): {cuda}"
    pinned = gpu | _pins(c1.read_text())  # faiss-cpu: constraints.txt's (uninstalled for faiss-gpu-cu12 after)
    floating = sorted(f"{n}=={v}" for n, (v, _) in installed.items()
                      if n not in pinned and n not in {"torch", "hllm-creator"})
    assert not floating, f"resolved without a pin (a floating version in the GPU image): {floating}"
    differs = sorted(f"{n}: {v} (lock {lock[n]})" for n, (v, _) in installed.items() if n in lock and n != "torch"
                     and lock[n] != v.split("+")[0])
    assert not differs, differs
    print(f"Dockerfile.gpu's project layer: {len(installed)} packages resolved for CPython {PY} in "
          f"{time.monotonic() - t0:.0f}s, all at constraints-gpu.txt's pins (the CPU lock's versions); "
          f"sdist-only, built to wheels first: {built or 'none'}")
